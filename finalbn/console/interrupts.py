"""Ctrl-C that cannot be lost.

Python raises a signal handler's KeyboardInterrupt in whatever frame the main
thread is running; inside a finalizer (SQLAlchemy's weakref callbacks, any
``__del__``) it can only print "Exception ignored in" and go on, and the sweep
would train to the end and exit 0. So the handler also remembers the
interrupt, and the driver's own loops (its trial events, Tune's steps, its
polls) raise it again where it can unwind: ``check`` and ``sleep``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The signals that stop a command as Ctrl-C does: SIGTERM is what schedulers and finalbn cancel send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending = False
# Inside ``deferred``: a stop is remembered and raised when the block ends, not in its middle.
_deferring = False


def handle(signum: int, frame: object) -> None:
    """The handler for SIGINT and SIGTERM (a scheduler's stop) while a command runs."""
    global _pending
    _pending = True
    if not _deferring:
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """A block a stop must not cut in two (an MLflow run created but not yet remembered, so never closed):
    a stop that arrives inside it is raised as the block ends."""
    global _deferring
    before = _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = before
    check()


def install() -> dict[int, object]:
    """Make ``handle`` the handler of the stop signals; returns the handlers it replaced."""
    return {number: signal.signal(number, handle) for number in STOP_SIGNALS}


def restore(handlers: dict[int, object]) -> None:
    """Put back the handlers ``install`` (or ``signal.getsignal``) returned."""
    for number, handler in handlers.items():
        signal.signal(number, handler)


def reset() -> None:
    global _pending
    _pending = False


def pending() -> bool:
    return _pending


def check() -> None:
    """Raise the interrupt again if a finalizer swallowed it."""
    if _pending:
        raise KeyboardInterrupt


def sleep(seconds: float) -> None:
    check()
    time.sleep(seconds)
    check()

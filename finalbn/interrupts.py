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

# The signals that stop a command as Ctrl-C does: SIGTERM is what schedulers and finalbn cancel send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending = False


def handle(signum: int, frame: object) -> None:
    """The handler for SIGINT and SIGTERM (a scheduler's stop) while a command runs."""
    global _pending
    _pending = True
    raise KeyboardInterrupt


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

"""What every finalbn command shares: one-line usage errors and the guarded run.

Its own module, with no finalbn imports beyond the errors and interrupts, so that each command
line (trial, sweep, analysis) imports it without importing the others.
"""

from __future__ import annotations

import argparse
import signal
import sys
import typing
from collections.abc import Callable

from finalbn import interrupts
from finalbn.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix (exit 2), like every other user error,
    and no prefix matching: ``--epoch 1`` is an error, not ``--epochs 1``."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(UserError.exit_code, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def guarded(action: Callable[[], None], debug: bool) -> int:
    """Run a command: user errors become one line and exit 2; Ctrl-C (or
    SIGTERM, as a scheduler sends) ends quietly with 130 after cleanup ran,
    also when a finalizer swallowed it (see finalbn.interrupts)."""
    previous = {number: signal.signal(number, interrupts.handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        action()
    except UserError as error:
        if debug:
            raise
        print(f"finalbn: error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        swallowed = interrupts.pending()
        interrupts.reset()
    return 130 if swallowed else 0

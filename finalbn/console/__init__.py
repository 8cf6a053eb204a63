"""What every finalbn command shares in a terminal: one-line usage errors, the guarded run, and
(``interrupts``) Ctrl-C that cannot be lost.

Its own package, with no finalbn imports beyond the errors, so that each command line (trial, sweep,
analysis) and each backend imports it without importing the others.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable

if typing.TYPE_CHECKING:
    import polars as pl

from finalbn.console import interrupts
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
    also when a finalizer swallowed it (see finalbn.console.interrupts)."""
    previous = interrupts.install()
    try:
        action()
        # Here, not at exit: a reader that stopped early (| head) is then caught below.
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    except UserError as error:
        if debug:
            raise
        print(f"finalbn: error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        interrupts.restore(previous)
        swallowed = interrupts.pending()
        interrupts.reset()
    return 130 if swallowed else 0


def _reader_gone() -> int:
    """The reader of stdout closed it (``finalbn status NAME | head``): what it read is what it
    wanted, so exit quietly, as a killed-by-SIGPIPE command would (128 + 13), and point stdout at
    /dev/null so the interpreter's last flush has nowhere to fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def table_format() -> pl.Config:
    """How every command prints a Polars table: all rows and columns, no shape or dtypes, and
    never narrowed to the terminal: a pseudo-terminal that reports 0 columns (script, CI
    runners, some IDEs) squeezed each column to three characters, so a terminal showed
    other tables than a log."""
    import polars as pl

    return pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_width_chars=10_000,
    )

"""The report's steps, shown as they run: no phase of a report is silent.

The sweep's convention (``finalbn.sweep.progress``): a rich progress bar on a
terminal, which goes away when the report is written, and one plain line per
step otherwise, so CI logs stay readable. On stderr: stdout is the report's
answer (its headline and where it is), for a reader or a pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Step = Callable[[str], None]


@contextmanager
def report_steps(title: str, total: int, show: bool = True) -> Iterator[Step]:
    """Yields ``step(text)``: call it as each of ``total`` steps begins; ``show`` False says nothing."""
    if not show:
        yield lambda text: None
    elif sys.stderr.isatty():
        with _bar(title, total) as step:
            yield step
    else:
        count = 0

        def line(text: str) -> None:
            nonlocal count
            count += 1
            print(f"{title} [{count}/{total}] {text}", file=sys.stderr, flush=True)

        yield line


@contextmanager
def _bar(title: str, total: int) -> Iterator[Step]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars = Progress(*columns, console=Console(stderr=True))
    task = bars.add_task(title, total=total)
    started = 0

    def step(text: str) -> None:
        nonlocal started
        # The bar counts the steps done: the one starting now is named, not yet counted.
        bars.update(task, completed=started, description=f"{title}: {text}")
        started += 1

    with bars:
        try:
            yield step
        finally:
            bars.update(task, completed=total, description=f"{title}: done")

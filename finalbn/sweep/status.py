"""``finalbn status`` and ``finalbn cancel``: a sweep folder read back, whichever backend ran it.

The sweep's sweep.json names its planned trials and the backend of each
invocation; the trial folders say what finished or failed; the backend says
what is still running (a Slurm task, or a driver process that is alive).
"""

from __future__ import annotations

import os
import signal
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from finalbn.errors import UserError
from finalbn.records import folders
from finalbn.sweep.record import Invocation, SweepRecord

if TYPE_CHECKING:
    from finalbn.launch.base import Backend

TrialState = Literal["done", "running", "failed", "pending"]
STATES: tuple[TrialState, ...] = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class SweepStatus:
    record: SweepRecord
    # Trial id -> its state.
    states: dict[str, TrialState]
    # The invocation whose driver process still runs on this host, if any.
    driver: Invocation | None

    def counts(self) -> Counter[str]:
        return Counter(self.states.values())

    def by_axis(self) -> dict[str, dict[str, Counter[str]]]:
        """Axis name -> label -> state counts, for the axes with more than one value."""
        table: dict[str, dict[str, Counter[str]]] = {}
        for axis in self.record.axes:
            if len(axis.labels) < 2:
                continue
            table[axis.name] = {label: Counter() for label in axis.labels}
            for trial_id, point in self.record.trials.items():
                table[axis.name][point[axis.name]][self.states[trial_id]] += 1
        return table


def find_sweep(target: str, results_root: Path) -> Path:
    """A sweep folder given as a path or by name under ``results_root``."""
    for folder in (Path(target), results_root / target):
        if (folder / folders.SWEEP_RECORD).exists():
            return folder
    raise UserError(
        f"{target}: no {folders.SWEEP_RECORD} there nor in {results_root / target}: give a sweep folder "
        "(results/NAME) or its name, with --results-root if it is not under results/"
    )


def sweep_status(folder: Path) -> SweepStatus:
    record = SweepRecord.read(folder)
    if record is None:
        raise UserError(f"{folder} has no {folders.SWEEP_RECORD}: give a folder a sweep script wrote")
    driver = _live_driver(record)
    live = _in_flight(folder, record)
    states = {tid: _state(folder / folders.TRIALS / tid, tid in live, driver is not None) for tid in record.trials}
    return SweepStatus(record, states, driver)


def render(status: SweepStatus) -> str:
    counts = status.counts()
    last = status.record.invocations[-1] if status.record.invocations else None
    lines = [
        f"{status.record.name}: {len(status.states)} trials: "
        + ", ".join(f"{counts.get(state, 0)} {state}" for state in STATES),
        f"  last run: {last.backend}, {last.status}, started {last.started}" if last else "  never run",
    ]
    if status.driver is not None:
        lines.append(f"  driver: pid {status.driver.pid} on {status.driver.host} (finalbn cancel stops it)")
    for axis, rows in status.by_axis().items():
        # The axis names the label column, so the counts sit under their states.
        width = max(len(axis), *(len(label) for label in rows))
        lines.append(f"  {axis:<{width}}" + "".join(f"{state:>9}" for state in STATES))
        for label, row in rows.items():
            lines.append(f"  {label:<{width}}" + "".join(f"{row.get(state, 0):>9}" for state in STATES))
    return "\n".join(lines)


def cancel(folder: Path) -> list[str]:
    """Stop what runs the sweep: a live driver on this host (SIGTERM: it stops cleanly and
    marks its runs KILLED) and whatever the backend left running (Slurm arrays)."""
    status = sweep_status(folder)
    lines = []
    if status.driver is not None:
        os.kill(status.driver.pid, signal.SIGTERM)
        lines.append(f"sent SIGTERM to the sweep's driver, pid {status.driver.pid}")
    for backend in _backends(folder, status.record):
        lines.extend(backend.cancel(folder))
    return lines or [f"{status.record.name}: nothing is running"]


def _state(folder: Path, in_flight: bool, driver_alive: bool) -> TrialState:
    if (folder / folders.SUMMARY).exists():
        return "done"
    # A started trial is running while something runs it; otherwise it was cut short and reruns.
    if in_flight or (driver_alive and (folder / folders.CONFIG).exists()):
        return "running"
    if (folder / folders.FAILURE).exists():
        return "failed"
    return "pending"


def _live_driver(record: SweepRecord) -> Invocation | None:
    if not record.invocations:
        return None
    last = record.invocations[-1]
    if last.status != "RUNNING" or last.host != socket.gethostname() or last.pid <= 0:
        return None
    try:
        os.kill(last.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's process
        return last
    return last


def _in_flight(folder: Path, record: SweepRecord) -> set[str]:
    live: set[str] = set()
    for backend in _backends(folder, record):
        live |= set(backend.in_flight(folder, []))
    return live


def _backends(folder: Path, record: SweepRecord) -> list[Backend]:
    """The backends the sweep's invocations used, built from the names sweep.json records, with their
    default options: what is still running (a Slurm array's state file under the folder) is found from
    the folder and the name alone."""
    from finalbn.launch import BackendOptions, build_backend

    options = BackendOptions(out=folder.resolve().parent)
    backends = []
    for name in dict.fromkeys(i.backend for i in record.invocations):
        try:
            backends.append(build_backend(name, options))
        except UserError:
            # A cluster backend this machine cannot reach (no RAY_ADDRESS): nothing of it to ask.
            continue
    return backends

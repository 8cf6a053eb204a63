"""The seam a sweep's driver writes its tracking through: the ``Tracker`` protocol, ``NullTracker`` for
tracking off (``finalbn.tracking.writer.MlflowTracker`` is the other), and ``TaskTracking``, what a tracker
hands the Slurm tasks that write their trials themselves (``finalbn.tracking.task``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.spec import SweepSpec
from finalbn.tracking.layout import RunNames


class Tracker(Protocol):
    def start_sweep(
        self, spec: SweepSpec, git_commit: str, pending: int, skipped: int, live: frozenset[str] = frozenset()
    ) -> None: ...
    def sync_finished(self, jobs: list[TrialJob], live: frozenset[str] = frozenset()) -> int: ...
    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None: ...
    def discard_attempt(self, job: TrialJob) -> None: ...
    def finish_trial(self, job: TrialJob, failed: bool) -> None: ...
    def end_sweep(self, status: str, record: Path | None = None, summary: pl.DataFrame | None = None) -> None: ...
    def where(self) -> list[str]: ...
    def task_tracking(self) -> TaskTracking | None: ...


class NullTracker:
    """Tracking off: every call does nothing."""

    def start_sweep(
        self, spec: SweepSpec, git_commit: str, pending: int, skipped: int, live: frozenset[str] = frozenset()
    ) -> None:
        pass

    def task_tracking(self) -> TaskTracking | None:
        return None

    def sync_finished(self, jobs: list[TrialJob], live: frozenset[str] = frozenset()) -> int:
        return 0

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        pass

    def discard_attempt(self, job: TrialJob) -> None:
        pass

    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        pass

    def end_sweep(self, status: str, record: Path | None = None, summary: pl.DataFrame | None = None) -> None:
        pass

    def where(self) -> list[str]:
        return ["MLflow tracking: off"]


@dataclass(frozen=True)
class TaskTracking:
    uri: str
    artifact_root: Path
    experiment_id: str
    parent_id: str
    # How child runs are named (MlflowTracker.names).
    names: RunNames = field(default_factory=RunNames)

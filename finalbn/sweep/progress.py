"""The driver's side of the trial events: records, tracking, and one status line."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from finalbn.jobs import TrialJob
from finalbn.launch.base import record_failure
from finalbn.tracking import Tracker


@dataclass
class Outcome:
    """What this invocation did with its pending trials."""

    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class DriverEvents:
    """Trial events -> failure records and the tracker (unless the workers keep
    those themselves, as Slurm tasks do), plus the status line."""

    def __init__(self, tracker: Tracker | None, progress: Progress) -> None:
        # None: the workers record failures and MLflow runs; only show progress.
        self.tracker = tracker
        self.progress = progress

    def started(self, job: TrialJob) -> None:
        self.progress.started(job)

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        self.progress.started(job)
        if self.tracker is not None:
            self.tracker.log_epoch(job, row)

    def retrying(self, job: TrialJob, error: str) -> None:
        if self.tracker is not None:
            record_failure(job, error)
            self.tracker.discard_attempt(job)

    def finished(self, job: TrialJob) -> None:
        if self.tracker is not None:
            self.tracker.finish_trial(job, failed=False)
        self.progress.finished(job)

    def failed(self, job: TrialJob, error: str) -> None:
        if self.tracker is not None:
            record_failure(job, error)
            self.tracker.finish_trial(job, failed=True)
        self.progress.failed(job)


class Progress:
    """One status line a person reads at a glance."""

    def __init__(self, outcome: Outcome, total: int, skipped: int, todo: int) -> None:
        self.outcome = outcome
        self.total = total
        self.skipped = skipped
        self.todo = todo
        self.running: set[str] = set()
        self.best = float("nan")
        self.t0 = time.perf_counter()
        self.tty = sys.stdout.isatty()
        self.last_line = ""

    def started(self, job: TrialJob) -> None:
        if job.trial_id in self.running:
            return
        self.running.add(job.trial_id)
        # In a log (no terminal) a line per finished trial is enough.
        if self.tty:
            self._show()

    def finished(self, job: TrialJob) -> None:
        self.running.discard(job.trial_id)
        self.outcome.finished.append(job.trial_id)
        final = json.loads((job.folder / "summary.json").read_text())["test"]["f1_minority"]
        self.best = final if self.best != self.best else max(self.best, final)
        self._show()

    def failed(self, job: TrialJob) -> None:
        self.running.discard(job.trial_id)
        self.outcome.failed.append(job.trial_id)
        self._show()

    def close(self) -> None:
        if self.tty and self.last_line:
            print()

    def _show(self) -> None:
        o = self.outcome
        done = len(o.finished) + len(o.failed)
        best = "-" if self.best != self.best else f"{self.best:.3f}"
        line = (
            f"[{done + self.skipped:>{len(str(self.total))}}/{self.total}] done {len(o.finished)}  "
            f"running {len(self.running)}  failed {len(o.failed)}  skipped {self.skipped}  "
            f"best minority F1 {best}  ETA {self._eta(done)}"
        )
        if line == self.last_line:
            return
        self.last_line = line
        print("\r" + line if self.tty else line, end="" if self.tty else "\n", flush=True)

    def _eta(self, done: int) -> str:
        if done == 0:
            return "-"
        remaining = (time.perf_counter() - self.t0) / done * (self.todo - done)
        minutes, seconds = divmod(int(remaining), 60)
        return f"{minutes}:{seconds:02d}"

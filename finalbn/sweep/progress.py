"""The driver's display of the trial events: one status line (or a live one on a terminal)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from finalbn.console import interrupts
from finalbn.records import Summary, read_json
from finalbn.records.folders import SUMMARY
from finalbn.sweep.claims import Owner
from finalbn.sweep.jobs import TrialJob


@dataclass
class Outcome:
    """What this invocation did with its pending trials."""

    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Not trained here: trial id -> the live owner of its claim, or None when another owner finished it.
    elsewhere: dict[str, Owner | None] = field(default_factory=dict)
    # Of those, the ones the other drivers finished.
    by_others: list[str] = field(default_factory=list)


class ProgressEvents:
    """Trial events -> the status line. Whoever records the trials (failure records, MLflow) does so before
    telling these (finalbn.launch.base.Recording). Each event ends by raising a Ctrl-C that a finalizer
    swallowed: every backend's driver loop passes through here."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def started(self, job: TrialJob) -> None:
        self.progress.started(job)
        interrupts.check()

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        self.progress.epoch(job, int(row["epoch"]))
        interrupts.check()

    def phase(self, job: TrialJob, text: str) -> None:
        self.progress.phase(job, text)
        interrupts.check()

    def retrying(self, job: TrialJob, error: str) -> None:
        interrupts.check()

    def finished(self, job: TrialJob) -> None:
        self.progress.finished(job)
        interrupts.check()

    def failed(self, job: TrialJob, error: str) -> None:
        self.progress.failed(job)
        interrupts.check()

    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None:
        self.progress.elsewhere(job, owner)
        interrupts.check()


# A log gets a trial's phase (feature extraction...) at most this often: no silence over ~10 s, no flood.
PHASE_SECONDS = 10.0


class Progress:
    """What the sweep is doing, for a person: trials done/running/failed/skipped,
    the epoch each running trial is at, and an ETA from trial durations only
    (start-up time is not a trial's). A live rich display on a terminal; one
    plain line per finished trial otherwise, so CI logs stay readable."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        # The sweep's counts, from its plan (begin): the driver makes its display before it plans.
        self.total = self.skipped = self.todo = 0
        # Trial id -> (start time, epochs done) of the trials running now.
        self.running: dict[str, tuple[float, int]] = {}
        self.durations: list[float] = []
        self.peak_running = 1
        self.best = float("nan")
        # Trial id -> when its last phase line was printed (a log, not a terminal).
        self.phase_shown: dict[str, float] = {}
        self.live: _LiveDisplay | None = None

    def begin(self, total: int, skipped: int, todo: int) -> None:
        """The planned sweep: ``total`` trials, ``skipped`` finished before, ``todo`` to run or follow."""
        self.total, self.skipped, self.todo = total, skipped, todo
        if sys.stdout.isatty():
            self.live = _LiveDisplay(total, skipped)

    def started(self, job: TrialJob) -> None:
        if job.trial_id not in self.running:
            self.running[job.trial_id] = (time.perf_counter(), 0)
            self.peak_running = max(self.peak_running, len(self.running))
            self._show(job)

    def epoch(self, job: TrialJob, epoch: int) -> None:
        # Only a trial running now: a late event of an ended one must not count it as running again.
        if job.trial_id in self.running:
            self.running[job.trial_id] = (self.running[job.trial_id][0], epoch)
            self._show(job)

    def phase(self, job: TrialJob, text: str) -> None:
        """On a terminal, the trial's bar says it; in a log, a line at most every PHASE_SECONDS per trial."""
        if job.trial_id not in self.running:
            return
        if self.live is not None:
            self.live.phase(job, text)
            return
        now = time.perf_counter()
        if now - self.phase_shown.get(job.trial_id, -PHASE_SECONDS) >= PHASE_SECONDS:
            self.phase_shown[job.trial_id] = now
            print(f"  {job.name}: {text}", flush=True)

    def finished(self, job: TrialJob) -> None:
        self._end(job)
        self.outcome.finished.append(job.trial_id)
        final = read_json(job.folder / SUMMARY, Summary).test.f1_minority
        self.best = final if self.best != self.best else max(self.best, final)
        self._show(job, ended=True)

    def failed(self, job: TrialJob) -> None:
        self._end(job)
        self.outcome.failed.append(job.trial_id)
        self._show(job, ended=True)

    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None:
        self.running.pop(job.trial_id, None)
        self.outcome.elsewhere[job.trial_id] = owner

    def waiting(self, owners: list[Owner]) -> None:
        """One line while this driver waits on trials that other drivers train."""
        who = ", ".join(sorted({f"{o.host} pid {o.pid}" for o in owners}))
        print(f"{len(owners)} trials being trained by another driver ({who}); waiting for them", flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def _end(self, job: TrialJob) -> None:
        begun, _ = self.running.pop(job.trial_id, (None, 0))
        if begun is not None:
            self.durations.append(time.perf_counter() - begun)

    def summary(self) -> str:
        o = self.outcome
        done = len(o.finished) + len(o.failed)
        best = "-" if self.best != self.best else f"{self.best:.3f}"
        return (
            f"[{done + self.skipped:>{len(str(self.total))}}/{self.total}] done {len(o.finished)}  "
            f"running {len(self.running)}  failed {len(o.failed)}  skipped {self.skipped}  "
            f"best minority F1 {best}  ETA {self.eta()}"
        )

    def eta(self) -> str:
        """Mean finished-trial duration x trials left / trials at once; "-" before the first finishes."""
        if not self.durations:
            return "-"
        left = self.todo - len(self.outcome.finished) - len(self.outcome.failed)
        remaining = sum(self.durations) / len(self.durations) * left / self.peak_running
        minutes, seconds = divmod(int(remaining), 60)
        return f"{minutes}:{seconds:02d}"

    def _show(self, job: TrialJob, ended: bool = False) -> None:
        if self.live is not None:
            self.live.update(self, job, ended)
        elif ended:
            print(self.summary(), flush=True)


class _LiveDisplay:
    """rich's live progress: one bar for the sweep, one per running trial (its epochs)."""

    def __init__(self, total: int, skipped: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=False)
        self.sweep = self.bars.add_task("trials", total=total, completed=skipped)
        self.trials: dict[str, int] = {}
        self.bars.start()

    def update(self, progress: Progress, job: TrialJob, ended: bool) -> None:
        outcome = progress.outcome
        self.bars.update(
            self.sweep,
            completed=progress.skipped + len(outcome.finished) + len(outcome.failed),
            description=progress.summary(),
        )
        if ended:
            if job.trial_id in self.trials:
                self.bars.remove_task(self.trials.pop(job.trial_id))
            return
        epoch = progress.running.get(job.trial_id, (0.0, 0))[1]
        self.bars.update(self._bar(job), completed=epoch, description=f"  {job.name}")

    def phase(self, job: TrialJob, text: str) -> None:
        self.bars.update(self._bar(job), description=f"  {job.name}: {text}")

    def _bar(self, job: TrialJob) -> int:
        if job.trial_id not in self.trials:
            self.trials[job.trial_id] = self.bars.add_task(f"  {job.name}", total=job.trial.config.train.epochs)
        return self.trials[job.trial_id]

    def close(self) -> None:
        self.bars.stop()

"""The one seam between the sweep driver and where trials run.

submitit's ``Executor`` is the model: the driver gives a backend the context of one invocation (``Launch``:
the sweep, its options, the driver's display and its tracker) and gets an ``Executor``; ``submit(jobs)``
returns a ``RunHandle`` whose ``wait()`` runs or follows them. A detached handle (a Slurm array submitted
without --wait) returns at once; rerunning the command asks the backend which trials are still ``in_flight``
and carries on with the rest.

Where failure records and MLflow runs are written belongs to the executor, not the driver: trials that run
under the driver (serial, local, Ray: ``DriverBound``) are recorded in the driver as it hears their events
(``Recording``); Slurm tasks outlive the driver and record themselves.

Every worker runs the same per-trial function, ``execute``; backends that run
attempts in one process (serial, a local worker, a Slurm task) retry through ``run_attempts``.
"""

from __future__ import annotations

import importlib
import os
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from finalbn.console import interrupts
from finalbn.errors import UserError
from finalbn.records import FAILURE, SUMMARY, RecordError, fault_in, read_failure, write_json
from finalbn.sweep.claims import ClaimedElsewhere, Owner, hold, trial_claim
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.options import SweepOptions
from finalbn.sweep.spec import SweepSpec
from finalbn.tracking import Tracker

# "module:function" called with each job before it trains, in the worker: an
# extension point (tests inject faults through it) that production runs leave unset.
TRIAL_HOOK_ENV = "FINALBN_TRIAL_HOOK"


class TrialEvents(Protocol):
    """What a backend tells the driver about its trials, in the driver process.

    ``error`` is the failed attempt's traceback as the backend saw it; the
    driver, not the worker, writes it down, so a worker that died without a
    word (killed, out of memory) is recorded too.
    """

    def started(self, job: TrialJob) -> None: ...
    def epoch(self, job: TrialJob, row: dict[str, float]) -> None: ...
    # What the trial does before its first epoch (``text``: one short line), for the person watching.
    def phase(self, job: TrialJob, text: str) -> None: ...
    def retrying(self, job: TrialJob, error: str) -> None: ...
    def finished(self, job: TrialJob) -> None: ...
    def failed(self, job: TrialJob, error: str) -> None: ...
    # Not trained here: ``owner`` holds its claim, or (None) another owner finished it meanwhile.
    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None: ...


class RunHandle(Protocol):
    # True: the trials run on without this process (submitted to a scheduler).
    @property
    def detached(self) -> bool: ...

    def wait(self) -> None:
        """Run or follow the trials to their end, or return at once when detached."""

    def notes(self) -> list[str]:
        """Lines for the person: where the trials are, how to follow or cancel them."""


class TrialRecords(Protocol):
    """Where a trial's MLflow run is written: the driver's ``Tracker``, a Slurm task's ``TaskTracker``."""

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None: ...
    def discard_attempt(self, job: TrialJob) -> None: ...
    def finish_trial(self, job: TrialJob, failed: bool) -> None: ...


@dataclass(frozen=True)
class Launch:
    """What the driver gives a backend for one invocation, fixed for every ``submit`` of its executor."""

    spec: SweepSpec
    options: SweepOptions
    # The driver's display of the trial events (its status line; a Ctrl-C a finalizer swallowed is raised there).
    progress: TrialEvents
    # The invocation's MLflow runs (a NullTracker with tracking off).
    tracker: Tracker


class Executor(Protocol):
    def submit(self, jobs: list[TrialJob], running: Sequence[TrialJob] = ()) -> RunHandle:
        """Start ``jobs``; ``running``: unfinished trials ``in_flight`` reported, to follow as well."""

    def close(self) -> None:
        """Let go of what the executor holds for its invocation (warm workers), whether or not it ran anything."""


class Backend(Protocol):
    # The registered name, recorded in sweep.json.
    name: str
    # True: trials run on this machine, so its GPUs are the ones they get.
    runs_here: bool

    def slots(self, max_concurrent: int | None, cpus_per_trial: float) -> int:
        """Trials at once, for the cost estimate."""

    def preflight(self) -> None:
        """Refuse (UserError) a launch that cannot happen here, before the sweep records anything of it."""

    def in_flight(self, folder: Path, jobs: list[TrialJob]) -> dict[str, str]:
        """Trial id -> where it is running, for trials an earlier invocation left running."""

    def cancel(self, folder: Path) -> list[str]:
        """Stop what outlives the driver (a submitted array); one line per thing stopped."""

    def executor(self, launch: Launch) -> Executor:
        """Where this invocation's trials run, and who records them."""


def local_slots(max_concurrent: int | None, cpus_per_trial: float) -> int:
    """Trials at once on this machine: --max-concurrent, else its cores per trial."""
    return max_concurrent or max(1, int((os.cpu_count() or 1) // cpus_per_trial))


def trial_threads(cpus_per_trial: float) -> int:
    """Torch threads of one trial: its whole --cpus-per-trial, at least one."""
    return max(1, int(cpus_per_trial))


class DriverBound(ABC):
    """A backend whose trials end with the driver that runs them (serial, local, Ray): nothing is in
    flight from an earlier invocation, finalbn cancel stops the driver itself, and the driver records
    the trials as it hears their events."""

    def preflight(self) -> None:
        # Nothing to refuse by default: the trials run where the driver does (Ray with an address checks it).
        return None

    def in_flight(self, folder: Path, jobs: list[TrialJob]) -> dict[str, str]:
        return {}

    def cancel(self, folder: Path) -> list[str]:
        return []

    @abstractmethod
    def executor(self, launch: Launch) -> InDriver: ...


def _holds_nothing() -> None:
    return None


@dataclass(frozen=True)
class InDriver:
    """The executor of a ``DriverBound`` backend: the handle's ``wait`` trains the jobs."""

    launch: Launch
    # Trains the jobs of one submit (at least one) to their end before returning, telling the events about each.
    train: Callable[[list[TrialJob], TrialEvents], None]
    # Lets go of what the submits share (the local backend's warm workers).
    release: Callable[[], None] = _holds_nothing

    def submit(self, jobs: list[TrialJob], running: Sequence[TrialJob] = ()) -> RunHandle:
        # ``running`` stays empty: nothing of a driver-bound backend outlives its driver.
        events = Recording(self.launch.tracker, self.launch.progress)
        return Finished(lambda: self.train(jobs, events) if jobs else None)

    def close(self) -> None:
        self.release()


@dataclass(frozen=True)
class Recording:
    """Trial events -> the failure records and MLflow runs, written where the events are heard, then
    ``shown``: in the driver for trials that run under it, in a Slurm task for its own trials.

    A stop (Ctrl-C, SIGTERM) that lands while an event is recorded is raised when the record is whole: cut in
    two, an MLflow write leaves its run open (or SQLite locked) for the driver's last writes."""

    records: TrialRecords
    shown: TrialEvents

    def started(self, job: TrialJob) -> None:
        self.shown.started(job)

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        with interrupts.deferred():
            self.records.log_epoch(job, row)
        self.shown.epoch(job, row)

    def phase(self, job: TrialJob, text: str) -> None:
        self.shown.phase(job, text)

    def retrying(self, job: TrialJob, error: str) -> None:
        with interrupts.deferred():
            record_failure(job, error)
            self.records.discard_attempt(job)
        self.shown.retrying(job, error)

    def finished(self, job: TrialJob) -> None:
        with interrupts.deferred():
            self.records.finish_trial(job, failed=False)
        self.shown.finished(job)

    def failed(self, job: TrialJob, error: str) -> None:
        with interrupts.deferred():
            record_failure(job, error)
            self.records.finish_trial(job, failed=True)
        self.shown.failed(job, error)

    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None:
        # Its owner keeps its records and its MLflow run (a child of the owner's parent run).
        self.shown.elsewhere(job, owner)


@dataclass(frozen=True)
class Finished:
    """The handle of a driver-bound executor: everything runs inside ``wait``."""

    run: Callable[[], None]
    detached: bool = False

    def wait(self) -> None:
        self.run()

    def notes(self) -> list[str]:
        return []


def execute(
    job: TrialJob,
    threads: int,
    report: Callable[[dict[str, float]], None],
    worker: dict[str, object] | None = None,
    resume: bool = False,
    phase: Callable[[str], None] | None = None,
) -> None:
    """Run one trial inside a worker from its planned job; the same function serves every backend.

    ``report`` hears each epoch's row, ``phase`` what the trial does before its first epoch.
    ``worker`` says where it ran (kept in summary.json); ``resume`` continues
    from the trial's last finished epoch (a requeued Slurm task). Exceptions
    propagate so the backend can retry the trial.
    """
    import torch

    from finalbn.data import Manifest
    from finalbn.train.results import run_trial

    torch.set_num_threads(max(1, threads))
    hook = os.environ.get(TRIAL_HOOK_ENV)
    if hook:
        module, _, function = hook.partition(":")
        getattr(importlib.import_module(module), function)(job)
    run_trial(
        job.trial.config,
        Manifest.read(job.manifest),
        job.trial_id,
        job.folder,
        git_commit=job.git_commit,
        code=job.code,
        on_epoch=report,
        on_phase=phase,
        save_model=False,
        worker=worker,
        resume=resume,
    )


def run_attempts(
    job: TrialJob,
    events: TrialEvents,
    retries: int,
    threads: int,
    worker: dict[str, object] | None = None,
    resume: bool = False,
) -> bool | None:
    """One trial, retried up to ``retries`` times in this process under its claim; True when it
    finished, False when it failed, None when another owner has it (``events.elsewhere``)."""
    try:
        with claimed(job):
            events.started(job)
            for attempt in range(retries + 1):
                try:
                    execute(
                        job,
                        threads,
                        lambda row: events.epoch(job, row),
                        worker=worker,
                        resume=resume,
                        phase=lambda text: events.phase(job, text),
                    )
                except Exception:  # a trial's failure must not end the other trials
                    error = traceback.format_exc()
                    if attempt < retries:
                        events.retrying(job, error)
                        continue
                    events.failed(job, error)
                    return False
                events.finished(job)
                return True
    except ClaimedElsewhere as taken:
        events.elsewhere(job, taken.owner)
        return None
    return False


@contextmanager
def claimed(job: TrialJob) -> Iterator[None]:
    """The trial's claim while it trains, in whichever process trains it (every backend): two drivers
    on one folder share the trials. ``ClaimedElsewhere`` when a live owner holds it or finished it."""
    with hold(trial_claim(job.folder)):
        # Planned as pending, but another driver may have finished it since.
        if (job.folder / SUMMARY).exists():
            raise ClaimedElsewhere(trial_claim(job.folder), None)
        yield


def failed_attempts(job: TrialJob) -> int:
    """Failed attempts recorded so far: 0 without a failure.json, or with one that does not read back."""
    return _earlier_failure(job)[0]


def record_failure(job: TrialJob, error: str) -> None:
    """Count one more failed attempt and keep its traceback.

    An attempt that failed on a fault every later trial would repeat (a full
    disk, a read-only folder, a lost MLflow store, no memory: records.FAULTS)
    stops the sweep here, with the one line that says so (exit 2), instead of
    being retried.
    """
    fault = fault_in(error)
    try:
        job.folder.mkdir(parents=True, exist_ok=True)
        attempts, problem = _earlier_failure(job)
        if problem is not None:
            print(f"trial {job.trial_id}: {problem}; its failed attempts are counted again from 0")
        write_json(job.folder / FAILURE, {"trial_id": job.trial_id, "attempts": attempts + 1, "traceback": error})
    except OSError:
        # A read-only folder takes no record either; the fault's line says what to do.
        if fault is None:
            raise
    if fault is not None:
        raise UserError(fault)


def _earlier_failure(job: TrialJob) -> tuple[int, str | None]:
    """Attempts in the trial's failure.json, and what is wrong with it when it does not validate."""
    path = job.folder / FAILURE
    if not path.exists():
        return 0, None
    try:
        return read_failure(path, job.trial_id).attempts, None
    except RecordError as problem:
        return 0, str(problem)

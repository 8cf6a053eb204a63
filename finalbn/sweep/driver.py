"""The one sweep driver: plan, skip what is finished, hand the rest to a backend, tabulate.

Every backend runs behind the same seam (finalbn.launch.base: a backend's
executor for this invocation, ``submit(jobs) -> handle``), so planning, setting
damaged folders aside, skipping, progress, the parent MLflow run, ``sweep.json``
and the tables are done here once, whichever runs the trials; the executor
decides where the trials' failure records and MLflow runs are written.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from finalbn.console import interrupts
from finalbn.errors import UserError
from finalbn.launch.base import Backend, Executor, Launch, SweepOptions
from finalbn.provenance import code_versions
from finalbn.records import fault_of
from finalbn.records.folders import FAILURE
from finalbn.sweep.claims import Owner, acquire, driver_claim, live_drivers, live_owner, sweep_lock, trial_claim
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import is_finished, plan, set_aside_unusable
from finalbn.sweep.progress import Outcome, Progress, ProgressEvents
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.reuse import adopt_finished
from finalbn.sweep.spec import SweepSpec
from finalbn.sweep.tables import summary_table, write_tables
from finalbn.tracking import Tracker

# How often a driver looks at the trials other drivers train.
_POLL_SECONDS = 2.0


@dataclass
class SweepReport:
    spec: SweepSpec
    folder: Path
    total: int
    # Finished before this invocation.
    skipped: int
    # Running in tasks an earlier invocation submitted (left alone).
    in_flight: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Pending here, but trained by another driver on the same folder (their claims).
    by_others: list[str] = field(default_factory=list)
    # The trials run on after this command returned (a submitted Slurm array).
    detached: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Finished, but without a readable result folder at the end (deleted while the sweep ran): rerun trains them.
    lost: list[str] = field(default_factory=list)


def run_sweep(spec: SweepSpec, options: SweepOptions, backend: Backend, tracker: Tracker) -> SweepReport:
    """Plan, run and tabulate ``spec``; a fault every later trial would repeat (a read-only results folder,
    the MLflow store removed, no memory: finalbn.records.FAULTS) ends it as that fault's one-line UserError."""
    try:
        return _run_sweep(spec, options, backend, tracker)
    except UserError:
        raise
    except Exception as error:
        fault = fault_of(error)
        if fault is None:
            raise
        raise fault from error


def _run_sweep(spec: SweepSpec, options: SweepOptions, backend: Backend, tracker: Tracker) -> SweepReport:
    started = time.perf_counter()
    folder = options.out / spec.name
    versions = code_versions()
    outcome = Outcome()
    progress = Progress(outcome)
    launch = Launch(spec, options, ProgressEvents(progress), tracker)
    # The executor first: the local backend's workers warm up while the driver plans and sets up MLflow.
    with contextlib.closing(progress), contextlib.closing(backend.executor(launch)) as executor:
        # Checks everything first, then creates the folder.
        jobs = plan(spec, folder, versions["git_commit"])
        live = backend.in_flight(folder, jobs)
        # Not a folder something is writing now: a live task's, or a trial another driver holds.
        idle = [job for job in jobs if job.trial_id not in live and live_owner(trial_claim(job.folder)) is None]
        for note in adopt_finished(idle, folder.resolve().parent):
            print(f"{spec.name}: {note}")
        state = _State.of(jobs, live, options.keep_stale)
        print(state.line(spec.name))
        report = SweepReport(spec, folder, len(jobs), skipped=len(state.done), in_flight=len(state.running))
        if state.pending:
            # A launch the backend refuses (no Slurm client) leaves no invocation, no experiment, no run.
            backend.preflight()
        progress.begin(len(jobs), len(state.done), len(state.pending) + len(state.running))
        record = _record(spec, jobs, versions, folder)
        invocation = record.begin(backend.name, skipped=len(state.done), pending=len(state.pending))
        record.write(folder)
        # Under the sweep's lock: another driver starting now must see this one's parent run as alive.
        with sweep_lock(folder):
            busy = state.live | _claimed_elsewhere(folder, jobs)
            tracker.start_sweep(
                spec, versions["git_commit"], pending=len(state.pending), skipped=len(state.done), live=busy
            )
            tracking = tracker.task_tracking()
            me = acquire(driver_claim(folder), run="" if tracking is None else tracking.parent_id)
        relogged = tracker.sync_finished([job for job in state.done if job.trial_id not in busy], live=busy)
        if relogged:
            print(
                f"MLflow: {relogged} finished trials had no finished run in {spec.name} (reused from another sweep, "
                "or their driver was killed); logged from their folders"
            )
        invocation.status = "FAILED"
        try:
            handle = executor.submit(state.pending, state.running)
            handle.wait()
            if not handle.detached:
                _await_others(jobs, executor, outcome, progress)
            report.detached, report.notes = handle.detached, handle.notes()
            invocation.status = "SUBMITTED" if handle.detached else "FINISHED"
        except KeyboardInterrupt:
            invocation.status = "KILLED"
            left = len(state.pending) - len(outcome.finished) - len(outcome.failed)
            print(
                f"\ninterrupted: {len(outcome.finished)} trials finished in this run, {left} did not; "
                "rerun the same command to resume (finished trials are skipped)",
                flush=True,
            )
            raise
        finally:
            # A read-only results folder cannot lose the claim file either: with its heartbeat stopped, it goes stale.
            with contextlib.suppress(OSError):
                me.release()
            report.finished, report.failed, report.by_others = outcome.finished, outcome.failed, outcome.by_others
            invocation.close(outcome.finished, outcome.failed)
            # A submitted array's parent run is complete: the tasks log their own runs under it.
            status = "FINISHED" if invocation.status == "SUBMITTED" else invocation.status
            try:
                record_path = record.write(folder)
                write_tables(folder, jobs)
            except Exception:
                tracker.end_sweep(status)  # a full disk must not leave runs RUNNING
                raise
            lost = _lost(jobs, state.done, outcome)
            report.lost = lost
            if lost:
                report.finished = [trial_id for trial_id in outcome.finished if trial_id not in lost]
                print(
                    f"{spec.name}: {len(lost)} finished trials have no readable result folder now (deleted or damaged "
                    f"while the sweep ran): {', '.join(lost)}; they are not in the tables, and rerunning the same "
                    "command trains them again",
                    flush=True,
                )
            # The tables first: the parent run's metrics are the summary's numbers.
            tracker.end_sweep(status, record_path, summary_table(folder, spec))
    report.seconds = time.perf_counter() - started
    return report


def _lost(jobs: list[TrialJob], done: list[TrialJob], outcome: Outcome) -> list[str]:
    """Trials finished before or during this invocation whose summary.json is gone now: the tables,
    rebuilt from the folders, hold every planned trial that is finished, and these are not."""
    finished = {job.trial_id for job in done} | set(outcome.finished)
    return [job.trial_id for job in jobs if job.trial_id in finished and not is_finished(job)]


def _claimed_elsewhere(folder: Path, jobs: list[TrialJob]) -> frozenset[str]:
    """Trial ids and MLflow parent run ids that live other drivers own: their runs are not stale."""
    trials = {job.trial_id for job in jobs if live_owner(trial_claim(job.folder)) is not None}
    return frozenset(trials | {owner.run for owner in live_drivers(folder) if owner.run})


def _await_others(jobs: list[TrialJob], executor: Executor, outcome: Outcome, progress: Progress) -> None:
    """Trials another driver held when this one reached them: wait until they finish, so the
    tables are complete, and train here those whose owner went away without finishing them."""
    by_id = {job.trial_id: job for job in jobs}
    shown: set[str] = set()
    while outcome.elsewhere:
        owners: dict[str, Owner] = {}
        orphans = []
        for trial_id in list(outcome.elsewhere):
            job = by_id[trial_id]
            owner = live_owner(trial_claim(job.folder))
            if is_finished(job):
                outcome.by_others.append(trial_id)
            elif owner is None:
                orphans.append(job)
            else:
                owners[trial_id] = owner
                continue
            del outcome.elsewhere[trial_id]
        if orphans:
            executor.submit(orphans).wait()
        elif owners:
            if set(owners) != shown:
                progress.waiting(list(owners.values()))
                shown = set(owners)
            interrupts.sleep(_POLL_SECONDS)


@dataclass(frozen=True)
class _State:
    """Where each planned trial stands as an invocation starts."""

    done: list[TrialJob]
    # Unfinished trials in tasks an earlier invocation left running (Slurm).
    running: list[TrialJob]
    pending: list[TrialJob]
    live: frozenset[str]

    @classmethod
    def of(cls, jobs: list[TrialJob], live: dict[str, str], keep_stale: bool = False) -> _State:
        # A live task may be writing its trial's folder right now: leave those alone.
        for note in set_aside_unusable([job for job in jobs if job.trial_id not in live], keep_stale):
            print(note)
        done = [job for job in jobs if is_finished(job)]
        ids = {job.trial_id for job in done}
        running = [job for job in jobs if job.trial_id in live and job.trial_id not in ids]
        pending = [job for job in jobs if job.trial_id not in ids and job.trial_id not in live]
        return cls(done, running, pending, frozenset(live))

    def line(self, name: str) -> str:
        failed_before = sum((job.folder / FAILURE).exists() for job in self.pending)
        total = len(self.done) + len(self.running) + len(self.pending)
        return (
            f"{name}: {total} trials, {len(self.done)} finished earlier (skipped), "
            + (f"{len(self.running)} running from an earlier submission, " if self.running else "")
            + (f"{failed_before} failed earlier (retried), " if failed_before else "")
            + f"{len(self.pending)} to run"
        )


def _record(spec: SweepSpec, jobs: list[TrialJob], versions: dict[str, str], folder: Path) -> SweepRecord:
    record = SweepRecord.of(spec, {job.trial_id: (job.trial.point, job.fingerprint) for job in jobs}, versions)
    record.carry_history(SweepRecord.read(folder))
    return record

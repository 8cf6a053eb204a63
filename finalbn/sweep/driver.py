"""The one sweep driver: plan, skip what is finished, hand the rest to a backend, tabulate.

Every backend runs behind the same seam (finalbn.launch.base.Backend), so
planning, setting damaged folders aside, skipping, retries, progress, MLflow,
``sweep.json`` and the tables are done here once, whichever runs the trials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from finalbn.errors import UserError
from finalbn.jobs import TrialJob
from finalbn.launch.base import Backend, SweepOptions
from finalbn.provenance import code_versions
from finalbn.results import writable_folder
from finalbn.spec import SweepSpec
from finalbn.sweep.plan import is_finished, plan, set_aside_damaged
from finalbn.sweep.progress import DriverEvents, Outcome, Progress
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.tables import write_tables
from finalbn.tracking import Tracker


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
    # The trials run on after this command returned (a submitted Slurm array).
    detached: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_sweep(spec: SweepSpec, options: SweepOptions, backend: Backend, tracker: Tracker) -> SweepReport:
    started = time.perf_counter()
    folder = writable_folder(options.out / spec.name)
    versions = code_versions()
    jobs = plan(spec, folder, versions["git_commit"])
    state = _State.of(jobs, backend.in_flight(folder, jobs))
    print(state.line(spec.name))
    report = SweepReport(spec, folder, len(jobs), skipped=len(state.done), in_flight=len(state.running))
    record = _record(spec, jobs, versions, folder)
    invocation = record.begin(backend.name, skipped=len(state.done), pending=len(state.pending))
    record.write(folder)
    tracker.start_sweep(
        spec, versions["git_commit"], pending=len(state.pending), skipped=len(state.done), live=state.live
    )
    relogged = tracker.sync_finished([job for job in state.done if job.trial_id not in state.live])
    if relogged:
        print(f"MLflow: {relogged} finished trials had no finished run (driver killed?); logged from their folders")
    outcome = Outcome()
    progress = Progress(outcome, len(jobs), len(state.done), len(state.pending) + len(state.running))
    events = DriverEvents(None if backend.workers_record else tracker, progress)
    invocation.status = "FAILED"
    try:
        handle = backend.launch(spec, state.pending, options, events, tracker.task_tracking(), state.running)
        handle.wait()
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
        progress.close()
        report.finished, report.failed = outcome.finished, outcome.failed
        invocation.close(outcome.finished, outcome.failed)
        # A submitted array's parent run is complete: the tasks log their own runs under it.
        status = "FINISHED" if invocation.status == "SUBMITTED" else invocation.status
        try:
            record_path = record.write(folder)
        except UserError:
            tracker.end_sweep(status)  # a full disk must not leave runs RUNNING
            raise
        tracker.end_sweep(status, record_path)
        write_tables(folder, jobs)
        report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _State:
    """Where each planned trial stands as an invocation starts."""

    done: list[TrialJob]
    # Unfinished trials in tasks an earlier invocation left running (Slurm).
    running: list[TrialJob]
    pending: list[TrialJob]
    live: frozenset[str]

    @classmethod
    def of(cls, jobs: list[TrialJob], live: dict[str, str]) -> _State:
        # A live task may be writing its trial's folder right now: leave those alone.
        for note in set_aside_damaged([job for job in jobs if job.trial_id not in live]):
            print(note)
        done = [job for job in jobs if is_finished(job)]
        ids = {job.trial_id for job in done}
        running = [job for job in jobs if job.trial_id in live and job.trial_id not in ids]
        pending = [job for job in jobs if job.trial_id not in ids and job.trial_id not in live]
        return cls(done, running, pending, frozenset(live))

    def line(self, name: str) -> str:
        failed_before = sum((job.folder / "failure.json").exists() for job in self.pending)
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

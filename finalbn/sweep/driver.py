"""The one sweep driver: plan, skip what is finished, hand the rest to a backend, tabulate.

Every backend runs behind the same seam (finalbn.launch.base.Backend), so
planning, setting damaged folders aside, skipping, retries, progress, MLflow,
``sweep.json`` and the tables are done here once, whichever runs the trials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

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
    live = backend.in_flight(folder, jobs)
    # A live task may be writing its trial's folder right now: leave those alone.
    for note in set_aside_damaged([job for job in jobs if job.trial_id not in live]):
        print(note)
    done = [job for job in jobs if is_finished(job)]
    done_ids = {job.trial_id for job in done}
    in_flight = {tid for tid in live if tid not in done_ids}
    pending = [job for job in jobs if job.trial_id not in done_ids and job.trial_id not in in_flight]
    failed_before = sum((job.folder / "failure.json").exists() for job in pending)
    report = SweepReport(spec=spec, folder=folder, total=len(jobs), skipped=len(done), in_flight=len(in_flight))
    record = _record(spec, jobs, versions, folder)
    invocation = record.begin(backend.name, skipped=len(done), pending=len(pending))
    record.write(folder)
    print(
        f"{spec.name}: {len(jobs)} trials, {len(done)} finished earlier (skipped), "
        + (f"{len(in_flight)} running from an earlier submission, " if in_flight else "")
        + (f"{failed_before} failed earlier (retried), " if failed_before else "")
        + f"{len(pending)} to run"
    )
    tracker.start_sweep(spec, versions["git_commit"], pending=len(pending), skipped=len(done), live=frozenset(live))
    relogged = tracker.sync_finished([job for job in done if job.trial_id not in live])
    if relogged:
        print(f"MLflow: {relogged} finished trials had no finished run (driver killed?); logged from their folders")
    outcome = Outcome()
    progress = Progress(outcome, len(jobs), len(done), len(pending) + len(in_flight))
    events = DriverEvents(None if backend.workers_record else tracker, progress)
    status = "FAILED"
    try:
        running = [job for job in jobs if job.trial_id in in_flight]
        handle = backend.launch(spec, pending, options, events, tracker.task_tracking(), running)
        handle.wait()
        report.detached = handle.detached
        report.notes = handle.notes()
        status = "SUBMITTED" if handle.detached else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        left = len(pending) - len(outcome.finished) - len(outcome.failed)
        print(
            f"\ninterrupted: {len(outcome.finished)} trials finished in this run, {left} did not; "
            "rerun the same command to resume (finished trials are skipped)",
            flush=True,
        )
        raise
    finally:
        progress.close()
        report.finished, report.failed = outcome.finished, outcome.failed
        invocation.ended = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        invocation.status = status
        invocation.finished, invocation.failed = len(outcome.finished), len(outcome.failed)
        record_path = record.write(folder)
        # A submitted array's parent run is complete: the tasks log their own runs under it.
        tracker.end_sweep("FINISHED" if status == "SUBMITTED" else status, record=record_path)
        write_tables(folder, jobs)
        report.seconds = time.perf_counter() - started
    return report


def _record(spec: SweepSpec, jobs: list[TrialJob], versions: dict[str, str], folder: Path) -> SweepRecord:
    record = SweepRecord.of(spec, {job.trial_id: (job.trial.point, job.fingerprint) for job in jobs}, versions)
    record.carry_history(SweepRecord.read(folder))
    return record

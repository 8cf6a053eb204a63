"""Running a declared sweep: plan, skip what is finished, run the rest, tabulate.

The trial folders under ``<out>/<sweep>/trials/<trial id>/`` are the sweep's
state: a folder with ``summary.json`` is finished, so rerunning the same
command after a crash, a Ctrl-C or with another ``--max-concurrent`` runs only
what is missing or failed. Ray Tune's own experiment restore is not used for
this: it cannot tell a changed grid or changed data from an unchanged one,
while the trial id (a hash of the resolved config and the data manifest) can.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from finalbn.config import DataConfig, trial_id, validate
from finalbn.results import run_trial, writable_folder
from finalbn.spec import PlannedTrial, SweepSpec, flatten
from finalbn.tracking import Tracker

# Fault injection, for tests only: "MODE:SELECTOR[:N]". MODE "raise" raises in
# the trial, "exit" kills its worker process (os._exit). SELECTOR "p=0.3" hits
# that fraction of trials (by trial-id hash, so the same ones every run), any
# other text hits trials whose readable name contains it. N limits the fault
# to a trial's first N attempts.
FAULT_ENV = "FINALBN_FAULT"


@dataclass(frozen=True)
class TrialJob:
    trial: PlannedTrial
    trial_id: str
    # Fingerprint of the data manifest: the dataset version the trial saw.
    fingerprint: str
    folder: Path


@dataclass(frozen=True)
class SweepOptions:
    out: Path = Path("results")
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # Attempts after the first before a trial is recorded as failed.
    retries: int = 2
    # Show Ray's own logs and tables.
    verbose: bool = False


class TrialEvents(Protocol):
    """What a backend tells the driver about its trials, in the driver process.

    ``error`` is the failed attempt's traceback as the backend saw it; the
    driver, not the worker, writes it down, so a worker that died without a
    word (killed, out of memory) is recorded too.
    """

    def started(self, job: TrialJob) -> None: ...
    def epoch(self, job: TrialJob, row: dict[str, float]) -> None: ...
    def retrying(self, job: TrialJob, error: str) -> None: ...
    def finished(self, job: TrialJob) -> None: ...
    def failed(self, job: TrialJob, error: str) -> None: ...


class Backend(Protocol):
    def run(self, jobs: list[TrialJob], options: SweepOptions, events: TrialEvents) -> None: ...


@dataclass
class SweepReport:
    spec: SweepSpec
    folder: Path
    total: int
    skipped: int
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def sweep_folder(spec: SweepSpec, options: SweepOptions) -> Path:
    return options.out / spec.name


def plan(spec: SweepSpec, options: SweepOptions) -> list[TrialJob]:
    """Resolve every grid point to a trial id; bad configs or data fail here, before any trial."""
    from finalbn.data import build_manifest
    from finalbn.models import check_weights

    fingerprints: dict[DataConfig, str] = {}
    checked: set[tuple[str, str]] = set()
    jobs = []
    # Absolute: workers may run in another working directory.
    trials_root = sweep_folder(spec, options).resolve() / "trials"
    for trial in spec.trials():
        validate(trial.config)
        model = (trial.config.model.backbone, trial.config.model.weights)
        if model not in checked:
            check_weights(*model)
            checked.add(model)
        data = trial.config.data
        if data not in fingerprints:
            fingerprints[data] = build_manifest(data).fingerprint()
        tid = trial_id(trial.config, fingerprints[data])
        jobs.append(TrialJob(trial, tid, fingerprints[data], trials_root / tid))
    return jobs


def is_finished(job: TrialJob) -> bool:
    return (job.folder / "summary.json").exists()


def set_aside_damaged(jobs: list[TrialJob]) -> list[str]:
    """A finished-looking trial folder whose files do not read back is moved
    aside (kept for inspection) so the trial reruns; returns one note per folder."""
    notes = []
    for job in jobs:
        if not is_finished(job):
            continue
        try:
            json.loads((job.folder / "summary.json").read_text())["test"]["f1_minority"]
            pl.read_parquet(job.folder / "metrics.parquet")
        except Exception as error:  # any unreadable state means: train it again
            # Outside trials/, so nothing that scans trial folders ever reads it again.
            damaged = job.folder.parent.parent / "damaged" / f"{job.trial_id}-{time.strftime('%Y%m%d-%H%M%S')}"
            damaged.parent.mkdir(exist_ok=True)
            job.folder.rename(damaged)
            notes.append(
                f"trial {job.trial_id}: result folder unreadable ({type(error).__name__}); "
                f"moved to {damaged}, it will be rerun"
            )
    return notes


def run_sweep(spec: SweepSpec, options: SweepOptions, backend: Backend, tracker: Tracker) -> SweepReport:
    started = time.perf_counter()
    folder = sweep_folder(spec, options)
    writable_folder(folder)
    jobs = plan(spec, options)
    for note in set_aside_damaged(jobs):
        print(note)
    done = [job for job in jobs if is_finished(job)]
    done_ids = {job.trial_id for job in done}
    pending = [job for job in jobs if job.trial_id not in done_ids]
    report = SweepReport(spec=spec, folder=folder, total=len(jobs), skipped=len(done))
    print(f"{spec.name}: {len(jobs)} trials, {report.skipped} finished earlier (skipped), {len(pending)} to run")
    tracker.start_sweep(spec, pending=len(pending), skipped=report.skipped)
    relogged = tracker.sync_finished(done)
    if relogged:
        print(f"MLflow: {relogged} finished trials had no finished run (driver killed?); logged from their folders")
    progress = Progress(report, pending, tracker)
    status = "FAILED"
    try:
        if pending:
            backend.run(pending, options, progress)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        left = len(pending) - len(report.finished) - len(report.failed)
        print(
            f"\ninterrupted: {len(report.finished)} trials finished in this run, {left} did not; "
            "rerun the same command to resume (finished trials are skipped)",
            flush=True,
        )
        raise
    finally:
        tracker.end_sweep(status)
        write_tables(folder, jobs)
        report.seconds = time.perf_counter() - started
        progress.close()
    return report


def write_tables(folder: Path, jobs: list[TrialJob]) -> None:
    """``epochs.parquet``: one row per finished trial x epoch with config columns;
    ``trials.parquet``: one row per finished trial with its final test metrics
    (``nobn_*``: final BN removed). Rebuilt from the trial folders every time,
    so they never hold a duplicate or a trial of another grid."""
    epochs, finals = [], []
    for job in jobs:
        if not is_finished(job):
            continue
        config_columns = _config_columns(job)
        metrics = pl.read_parquet(job.folder / "metrics.parquet")
        epochs.append(metrics.with_columns(**{k: pl.lit(v) for k, v in config_columns.items()}))
        summary = json.loads((job.folder / "summary.json").read_text())
        finals.append({"trial_id": job.trial_id, **config_columns, "seconds": summary["seconds"], **summary["test"]})
    if not epochs:
        return
    pl.concat(epochs, how="diagonal_relaxed").write_parquet(folder / "epochs.parquet")
    pl.DataFrame(finals, infer_schema_length=None).write_parquet(folder / "trials.parquet")


def summary_table(folder: Path, spec: SweepSpec) -> pl.DataFrame | None:
    """Test minority/majority F1 per value of the scientific axes, over seeds and
    other nuisance axes: the sweep's answer at a glance (analysis/ goes further)."""
    path = folder / "trials.parquet"
    if not path.exists():
        return None
    keys = [f"axis.{axis.name}" for axis in spec.axes if axis.role == "scientific" and len(axis.values) > 1]
    trials = pl.read_parquet(path)
    aggregations = [
        pl.col("f1_minority").mean().round(3).alias("minority F1"),
        pl.col("f1_minority").std().round(3).alias("std"),
        pl.col("f1_majority").mean().round(3).alias("majority F1"),
        pl.len().alias("trials"),
    ]
    if not keys:
        return trials.select(aggregations)
    order = {f"axis.{a.name}": [a.label(i) for i in range(len(a.values))] for a in spec.axes}
    table = trials.group_by(keys).agg(aggregations)
    rank = [pl.col(k).replace_strict(order[k], list(range(len(order[k]))), default=None) for k in keys]
    return table.sort(rank).rename({k: k.removeprefix("axis.") for k in keys})


def _config_columns(job: TrialJob) -> dict[str, object]:
    point = {f"axis.{name}": label for name, label in job.trial.point.items()}
    config = flatten(job.trial.config)
    return {"trial_name": job.trial.name(), "dataset_fingerprint": job.fingerprint, **point, **config}


def execute(
    job: TrialJob,
    threads: int,
    report: Callable[[dict[str, float]], None],
    worker: dict[str, object] | None = None,
    resume: bool = False,
) -> None:
    """Run one trial inside a worker; the same function serves every backend.

    ``worker`` says where it ran (kept in summary.json); ``resume`` continues
    from the trial's last finished epoch (a requeued Slurm task). Exceptions
    propagate so the backend can retry the trial.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    _inject_fault(job)
    run_trial(job.trial.config, job.folder.parent, on_epoch=report, save_model=False, worker=worker, resume=resume)


def failed_attempts(job: TrialJob) -> int:
    path = job.folder / "failure.json"
    return json.loads(path.read_text())["attempts"] if path.exists() else 0


def record_failure(job: TrialJob, error: str) -> None:
    """Count one more failed attempt and keep its traceback (driver side)."""
    job.folder.mkdir(parents=True, exist_ok=True)
    record = {"trial_id": job.trial_id, "attempts": failed_attempts(job) + 1, "traceback": error}
    (job.folder / "failure.json").write_text(json.dumps(record, indent=2))


def _inject_fault(job: TrialJob) -> None:
    rule = os.environ.get(FAULT_ENV, "")
    if not rule:
        return
    mode, selector, *limit = rule.split(":", 2)
    if limit and failed_attempts(job) >= int(limit[0]):
        return
    if selector.startswith("p="):
        hit = int(hashlib.sha256(job.trial_id.encode()).hexdigest()[:8], 16) / 16**8 < float(selector[2:])
    else:
        hit = selector in job.trial.name()
    if not hit:
        return
    if mode == "exit":
        os._exit(3)
    raise RuntimeError(f"fault injected by {FAULT_ENV}={rule}")


class Progress:
    """Trial events -> tracker, plus one status line a person reads at a glance."""

    def __init__(self, report: SweepReport, pending: list[TrialJob], tracker: Tracker) -> None:
        self.report = report
        self.tracker = tracker
        self.todo = len(pending)
        self.running: set[str] = set()
        self.best = float("nan")
        self.t0 = time.perf_counter()
        self.tty = sys.stdout.isatty()
        self.last_line = ""

    def started(self, job: TrialJob) -> None:
        self.running.add(job.trial_id)
        # In a log (no terminal) a line per finished trial is enough.
        if self.tty:
            self._show()

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        self.running.add(job.trial_id)
        self.tracker.log_epoch(job.trial, job.trial_id, job.fingerprint, row)

    def retrying(self, job: TrialJob, error: str) -> None:
        record_failure(job, error)
        self.tracker.discard_attempt(job.trial_id)

    def finished(self, job: TrialJob) -> None:
        self.running.discard(job.trial_id)
        self.report.finished.append(job.trial_id)
        self.tracker.finish_trial(job.trial, job.trial_id, job.fingerprint, job.folder, failed=False)
        final = json.loads((job.folder / "summary.json").read_text())["test"]["f1_minority"]
        self.best = final if self.best != self.best else max(self.best, final)
        self._show()

    def failed(self, job: TrialJob, error: str) -> None:
        record_failure(job, error)
        self.running.discard(job.trial_id)
        self.report.failed.append(job.trial_id)
        self.tracker.finish_trial(job.trial, job.trial_id, job.fingerprint, job.folder, failed=True)
        self._show()

    def close(self) -> None:
        if self.tty and self.last_line:
            print()

    def _show(self) -> None:
        r = self.report
        done = len(r.finished) + len(r.failed)
        best = "-" if self.best != self.best else f"{self.best:.3f}"
        line = (
            f"[{done + r.skipped:>{len(str(r.total))}}/{r.total}] done {len(r.finished)}  "
            f"running {len(self.running)}  failed {len(r.failed)}  skipped {r.skipped}  "
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

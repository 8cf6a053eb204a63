"""Writing a sweep to MLflow: one experiment per sweep, one parent run per
invocation, one child run per trial.

With the serial, local and Ray backends only the sweep's driver writes
(trials report to it through the backend), so a SQLite store never sees
concurrent writers from one sweep; Slurm tasks write themselves, through
``TaskTracker``, each write under the store's file lock. ``NullTracker``
stands in when tracking is off.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import finalbn
from finalbn.jobs import TrialJob
from finalbn.records import FAILURE, METRICS, RecordError, Summary, disk_full, read_failure, read_json, read_metrics
from finalbn.spec import SweepSpec, flatten
from finalbn.tracking.layout import (
    COMMIT_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    FINGERPRINT_TAG,
    PARENT_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    VERSION_TAG,
    check_reachable,
    check_store,
    log_artifact,
    metric_key,
    redact,
    store_lock,
)

# Files of a trial folder worth keeping in MLflow; weights stay on disk.
ARTIFACTS = (
    "config.json",
    "manifest.parquet",
    "metrics.parquet",
    "predictions.parquet",
    "confusion.csv",
    "summary.json",
    "failure.json",
)


class Tracker(Protocol):
    def start_sweep(
        self, spec: SweepSpec, git_commit: str, pending: int, skipped: int, live: frozenset[str] = frozenset()
    ) -> None: ...
    def sync_finished(self, jobs: list[TrialJob]) -> int: ...
    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None: ...
    def discard_attempt(self, job: TrialJob) -> None: ...
    def finish_trial(self, job: TrialJob, failed: bool) -> None: ...
    def end_sweep(self, status: str, record: Path | None = None) -> None: ...
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

    def sync_finished(self, jobs: list[TrialJob]) -> int:
        return 0

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        pass

    def discard_attempt(self, job: TrialJob) -> None:
        pass

    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        pass

    def end_sweep(self, status: str, record: Path | None = None) -> None:
        pass

    def where(self) -> list[str]:
        return ["MLflow tracking: off"]


class MlflowTracker:
    """Writes through ``MlflowClient`` with explicit run ids: no global active run."""

    def __init__(self, uri: str, artifact_root: Path, thorough_check: bool = True) -> None:
        """``thorough_check``: read every page of a SQLite store before trusting it (see ``check_store``)."""
        check_reachable(uri)
        from mlflow.tracking import MlflowClient

        # MLflow's INFO lines (schema migrations of a new SQLite store) are noise here.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = uri
        with store_lock(uri):
            check_store(uri, thorough=thorough_check)
            self.client = MlflowClient(tracking_uri=uri)
        self.artifact_root = artifact_root
        self.experiment_id = ""
        self.parent_id = ""
        # Trial id -> child run id, for runs not yet terminated.
        self.children: dict[str, str] = {}

    def start_sweep(
        self, spec: SweepSpec, git_commit: str, pending: int, skipped: int, live: frozenset[str] = frozenset()
    ) -> None:
        """``live``: trials still running elsewhere (Slurm tasks), whose runs stay open."""
        self.experiment_id = self._experiment(spec.name)
        self._close_stale_runs(live)
        parent = self.client.create_run(
            self.experiment_id,
            run_name=f"{spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                SWEEP_TAG: spec.name,
                "finalbn.reproduces": spec.reproduces,
                VERSION_TAG: finalbn.__version__,
                COMMIT_TAG: git_commit,
                "finalbn.trials_total": str(spec.size()),
                "finalbn.trials_pending": str(pending),
                "finalbn.trials_skipped": str(skipped),
                "mlflow.note.content": spec.description,
            },
        )
        self.parent_id = parent.info.run_id

    def sync_finished(self, jobs: list[TrialJob]) -> int:
        """Finished trials (complete folders) whose run is not FINISHED are logged
        again from their folders: a driver killed after a trial wrote its results
        but before it closed the trial's run must not leave MLflow behind the disk."""
        logged = {
            run.data.tags.get(TRIAL_TAG)
            for run in self.client.search_runs(
                [self.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=50000
            )
        }
        missing = [job for job in jobs if job.trial_id not in logged]
        for job in missing:
            for row in read_metrics(job.folder / METRICS, job.trial_id).drop("trial_id").to_dicts():
                self.log_epoch(job, row)
            self.finish_trial(job, failed=False)
        return len(missing)

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        run_id = self._child(job)
        step = int(row["epoch"])
        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), float(v), now, step) for k, v in row.items() if k != "epoch"]
        self.client.log_batch(run_id, metrics=metrics)

    def discard_attempt(self, job: TrialJob) -> None:
        """A failed attempt that will be retried: its half-logged run goes, the retry starts clean."""
        run_id = self.children.pop(job.trial_id, None)
        if run_id is not None:
            self.client.delete_run(run_id)

    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        run_id = self._child(job)
        if not failed:
            self._log_final(run_id, job)
        for name in ARTIFACTS:
            if (job.folder / name).exists():
                self._upload(run_id, job.folder / name)
        if failed:
            # Tag values are capped; the whole traceback is in the failure.json artifact.
            self.client.set_tag(run_id, ERROR_TAG, _last_error(job)[-4000:])
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        del self.children[job.trial_id]

    def _log_final(self, run_id: str, job: TrialJob) -> None:
        """The final test metrics (nobn_* too) as ``final_*`` metrics: the runs table's columns."""
        from mlflow.entities import Metric

        try:
            final = read_json(job.folder / "summary.json", Summary).test.values()
        except RecordError:
            return
        now = int(time.time() * 1000)
        epochs = job.trial.config.train.epochs
        metrics = [Metric(metric_key(f"final_{k}"), float(v), now, epochs) for k, v in final.items()]
        self.client.log_batch(run_id, metrics=metrics)

    def end_sweep(self, status: str, record: Path | None = None) -> None:
        """Close the parent and any trial cut short (Ctrl-C, crash): none stays RUNNING.
        ``record``: the sweep's sweep.json, kept with the parent run."""
        for run_id in self.children.values():
            self.client.set_terminated(run_id, "KILLED" if status == "KILLED" else "FAILED")
        self.children.clear()
        if self.parent_id:
            try:
                if record is not None and record.exists():
                    self._upload(self.parent_id, record)
            finally:
                # A full disk under the artifact store must not leave the invocation RUNNING.
                self.client.set_terminated(self.parent_id, status)

    def _upload(self, run_id: str, path: Path) -> None:
        """``path`` as an artifact of the run; a full disk under the artifact store is the one-line error."""
        try:
            log_artifact(self.client, run_id, path)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise disk_full(self.artifact_root / path.name) from error

    def where(self) -> list[str]:
        lines = [f"MLflow: experiment id {self.experiment_id} in {redact(self.uri)}"]
        if self.uri.startswith("sqlite:"):
            lines.append(f"  open the UI: mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000")
            # MLflow 3 opens experiments on its GenAI overview; the runs table is one link away.
            lines.append(
                f"  runs (parent with one child per trial): http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs"
            )
        return lines

    def _experiment(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            experiment_id = existing.experiment_id
        else:
            location = None
            if self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri:
                location = (self.artifact_root / name).resolve().as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        # MLflow 3 opens an untagged experiment on its GenAI overview; this kind opens the runs table.
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
        return experiment_id

    def _child(self, job: TrialJob) -> str:
        if job.trial_id in self.children:
            return self.children[job.trial_id]
        # A trial that failed in an earlier invocation keeps one run: the old one goes.
        for run in self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{job.trial_id}'"
        ):
            self.client.delete_run(run.info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{job.name} [{job.trial_id}]",
            tags={
                PARENT_TAG: self.parent_id,
                TRIAL_TAG: job.trial_id,
                FINGERPRINT_TAG: job.fingerprint,
                VERSION_TAG: finalbn.__version__,
                COMMIT_TAG: job.git_commit,
            },
        )
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in flatten(job.trial.config).items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.children[job.trial_id] = run.info.run_id
        return run.info.run_id

    def task_tracking(self) -> TaskTracking:
        """What a Slurm task needs to log its trials under this invocation's parent run."""
        return TaskTracking(self.uri, self.artifact_root, self.experiment_id, self.parent_id)

    def adopt_running(self, trial_id: str) -> None:
        """Continue the trial's RUNNING run (a requeued attempt) instead of starting another."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and attributes.status = 'RUNNING'",
        )
        if runs:
            self.children[trial_id] = runs[0].info.run_id

    def _close_stale_runs(self, live: frozenset[str]) -> None:
        """Runs a killed invocation left RUNNING are marked KILLED, never left RUNNING."""
        for run in self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'"):
            if run.data.tags.get(TRIAL_TAG) not in live:
                self.client.set_terminated(run.info.run_id, "KILLED")


@dataclass(frozen=True)
class TaskTracking:
    uri: str
    artifact_root: Path
    experiment_id: str
    parent_id: str


class TaskTracker:
    """MLflow writes from inside a Slurm task, each under the store's file lock:
    many tasks share one store (a SQLite file on the shared file system), and
    SQLite's own locking gives up with "database is locked" under that load."""

    def __init__(self, tracking: TaskTracking) -> None:
        self.tracking = tracking
        # The driver that submitted this task checked every page of the store; each of many tasks need not.
        self.inner = MlflowTracker(tracking.uri, tracking.artifact_root, thorough_check=False)
        self.inner.experiment_id = tracking.experiment_id
        self.inner.parent_id = tracking.parent_id

    def resume_trial(self, job: TrialJob) -> None:
        with store_lock(self.tracking.uri):
            self.inner.adopt_running(job.trial_id)

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        with store_lock(self.tracking.uri):
            self.inner.log_epoch(job, row)

    def discard_attempt(self, job: TrialJob) -> None:
        with store_lock(self.tracking.uri):
            self.inner.discard_attempt(job)

    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        with store_lock(self.tracking.uri):
            self.inner.finish_trial(job, failed)


def task_tracker(tracking: TaskTracking | None) -> TaskTracker | None:
    return None if tracking is None else TaskTracker(tracking)


def _last_error(job: TrialJob) -> str:
    """The traceback failure.json keeps; a record that does not validate is said instead."""
    try:
        return read_failure(job.folder / FAILURE, job.trial_id).traceback
    except RecordError as error:
        return f"no traceback: {error}"

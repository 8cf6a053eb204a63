"""Writing a sweep to MLflow: one experiment per sweep, one parent run per
invocation, one child run per trial.

With the serial, local and Ray backends only the sweep's driver writes
(trials report to it through the backend), so a SQLite store never sees
concurrent writers from one sweep; Slurm tasks write themselves, through
``TaskTracker`` (``finalbn.tracking.task``), each write under the store's
file lock. ``NullTracker`` (``finalbn.tracking.tracker``, beside the
``Tracker`` protocol) stands in when tracking is off.
"""

from __future__ import annotations

import errno
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import polars as pl

import finalbn
from finalbn.errors import UserError
from finalbn.records import (
    RecordError,
    Summary,
    disk_full,
    fault_of,
    read_failure,
    read_json,
    read_metrics,
)
from finalbn.records.folders import CONFIG, CONFUSION, FAILURE, MANIFEST, METRICS, PREDICTIONS, SUMMARY
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.spec import SweepSpec
from finalbn.tracking.layout import (
    CODE_TAG,
    COMMIT_TAG,
    COUNT_TAGS,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    FINGERPRINT_TAG,
    NOTE_TAG,
    PARENT_TAG,
    RUNS_VIEW,
    RUNS_VIEW_TAG,
    SWEEP_TAG,
    TRIAL_NAME_TAG,
    TRIAL_TAG,
    VERSION_TAG,
    RunNames,
    check_reachable,
    check_store,
    final_metric,
    log_artifact,
    metric_key,
    redact,
    runs_view,
    seed_store,
    store_lock,
    trial_params,
)
from finalbn.tracking.tracker import TaskTracking

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Files of a trial folder worth keeping in MLflow; weights stay on disk.
ARTIFACTS = (CONFIG, MANIFEST, METRICS, PREDICTIONS, CONFUSION, SUMMARY, FAILURE)
# While a trial trains, the driver writes its epochs to MLflow at most this often (the UI's curves follow it
# live), the rest when it ends: a write (a SQLite commit) per epoch took ~0.7 s of the driver's time per
# 10-epoch head-only trial on two busy cores, a third of the trial's compute.
LIVE_SECONDS = 10.0

P = ParamSpec("P")
R = TypeVar("R")


def _faults(method: Callable[Concatenate[MlflowTracker, P], R]) -> Callable[Concatenate[MlflowTracker, P], R]:
    """A write that fails on a fault (finalbn.records.FAULTS: the store removed while the sweep ran, a
    read-only artifact folder) raises its one line, with the store named, instead of MLflow's traceback."""

    @functools.wraps(method)
    def guarded(self: MlflowTracker, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except UserError:
            raise
        except Exception as error:
            fault = fault_of(error, store=self.store)
            if fault is None:
                raise
            raise fault from error

    return guarded


class MlflowTracker:
    """Writes through ``MlflowClient`` with explicit run ids: no global active run."""

    def __init__(
        self, uri: str, artifact_root: Path, thorough_check: bool = True, live_seconds: float = LIVE_SECONDS
    ) -> None:
        """``thorough_check``: read every page of a SQLite store before trusting it (see ``check_store``);
        ``live_seconds``: how often a trial's epochs are written while it trains (0: each at once)."""
        check_reachable(uri)
        # An existing store is checked now, before any trial; a new one is created only when the
        # sweep first logs (``client``), so a sweep refused at planning leaves no mlruns.db behind.
        check_store(uri, thorough=thorough_check)
        self.uri = uri
        self.artifact_root = artifact_root
        # How a fault's line names the store.
        self.store = f"the MLflow store {uri.removeprefix('sqlite:///') if uri.startswith('sqlite:') else redact(uri)}"
        self.experiment_id = ""
        self.parent_id = ""
        # The invocation's parent run, made when it first has something to hold (see start_sweep).
        self._parent_run: tuple[str, dict[str, str], dict[str, str]] | None = None
        # How the children's runs are named.
        self.names = RunNames()
        # Trial id -> child run id, for runs not yet terminated.
        self.children: dict[str, str] = {}
        self.live_seconds = live_seconds
        # Trial id -> its epochs not yet written, and when its run was last written to.
        self.unwritten: dict[str, list[dict[str, float]]] = {}
        self.written_at: dict[str, float] = {}
        # Trials this invocation set out to run, and finished trials it logged again from their folders.
        self.to_run = 0
        self.relogged = 0

    @functools.cached_property
    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        # MLflow's INFO lines (schema migrations of a new SQLite store) are noise here. Its store logs each
        # database error with a traceback before raising it: the error goes on (a fault's one line, see _faults).
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        with store_lock(self.uri):
            seed_store(self.uri)
            return MlflowClient(tracking_uri=self.uri)

    @_faults
    def start_sweep(
        self, spec: SweepSpec, git_commit: str, pending: int, skipped: int, live: frozenset[str] = frozenset()
    ) -> None:
        """``live``: trials still running elsewhere (Slurm tasks), whose runs stay open.

        The parent run is made now when trials are pending (Slurm tasks and other drivers need its id
        from the start); a rerun that trains nothing makes one only if ``sync_finished`` logs a trial
        again, so reruns do not pile up empty parents; one that ends without a child is deleted
        (``end_sweep``). Its trial counts are set when it ends."""
        self.experiment_id = self._experiment(spec.name)
        self.client.set_experiment_tag(self.experiment_id, RUNS_VIEW_TAG, runs_view(spec))
        self._close_stale_runs(live)
        self.names = RunNames.of(spec)
        self.to_run = pending
        tags = {
            SWEEP_TAG: spec.name,
            "finalbn.reproduces": spec.reproduces,
            VERSION_TAG: finalbn.__version__,
            COMMIT_TAG: git_commit,
            "finalbn.trials_total": str(spec.size()),
            "finalbn.trials_to_run": str(pending),
            "finalbn.trials_skipped": str(skipped),
            NOTE_TAG: spec.description,
        }
        # The axes and their values: the parent's columns in the runs table, beside its children's params.
        axes = {axis.name: ", ".join(axis.label(i) for i in range(len(axis.values))) for axis in spec.axes}
        self._parent_run = (f"{spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}", tags, axes)
        if pending:
            self._parent()

    def _parent(self) -> str:
        if not self.parent_id and self._parent_run is not None:
            from mlflow.entities import Param

            name, tags, axes = self._parent_run
            self.parent_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in axes.items()])
        return self.parent_id

    @_faults
    def sync_finished(self, jobs: list[TrialJob], live: frozenset[str] = frozenset()) -> int:
        """Finished trials (complete folders) whose run is not FINISHED are logged
        again from their folders: a driver killed after a trial wrote its results
        but before it closed the trial's run must not leave MLflow behind the disk.
        A run still open under a live driver's parent run (``live``, as for
        ``start_sweep``) is that driver's to close, not a second run's to repeat."""
        logged = {
            run.data.tags.get(TRIAL_TAG)
            for run in self.client.search_runs(
                [self.experiment_id], filter_string="attributes.status != 'KILLED'", max_results=50000
            )
            if run.info.status == "FINISHED" or (run.info.status == "RUNNING" and _owned(run, live))
        }
        missing = [job for job in jobs if job.trial_id not in logged]
        for job in missing:
            for row in read_metrics(job.folder / METRICS, job.trial_id).drop("trial_id").to_dicts():
                self.log_epoch(job, row)
            self.finish_trial(job, failed=False)
        self.relogged += len(missing)
        return len(missing)

    @_faults
    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        run_id = self._child(job)
        self.unwritten.setdefault(job.trial_id, []).append(row)
        if time.monotonic() - self.written_at[job.trial_id] >= self.live_seconds:
            self._write_epochs(job.trial_id, run_id)

    def _write_epochs(self, trial_id: str, run_id: str) -> None:
        """The trial's epochs not yet written, in as few writes as MLflow takes."""
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [
            Metric(metric_key(k), float(v), now, int(row["epoch"]))
            for row in self.unwritten.pop(trial_id, [])
            for k, v in row.items()
            if k != "epoch"
        ]
        for first in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[first : first + MAX_METRICS_PER_BATCH])
        self.written_at[trial_id] = time.monotonic()

    @_faults
    def discard_attempt(self, job: TrialJob) -> None:
        """A failed attempt that will be retried: its half-logged run goes, the retry starts clean."""
        self.unwritten.pop(job.trial_id, None)
        run_id = self.children.pop(job.trial_id, None)
        if run_id is not None:
            self.client.delete_run(run_id)

    @_faults
    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        # Here, not at the top: matplotlib loads when a trial's pictures are drawn, not with every --help.
        from finalbn.tracking.figures import trial_figures

        run_id = self._child(job)
        self._write_epochs(job.trial_id, run_id)
        if not failed:
            self._log_final(run_id, job)
        for name in ARTIFACTS:
            if (job.folder / name).exists():
                self._upload(run_id, job.folder / name)
        # PNGs, which the UI previews, of the confusion matrix and the learning curves.
        with tempfile.TemporaryDirectory(prefix="finalbn-figures-") as scratch:
            for picture in trial_figures(job.folder, job.trial_id, Path(scratch)):
                self._upload(run_id, picture)
        if failed:
            # Tag values are capped; the whole traceback is in the failure.json artifact.
            self.client.set_tag(run_id, ERROR_TAG, _last_error(job)[-4000:])
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        del self.children[job.trial_id], self.written_at[job.trial_id]

    def _log_final(self, run_id: str, job: TrialJob) -> None:
        """The final test metrics (nobn_* too) as ``final_*`` metrics: the runs table's columns."""
        from mlflow.entities import Metric

        try:
            final = read_json(job.folder / SUMMARY, Summary).test.values()
        except RecordError:
            return
        now = int(time.time() * 1000)
        epochs = job.trial.config.train.epochs
        metrics = [Metric(final_metric(k), float(v), now, epochs) for k, v in final.items()]
        self.client.log_batch(run_id, metrics=metrics)

    @_faults
    def end_sweep(self, status: str, record: Path | None = None, summary: pl.DataFrame | None = None) -> None:
        """Close the parent and any trial cut short (Ctrl-C, crash): none stays RUNNING.
        ``record``: the sweep's sweep.json, kept with the parent run; ``summary``: the sweep's
        ``summary_table`` so far, its numbers the parent's metrics (the chart view's).

        A parent that failed or was stopped before it had a child (a crash or Ctrl-C at start-up)
        is deleted: an empty FAILED run is noise in the runs table, and the next run makes its own."""
        for trial_id, run_id in self.children.items():
            self._write_epochs(trial_id, run_id)
            self.client.set_terminated(run_id, "KILLED" if status == "KILLED" else "FAILED")
        self.children.clear()
        if not self.parent_id:
            return
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'", max_results=50000
        )
        if status != "FINISHED" and not children:
            # Ended first: restored from the trash (mlflow runs restore), it reads as what it was.
            self.client.set_terminated(self.parent_id, status)
            self.client.delete_run(self.parent_id)
            return
        from mlflow.entities import RunTag

        counts = self._counts([run.info.status for run in children])
        try:
            self.client.log_batch(self.parent_id, tags=[RunTag(COUNT_TAGS[k], str(n)) for k, n in counts.items()])
            if summary is not None:
                self._log_summary(summary)
            if record is not None and record.exists():
                self._upload(self.parent_id, record)
        finally:
            # A full disk under the artifact store must not leave the invocation RUNNING.
            self.client.set_terminated(self.parent_id, status)

    def _counts(self, statuses: list[str]) -> dict[str, int]:
        """What this invocation did with the trials it set out to run, from its children's ``statuses`` (Slurm
        tasks log theirs themselves): finished and failed ones, and the rest (cut short, or not begun)."""
        finished = statuses.count("FINISHED") - self.relogged
        failed = statuses.count("FAILED")
        return {"finished": finished, "failed": failed, "unfinished": max(0, self.to_run - finished - failed)}

    def _log_summary(self, summary: pl.DataFrame) -> None:
        """Each row of the summary table as metrics named by its group: ``minority F1/minority:4 norm:bn``."""
        from mlflow.entities import Metric

        numbers = [c for c in summary.columns if summary.schema[c].is_numeric()]
        groups = [c for c in summary.columns if c not in numbers]
        now = int(time.time() * 1000)
        metrics = []
        for row in summary.iter_rows(named=True):
            group = " ".join(f"{self.names.keys.get(c, c)}:{self.names.value(c, str(row[c]))}" for c in groups)
            metrics += [
                Metric(metric_key(f"{c}/{group}" if group else c), float(row[c]), now, 0)
                for c in numbers
                if row[c] is not None
            ]
        self.client.log_batch(self.parent_id, metrics=metrics)

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
                f"  runs (parents and one child per trial, the axes as columns): http://127.0.0.1:5000/#/experiments/"
                f"{self.experiment_id}/runs?viewStateShareKey={RUNS_VIEW}"
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
        # A trial that failed in an earlier invocation keeps one run: the old one goes. This driver holds
        # the trial's claim now; a run under another driver's live (RUNNING) parent stays that parent's.
        for run in self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{job.trial_id}'"
        ):
            parent = run.data.tags.get(PARENT_TAG, self.parent_id)
            if parent == self.parent_id or self.client.get_run(parent).info.status != "RUNNING":
                self.client.delete_run(run.info.run_id)
        # The runs table cuts names at ~30 characters: only the values that vary, the full name as description.
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.names.name(job.trial.point) or job.name,
            tags={
                PARENT_TAG: self._parent(),
                TRIAL_TAG: job.trial_id,
                TRIAL_NAME_TAG: job.name,
                NOTE_TAG: f"{job.name} (trial {job.trial_id})",
                FINGERPRINT_TAG: job.fingerprint,
                CODE_TAG: job.code.digest,
                VERSION_TAG: finalbn.__version__,
                COMMIT_TAG: job.git_commit,
            },
        )
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in trial_params(job.trial).items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.children[job.trial_id] = run.info.run_id
        self.written_at[job.trial_id] = time.monotonic()
        return run.info.run_id

    def task_tracking(self) -> TaskTracking:
        """What a Slurm task needs to log its trials under this invocation's parent run."""
        return TaskTracking(self.uri, self.artifact_root, self.experiment_id, self.parent_id, self.names)

    def adopt_running(self, trial_id: str) -> None:
        """Continue the trial's RUNNING run (a requeued attempt) instead of starting another."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and attributes.status = 'RUNNING'",
        )
        if runs:
            self.children[trial_id] = runs[0].info.run_id
            self.written_at[trial_id] = time.monotonic()

    def _close_stale_runs(self, live: frozenset[str]) -> None:
        """Runs a killed invocation left RUNNING are marked KILLED, never left RUNNING. ``live`` names
        trials (by trial id) and parent runs (by run id) that a live task or driver still owns."""
        for run in self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'"):
            if run.data.tags.get(TRIAL_TAG, run.info.run_id) not in live and not _owned(run, live):
                self.client.set_terminated(run.info.run_id, "KILLED")


def _owned(run: Run, live: frozenset[str]) -> bool:
    """Whether a trial's run is a child of a live driver's parent run: that driver closes it, also after
    the trial's claim is gone (a Ray worker releases it before its driver hears the trial finished)."""
    return run.data.tags.get(PARENT_TAG) in live


def _last_error(job: TrialJob) -> str:
    """The traceback failure.json keeps; a record that does not validate is said instead."""
    try:
        return read_failure(job.folder / FAILURE, job.trial_id).traceback
    except RecordError as error:
        return f"no traceback: {error}"

"""Reading a sweep back from MLflow, for analysis: plain Python data out, no MLflow objects.

The runs of an experiment become ``RunRecord``s (tags, params, metrics, run
id, status); artifacts are downloaded into a local folder on demand; a report
is attached to the sweep's latest parent run. Tag names are the layout's
(``finalbn.tracking.layout``), so the reader and the writer cannot drift apart.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finalbn.errors import UserError
from finalbn.tracking.layout import (
    CODE_TAG,
    COMMIT_TAG,
    ERROR_TAG,
    FINGERPRINT_TAG,
    HEADLINE_TAG,
    PARENT_TAG,
    TRIAL_NAME_TAG,
    TRIAL_TAG,
    VERSION_TAG,
    check_reachable,
    check_store,
    log_artifact,
    store_lock,
    with_unlogged_params,
)

# (trial id, file name) -> local copy of that trial's artifact, or None when it has none.
ArtifactFetcher = Callable[[str, str], Path | None]
# Tag values are capped by MLflow; a headline longer than this is cut.
TAG_LIMIT = 4000
# Where the reader points when a remote store is down: the files hold the same sweep.
FALLBACK = "pass the sweep's results folder instead"


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain data."""

    run_id: str
    name: str
    # RUNNING, FINISHED, FAILED, KILLED.
    status: str
    # Milliseconds since the epoch.
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]

    @property
    def trial_id(self) -> str | None:
        """The trial a child run belongs to; None for a parent (invocation) run."""
        return self.tags.get(TRIAL_TAG)

    @property
    def is_parent(self) -> bool:
        return PARENT_TAG not in self.tags and TRIAL_TAG not in self.tags

    @property
    def trial_name(self) -> str:
        """The trial's full name; runs logged before it was a tag: the run name without its ``[trial id]``."""
        return self.tags.get(TRIAL_NAME_TAG) or re.sub(r"\s*\[[0-9a-f]+\]$", "", self.name)

    @property
    def fingerprint(self) -> str | None:
        return self.tags.get(FINGERPRINT_TAG)

    @property
    def code_fingerprint(self) -> str | None:
        """The code on the trial's path; None for runs logged before it was a tag."""
        return self.tags.get(CODE_TAG)

    @property
    def error(self) -> str:
        """The traceback the writer kept for a failed trial, else just the status."""
        return self.tags.get(ERROR_TAG, self.status)

    @property
    def versions(self) -> dict[str, str]:
        """Code version tags under the names config.json and sweep.json use."""
        names = {VERSION_TAG: "finalbn", COMMIT_TAG: "git_commit"}
        return {key: self.tags[tag] for tag, key in names.items() if tag in self.tags}


def experiment_names(uri: str) -> list[str]:
    """Experiments in the store, sorted, without MLflow's empty "Default"."""
    return sorted(e.name for e in _client(uri).search_experiments() if e.name != "Default")


def experiment_runs(uri: str, experiment: str) -> list[RunRecord] | None:
    """Every run of ``experiment`` (parents and trials, any status); None when there is no such experiment."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs.extend(_record(run) for run in page)
        token = page.token
        if not token:
            return runs


def parent_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The sweep's invocations (runs without a parent and without a trial), newest first."""
    return sorted((r for r in runs if r.is_parent), key=lambda r: r.start_time, reverse=True)


def latest_parent_run(uri: str, experiment: str) -> str | None:
    """Run id of the sweep's most recent invocation, or None (no such experiment, or no invocation)."""
    parents = parent_runs(experiment_runs(uri, experiment) or [])
    return parents[0].run_id if parents else None


def download_artifact(uri: str, run_id: str, name: str, into: Path) -> Path | None:
    """The run's artifact ``name`` copied to ``into/name``; None when the run has no such file."""
    target = into / name
    if target.exists():
        return target
    into.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(_client(uri).download_artifacts(run_id, name, str(into)))
    except Exception:  # noqa: BLE001 - MLflow raises many types for an absent artifact
        return None
    if local != target and local.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, target)
    return target if target.exists() else None


def latest_parent_artifact(uri: str, runs: Sequence[RunRecord], name: str, into: Path) -> Path | None:
    """``name`` from the newest invocation that logged it (a running invocation logs its files at the end)."""
    for parent in parent_runs(runs):
        path = download_artifact(uri, parent.run_id, name, into / parent.run_id)
        if path is not None:
            return path
    return None


def artifact_fetcher(uri: str, run_ids: Mapping[str, str], cache: Path) -> ArtifactFetcher:
    """A fetcher of trial artifacts: trial id -> run id in ``run_ids``, each file downloaded once into ``cache``."""
    run_ids = dict(run_ids)

    def fetch(trial_id: str, name: str) -> Path | None:
        run_id = run_ids.get(trial_id)
        return download_artifact(uri, run_id, name, cache / trial_id) if run_id is not None else None

    return fetch


def log_report_files(uri: str, experiment: str, files: Mapping[str, Sequence[Path]], headline: str) -> str | None:
    """Attach ``files`` (artifact folder -> local files) and the headline tag to the sweep's latest
    parent run; its run id, or None when the experiment has no invocation to attach them to."""
    run_id = latest_parent_run(uri, experiment)
    if run_id is None:
        return None
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        for folder, paths in files.items():
            for path in paths:
                log_artifact(client, run_id, path, folder)
        client.set_tag(run_id, HEADLINE_TAG, headline[:TAG_LIMIT])
    except (OSError, MlflowException) as error:
        # The report is whole on disk; a store that will not take a copy (a full disk, a server gone) is one
        # line for the caller, never a traceback after a finished sweep.
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
        written = next((str(path.parent) for paths in files.values() for path in paths), "on disk")
        raise UserError(
            f"the report is written ({written}) but MLflow run {run_id} did not take a copy ({reason}): "
            "open it from disk, or free space under the artifact store and run python analysis/report.py again"
        ) from None
    return run_id


@functools.cache
def _client(uri: str) -> Any:
    check_reachable(uri, fallback=FALLBACK)
    from mlflow.tracking import MlflowClient

    # MLflow's INFO lines (store migrations) are noise for a reader of results.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Opening a new SQLite store migrates it: under the lock a running sweep's writer takes too.
    with store_lock(uri):
        check_store(uri)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        name=run.data.tags.get("mlflow.runName", run.info.run_name or ""),
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        tags=dict(run.data.tags),
        # A trial's run leaves out the fields its data source does not read: they are back, at their default.
        params=with_unlogged_params(run.data.params) if TRIAL_TAG in run.data.tags else dict(run.data.params),
        metrics=dict(run.data.metrics),
    )

"""A sweep read from its MLflow experiment, through ``finalbn.tracking`` (no MLflow here).

Finished child runs become one row each: params typed by the config
dataclasses, axis labels from the sweep.json the driver logged with its
parent run (never parsed out of run names), final metrics from the
``summary.json`` artifact, epochs from the ``metrics.parquet`` artifacts, each
validated as the trial folders' records are (an artifact that does not validate
is not used, and a note says so). The rows become a pyarrow table first and a
Polars frame from that: no pandas.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from finalbn import tracking
from finalbn.analysis.coerce import typed_params
from finalbn.analysis.grid import AXIS, Plan, keep_planned, missing_points, read_plan
from finalbn.analysis.sweep_data import (
    REQUIRED,
    SweepData,
    all_failed_message,
    check_columns,
    last_line,
    merge_versions,
)
from finalbn.errors import UserError
from finalbn.records import RecordError, Summary, read_metrics, read_summary
from finalbn.records.folders import METRICS, SUMMARY, SWEEP_RECORD
from finalbn.sweep.spec import SweepSpec
from finalbn.tracking import ArtifactFetcher, RunRecord

CONFIG = ("data.", "model.", "train.")


def from_mlflow(experiment: str, tracking_uri: str, spec: SweepSpec | None = None) -> SweepData:
    """One MLflow experiment (a sweep): finished child runs -> trials; their metrics.parquet -> epochs."""
    runs = _runs(experiment, tracking_uri)
    children = [r for r in runs if r.trial_id is not None]
    if not children:
        raise UserError(
            f"MLflow experiment {experiment!r} in {tracking_uri} holds no trial runs: run the sweep first "
            "(python sweeps/<experiment>.py)"
        )
    finished = [r for r in children if r.status == "FINISHED"]
    failed = {r.trial_id: last_line(r.error) for r in children if r.status in ("FAILED", "KILLED") and r.trial_id}
    if not finished:
        raise UserError(all_failed_message(experiment, failed or {"?": "no run finished"}, "the runs in the MLflow UI"))
    cache = Path(tempfile.mkdtemp(prefix="finalbn-mlflow-"))
    plan = _plan(tracking_uri, runs, cache, spec)
    fetch = tracking.artifact_fetcher(tracking_uri, {r.trial_id: r.run_id for r in finished if r.trial_id}, cache)
    table, unread = _trials_table(finished, plan, fetch, experiment)
    trials, notes = keep_planned(table, plan, experiment)
    epochs, unread_epochs = _epochs(trials, fetch)
    return SweepData(
        name=experiment,
        trials=trials,
        epochs=epochs,
        source=f"MLflow experiment {experiment} at {tracking_uri}",
        plan=plan,
        failed={k: v for k, v in failed.items() if k not in set(trials["trial_id"].to_list())},
        missing=missing_points(trials, plan),
        versions=merge_versions(plan.code, [r.versions for r in finished]),
        notes=notes + unread + unread_epochs,
        tracking_uri=tracking_uri,
        fetch=fetch,
    )


def _runs(experiment: str, uri: str) -> list[RunRecord]:
    runs = tracking.experiment_runs(uri, experiment)
    if runs is None:
        known = tracking.experiment_names(uri)
        hint = f"known experiments: {', '.join(known)}" if known else "it holds no experiments yet"
        raise UserError(
            f"unknown MLflow experiment {experiment!r} in {uri} ({hint}): check --experiment and --tracking-uri"
        )
    return runs


def _plan(uri: str, runs: list[RunRecord], cache: Path, spec: SweepSpec | None) -> Plan:
    """The sweep.json of the newest invocation that logged one; without it, generic (or ``spec``)."""
    path = tracking.latest_parent_artifact(uri, runs, SWEEP_RECORD, cache / "sweep")
    return read_plan(path.parent, spec) if path is not None else Plan.of(None, spec)


def _trials_table(
    finished: list[RunRecord], plan: Plan, fetch: ArtifactFetcher, experiment: str
) -> tuple[pl.DataFrame, list[str]]:
    """One row per finished run, and a note for each summary.json artifact that does not validate."""
    records, notes = [], []
    for run in finished:
        record, note = _trial_record(run, plan, fetch)
        records.append(record)
        notes += [note] if note else []
    # pyarrow takes the columns from the first record: give every record every key
    # (a no-final-BN trial has no nobn_* metrics).
    keys = list(dict.fromkeys(key for record in records for key in record))
    trials = pl.DataFrame(pl.from_arrow(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])))
    check_columns(trials, REQUIRED, f"MLflow experiment {experiment!r}")
    return trials, notes


def _trial_record(run: RunRecord, plan: Plan, fetch: ArtifactFetcher) -> tuple[dict[str, Any], str | None]:
    trial_id = run.trial_id or ""
    record: dict[str, Any] = {
        "trial_id": trial_id,
        "trial_name": run.trial_name,
        "dataset_fingerprint": run.fingerprint,
        **plan.labels(trial_id),
        **typed_params(run.params),
    }
    summary, note = _summary(fetch, trial_id)
    # What else a trial's numbers depend on, as trials.parquet holds it (finalbn.sweep.tables).
    record["code_fingerprint"] = run.code_fingerprint
    record["precision"] = None if summary is None else summary.precision
    record["threads"] = None if summary is None or summary.threads is None else summary.threads.torch
    if summary is not None:
        record["seconds"] = summary.seconds
        record.update(summary.test.values())
    else:
        # Without a valid summary artifact: the last epoch's test metrics are the final model's.
        record.update({k.removeprefix("test_"): v for k, v in run.metrics.items() if k.startswith("test_")})
        record.pop("loss", None)
    return record, note


def _summary(fetch: ArtifactFetcher, trial_id: str) -> tuple[Summary | None, str | None]:
    """The run's summary.json, validated; None (and why, when it was there) otherwise."""
    path = fetch(trial_id, SUMMARY)
    if path is None:
        return None, None
    try:
        return read_summary(path, trial_id), None
    except RecordError as error:
        return None, f"trial {trial_id}: {error}; its final metrics are the last epoch's logged in MLflow"


def _epochs(trials: pl.DataFrame, fetch: ArtifactFetcher) -> tuple[pl.DataFrame | None, list[str]]:
    """Every trial's metrics.parquet artifact, validated, with its row's labels; a note for each one left out."""
    config_columns = [c for c in trials.columns if c.startswith((AXIS, *CONFIG))]
    frames, notes = [], []
    for row in trials.select("trial_id", "trial_name", "dataset_fingerprint", *config_columns).iter_rows(named=True):
        path = fetch(row["trial_id"], METRICS)
        if path is None:
            continue
        try:
            metrics = read_metrics(path, row["trial_id"])
        except RecordError as error:
            notes.append(f"trial {row['trial_id']}: {error}; left out of the epoch curves")
            continue
        extra = {k: v for k, v in row.items() if k != "trial_id"}
        frames.append(metrics.with_columns(**{k: pl.lit(v) for k, v in extra.items()}))
    return (pl.concat(frames, how="diagonal_relaxed") if frames else None), notes

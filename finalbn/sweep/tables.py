"""The sweep's Parquet tables, rebuilt from its trial folders."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finalbn.records import RecordError, read_finished, write_parquet
from finalbn.records.folders import EPOCHS_TABLE, TRIALS_TABLE
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import is_finished
from finalbn.sweep.spec import SweepSpec, flatten


def write_tables(folder: Path, jobs: list[TrialJob]) -> None:
    """``epochs.parquet``: one row per finished trial x epoch with config columns;
    ``trials.parquet``: one row per finished trial with its final test metrics
    (``nobn_*``: final BN removed), and what else its numbers depend on: the
    fingerprint of the code on its path (several values: the sweep mixes code
    versions, kept with --keep-stale), its precision and CPU threads (null:
    not recorded when it ran). Rebuilt from the trial folders every time,
    so they never hold a duplicate or a trial of another grid, and only from
    records that validate."""
    epochs, finals = [], []
    for job in jobs:
        if not is_finished(job):
            continue
        try:
            trial = read_finished(job.folder, job.trial_id, job.trial.config.train.epochs)
        except RecordError as error:
            # Damaged since this invocation checked (a live Slurm task, another driver): the next one sets it aside.
            print(f"trial {job.trial_id}: left out of the tables ({error}); the next run sets it aside and reruns it")
            continue
        columns = _config_columns(job)
        epochs.append(trial.metrics.with_columns(**{k: pl.lit(v) for k, v in columns.items()}))
        summary, code = trial.summary, trial.record.code
        finals.append(
            {
                "trial_id": job.trial_id,
                **columns,
                "code_fingerprint": None if code is None else code.fingerprint,
                "precision": summary.precision,
                "threads": None if summary.threads is None else summary.threads.torch,
                "seconds": summary.seconds,
                **summary.test.values(),
            }
        )
    if not epochs:
        return
    write_parquet(folder / EPOCHS_TABLE, pl.concat(epochs, how="diagonal_relaxed"))
    write_parquet(folder / TRIALS_TABLE, pl.DataFrame(finals, infer_schema_length=None))


def summary_table(folder: Path, spec: SweepSpec) -> pl.DataFrame | None:
    """Test minority/majority F1 per value of the scientific axes, over seeds and
    other nuisance axes: the sweep's answer at a glance (analysis/ goes further)."""
    path = folder / TRIALS_TABLE
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
    return {"trial_name": job.name, "dataset_fingerprint": job.fingerprint, **point, **config}

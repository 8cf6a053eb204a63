"""Reading a sweep: its folder, a Parquet file, or (``mlflow_source``) an MLflow experiment -> ``SweepData``.

A folder's ``sweep.json`` says what the sweep was (experiment, report
section, planned grid, code version); without one the sweep is analysed as
"generic" with the axis columns its table carries. Nothing is inferred from
folder names.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finalbn.analysis.grid import Plan, keep_planned, missing_points, read_plan
from finalbn.analysis.mlflow_source import from_mlflow
from finalbn.analysis.sweep_data import (
    REQUIRED,
    SweepData,
    all_failed_message,
    check_columns,
    last_line,
    merge_versions,
)
from finalbn.errors import UserError
from finalbn.records import RecordError, TrialRecord, read_failure, read_json
from finalbn.records.folders import CONFIG, EPOCHS_TABLE, FAILURE, SUMMARY, TRIALS, TRIALS_TABLE
from finalbn.sweep.spec import SweepSpec

__all__ = ["SweepData", "from_folder", "from_mlflow", "from_parquet", "load_sweep", "trials_from_epochs"]


def load_sweep(
    source: str | Path | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    spec: SweepSpec | None = None,
) -> SweepData:
    """A sweep folder, a ``trials.parquet``/``epochs.parquet`` path, or (``experiment``) an MLflow experiment."""
    if experiment is not None:
        if tracking_uri is None:
            raise UserError(f"reading experiment {experiment!r} needs a tracking URI: pass --tracking-uri")
        return from_mlflow(experiment, tracking_uri, spec=spec)
    if source is None:
        raise UserError("nothing to analyse: pass a sweep folder (results/NAME), a Parquet path or --experiment NAME")
    path = Path(source)
    if path.is_dir():
        return from_folder(path, spec=spec)
    if path.suffix == ".parquet":
        return from_parquet(path, spec=spec)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a sweep folder (results/NAME) or its {TRIALS_TABLE}")
    raise UserError(f"{path} is neither a sweep folder nor a .parquet file: pass results/NAME or its {TRIALS_TABLE}")


def from_folder(folder: Path, spec: SweepSpec | None = None) -> SweepData:
    """``results/<sweep>/``: sweep.json, trials.parquet, epochs.parquet and the trial folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"sweep folder {folder} does not exist: pass results/<sweep name> of a sweep that ran, "
            "or --experiment NAME to read MLflow"
        )
    failed = _failed_trials(folder / TRIALS)
    path = folder / TRIALS_TABLE
    if not path.exists():
        if failed:
            raise UserError(all_failed_message(folder.name, failed, f"{folder}/{TRIALS}/<id>/{FAILURE}"))
        raise UserError(
            f"{folder} holds no {TRIALS_TABLE}, so no trial of it finished: run the sweep "
            "(python sweeps/<experiment>.py) or pass the results/<sweep name> folder of one that did"
        )
    plan = read_plan(folder, spec)
    data = _from_tables(path, folder / EPOCHS_TABLE, folder.name, f"folder {folder}", plan, failed)
    data.folder = folder
    versions, unread = _trial_versions(folder, data.trials["trial_id"].to_list())
    data.versions = merge_versions(plan.code, versions)
    data.notes += unread
    return data


def from_parquet(path: Path, spec: SweepSpec | None = None) -> SweepData:
    """A ``trials.parquet`` (or ``epochs.parquet``); beside its sweep folder it is read as that folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass the {TRIALS_TABLE} of a sweep that finished")
    tables = path.name in (TRIALS_TABLE, EPOCHS_TABLE)
    if (path.parent / TRIALS).is_dir() and tables:
        return from_folder(path.parent, spec=spec)
    # A table copied out with its sweep.json keeps its plan; a bare one is generic.
    plan = read_plan(path.parent, spec) if tables else Plan.of(None, spec)
    name = path.parent.name if tables else path.stem
    if path.name == EPOCHS_TABLE or "epoch" in _parquet_columns(path):
        epochs = _read_parquet(path)
        data = _with_plan(SweepData(name, trials_from_epochs(epochs), epochs, f"parquet {path}"), plan)
    else:
        data = _from_tables(path, path.with_name(EPOCHS_TABLE), name, f"parquet {path}", plan, {})
    data.versions = merge_versions(plan.code, [])
    return data


def trials_from_epochs(epochs: pl.DataFrame) -> pl.DataFrame:
    """One row per trial from its last epoch, ``test_<metric>`` renamed ``<metric>`` (as in trials.parquet)."""
    check_columns(epochs, ("trial_id", "epoch", "test_f1_minority", "test_f1_majority"), "epochs table")
    last = epochs.sort("epoch").group_by("trial_id", maintain_order=True).last()
    renames = {c: c.removeprefix("test_") for c in last.columns if c.startswith("test_") and c != "test_loss"}
    return last.drop([c for c in last.columns if c.startswith("val_")] + ["epoch"]).rename(renames)


def _from_tables(
    trials_path: Path, epochs_path: Path, name: str, source: str, plan: Plan, failed: dict[str, str]
) -> SweepData:
    trials = _read_parquet(trials_path)
    if trials.height == 0:
        if failed:
            raise UserError(all_failed_message(name, failed, f"the trial folders' {FAILURE}"))
        raise UserError(f"{trials_path} has no rows: no trial finished; run the sweep first")
    check_columns(trials, REQUIRED, str(trials_path))
    epochs = _read_parquet(epochs_path) if epochs_path.exists() else None
    return _with_plan(SweepData(name, trials, epochs, source, failed=failed), plan)


def _with_plan(data: SweepData, plan: Plan) -> SweepData:
    data.trials, data.notes = keep_planned(data.trials, plan, data.name)
    if data.epochs is not None and data.notes:
        data.epochs = data.epochs.filter(pl.col("trial_id").is_in(data.trials["trial_id"].to_list()))
    data.plan = plan
    data.missing = missing_points(data.trials, plan)
    return data


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path} as Parquet ({first}): pass a sweep's {TRIALS_TABLE}") from None


def _parquet_columns(path: Path) -> list[str]:
    try:
        return list(pl.read_parquet_schema(path))
    except (OSError, pl.exceptions.PolarsError):
        return []


def _failed_trials(trials_dir: Path) -> dict[str, str]:
    """Trial folders with a failure.json and no summary.json: every attempt failed."""
    failed: dict[str, str] = {}
    if not trials_dir.is_dir():
        return failed
    for folder in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        if (folder / FAILURE).exists() and not (folder / SUMMARY).exists():
            try:
                failed[folder.name] = last_line(read_failure(folder / FAILURE, folder.name).traceback)
            except RecordError as error:
                failed[folder.name] = f"no traceback: {error}"
    return failed


def _trial_versions(folder: Path, trial_ids: list[str]) -> tuple[list[dict[str, str]], list[str]]:
    """Each finished trial's config.json versions (finalbn, torch, python, git_commit), and a note for
    each config.json that does not validate."""
    found, unread = [], []
    for trial_id in trial_ids:
        path = folder / TRIALS / trial_id / CONFIG
        if not path.exists():
            continue
        try:
            found.append(read_json(path, TrialRecord).versions)
        except RecordError as error:
            unread.append(f"trial {trial_id}: code versions unknown ({error})")
    return found, unread

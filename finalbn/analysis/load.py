"""A finished (or partial) sweep as Polars tables, from its folder, a Parquet file or MLflow.

Whatever the source, the result is one ``SweepData``: ``trials`` (one row per
finished trial: config columns such as ``data.train_minority``, readable
``axis.<name>`` labels, final test metrics, ``nobn_*``), ``epochs`` (one row
per trial x epoch, when available), what failed or is missing, and where the
code version came from. MLflow runs become a pyarrow table first and a Polars
frame from that: no pandas in the path.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.errors import UserError
from finalbn.spec import SweepSpec
from finalbn.tracking import check_reachable

# Columns every analysis needs; a table without them is not a finalbn sweep table.
REQUIRED = ("trial_id", "f1_minority", "f1_majority")
AXIS = "axis."
# Axes averaged over rather than studied, when no spec says which are which.
NUISANCE = ("train.seed", "data.split_seed")
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
# Child-run tag the sweep's tracker sets (finalbn.tracking.TRIAL_TAG); repeated
# so reading MLflow does not import the tracker.
TRIAL_TAG = "finalbn.trial_id"
PARENT_TAG = "mlflow.parentRunId"

ArtifactFetcher = Callable[[str, str], Path | None]


@dataclass
class SweepData:
    """Everything the analyses read about one sweep."""

    name: str
    trials: pl.DataFrame
    epochs: pl.DataFrame | None
    # Human-readable origin: a folder, a Parquet file, or an MLflow experiment.
    source: str
    folder: Path | None = None
    spec: SweepSpec | None = None
    # Trial ids whose every attempt failed, with the last line of the error.
    failed: dict[str, str] = field(default_factory=dict)
    # Grid points (axis name -> label) with no finished trial.
    missing: list[dict[str, str]] = field(default_factory=list)
    # Code and library versions the trials ran with, by kind ("finalbn", "git_commit", ...).
    versions: dict[str, list[str]] = field(default_factory=dict)
    tracking_uri: str | None = None
    fetch: ArtifactFetcher | None = None

    def trial_file(self, trial_id: str, name: str) -> Path | None:
        """A file of a trial's result folder (``predictions.parquet``, ``config.json``), if reachable."""
        if self.folder is not None:
            path = self.folder / "trials" / trial_id / name
            if path.exists():
                return path
        return self.fetch(trial_id, name) if self.fetch is not None else None

    def predictions(self, trial_id: str) -> pl.DataFrame | None:
        path = self.trial_file(trial_id, "predictions.parquet")
        return pl.read_parquet(path) if path is not None else None

    def config(self, trial_id: str) -> TrialConfig:
        path = self.trial_file(trial_id, "config.json")
        if path is not None:
            raw = json.loads(path.read_text())
            return TrialConfig.from_dict(raw.get("config", raw))
        row = self.trials.filter(pl.col("trial_id") == trial_id)
        if row.height == 0:
            raise UserError(f"trial {trial_id} is not in sweep {self.name}: pick one of its trial ids")
        return config_from_row(row.row(0, named=True))

    def axes(self) -> list[str]:
        """``axis.*`` columns in declared order (spec) or table order."""
        present = [c for c in self.trials.columns if c.startswith(AXIS)]
        if self.spec is None:
            return present
        declared = [AXIS + a.name for a in self.spec.axes]
        return [c for c in declared if c in present] + [c for c in present if c not in declared]

    def scientific_axes(self) -> list[str]:
        """Axis columns studied (not seeds, not fixed), with more than one value present."""
        roles = {AXIS + a.name: a.role for a in self.spec.axes} if self.spec else {}
        chosen = []
        for column in self.axes():
            role = roles.get(column, "nuisance" if column.removeprefix(AXIS) in NUISANCE else "scientific")
            if role == "scientific" and self.trials[column].n_unique() > 1:
                chosen.append(column)
        return chosen

    def nuisance_axes(self) -> list[str]:
        roles = {AXIS + a.name: a.role for a in self.spec.axes} if self.spec else {}
        return [
            c
            for c in self.axes()
            if roles.get(c, "nuisance" if c.removeprefix(AXIS) in NUISANCE else "scientific") == "nuisance"
        ]

    def label_order(self, column: str) -> list[str]:
        """Values of an axis column in declared order, else numeric-aware sorted."""
        present = [v for v in self.trials[column].unique().to_list() if v is not None]
        if self.spec is not None:
            for axis in self.spec.axes:
                if AXIS + axis.name == column:
                    declared = [axis.label(i) for i in range(len(axis.values))]
                    return [v for v in declared if v in present] + sorted(v for v in present if v not in declared)
        return natural_sorted(present)


def natural_sorted(values: list[Any]) -> list[Any]:
    """Numbers by value ("8" < "16"), everything else as text."""

    def key(value: Any) -> tuple[int, float, str]:
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    return sorted(values, key=key)


# ----------------------------------------------------------------- entry point


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
        raise UserError(f"{path} does not exist: pass a sweep folder (results/NAME) or its trials.parquet")
    raise UserError(f"{path} is neither a sweep folder nor a .parquet file: pass results/NAME or its trials.parquet")


# ---------------------------------------------------------------- from files


def from_folder(folder: Path, spec: SweepSpec | None = None) -> SweepData:
    """``results/<sweep>/``: trials.parquet, epochs.parquet and the trial folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"sweep folder {folder} does not exist: pass results/<sweep name> of a sweep that ran, "
            "or --experiment NAME to read MLflow"
        )
    failed = _failed_trials(folder / "trials")
    path = folder / "trials.parquet"
    if not path.exists():
        if failed:
            raise UserError(_all_failed_message(folder.name, failed, f"{folder}/trials/<id>/failure.json"))
        raise UserError(
            f"{folder} holds no trials.parquet, so no trial of it finished: run the sweep "
            "(python sweeps/<experiment>.py) or pass the results/<sweep name> folder of one that did"
        )
    data = _from_tables(path, folder / "epochs.parquet", folder.name, f"folder {folder}", spec, failed)
    data.folder = folder
    data.versions = _folder_versions(folder, data.trials["trial_id"].to_list())
    return data


def from_parquet(path: Path, spec: SweepSpec | None = None) -> SweepData:
    """A ``trials.parquet`` (or ``epochs.parquet``); beside its sweep folder it is read as that folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass the trials.parquet of a sweep that finished")
    if (path.parent / "trials").is_dir() and path.name in ("trials.parquet", "epochs.parquet"):
        return from_folder(path.parent, spec=spec)
    if path.name == "epochs.parquet" or "epoch" in _parquet_columns(path):
        epochs = _read_parquet(path)
        trials = trials_from_epochs(epochs)
        data = SweepData(name=_sweep_name(path), trials=trials, epochs=epochs, source=f"parquet {path}", spec=spec)
        _attach_spec(data)
    else:
        data = _from_tables(path, path.with_name("epochs.parquet"), _sweep_name(path), f"parquet {path}", spec, {})
    return data


def _from_tables(
    trials_path: Path,
    epochs_path: Path,
    name: str,
    source: str,
    spec: SweepSpec | None,
    failed: dict[str, str],
) -> SweepData:
    trials = _read_parquet(trials_path)
    if trials.height == 0:
        if failed:
            raise UserError(_all_failed_message(name, failed, "the trial folders' failure.json"))
        raise UserError(f"{trials_path} has no rows: no trial finished; run the sweep first")
    check_columns(trials, REQUIRED, str(trials_path))
    epochs = _read_parquet(epochs_path) if epochs_path.exists() else None
    data = SweepData(name=name, trials=trials, epochs=epochs, source=source, spec=spec, failed=failed)
    _attach_spec(data)
    return data


def trials_from_epochs(epochs: pl.DataFrame) -> pl.DataFrame:
    """One row per trial from its last epoch, ``test_<metric>`` renamed ``<metric>`` (as in trials.parquet)."""
    check_columns(epochs, ("trial_id", "epoch", "test_f1_minority", "test_f1_majority"), "epochs table")
    last = epochs.sort("epoch").group_by("trial_id", maintain_order=True).last()
    renames = {c: c.removeprefix("test_") for c in last.columns if c.startswith("test_") and c != "test_loss"}
    return last.drop([c for c in last.columns if c.startswith("val_")] + ["epoch"]).rename(renames)


def check_columns(frame: pl.DataFrame, columns: typing.Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{what} has no column {', '.join(repr(c) for c in missing)}: it is not a finalbn sweep table "
            "(or one from an older version); rerun the sweep or pass its results/<sweep name> folder"
        )


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path} as Parquet ({first}): pass a sweep's trials.parquet") from None


def _parquet_columns(path: Path) -> list[str]:
    try:
        return list(pl.read_parquet_schema(path))
    except (OSError, pl.exceptions.PolarsError):
        return []


def _sweep_name(path: Path) -> str:
    return path.parent.name if path.stem in ("trials", "epochs") else path.stem


def _failed_trials(trials_dir: Path) -> dict[str, str]:
    """Trial folders with a failure.json and no summary.json: every attempt failed."""
    failed = {}
    if not trials_dir.is_dir():
        return failed
    for folder in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        record = folder / "failure.json"
        if record.exists() and not (folder / "summary.json").exists():
            failed[folder.name] = _last_line(json.loads(record.read_text()).get("traceback", ""))
    return failed


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no traceback recorded"


def _all_failed_message(name: str, failed: dict[str, str], where: str) -> str:
    first = next(iter(failed.values()))
    return (
        f"all {len(failed)} trials of sweep {name} failed (first error: {first}): "
        f"see {where}, fix the cause and rerun the sweep"
    )


def _folder_versions(folder: Path, trial_ids: list[str]) -> dict[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for trial_id in trial_ids:
        path = folder / "trials" / trial_id / "config.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        for key, value in {**record.get("versions", {}), **_commit(record)}.items():
            seen.setdefault(key, set()).add(str(value))
    return {k: sorted(v) for k, v in seen.items()}


def _commit(record: dict[str, Any]) -> dict[str, str]:
    # Newer trial folders may record the git commit; older ones do not.
    value = record.get("git_commit") or record.get("versions", {}).get("git_commit")
    return {"git_commit": value} if value else {}


# ---------------------------------------------------------------- the grid


def _attach_spec(data: SweepData) -> None:
    """Find the declared grid (given, or rebuilt from the sweep's name) and list what is missing."""
    if data.spec is None:
        data.spec = spec_from_name(data.name, data.trials)
    if data.spec is not None and not _spec_matches(data.spec, data.trials):
        data.spec = None
    data.missing = missing_points(data)


def spec_from_name(name: str, trials: pl.DataFrame) -> SweepSpec | None:
    """``imbalance_ratio-laptop`` -> that experiment's declared sweep, when the name is one of ours."""
    from finalbn.experiments import EXPERIMENTS, PRESETS, build_sweeps

    parts = name.split("-")
    if len(parts) < 2 or parts[1] not in PRESETS:
        return None
    experiment = {"mnist_cnn": "mnist", "mnist_fc": "mnist"}.get(parts[0], parts[0])
    if experiment not in EXPERIMENTS:
        return None
    # The paper presets and laptop-on-PlantVillage record their data root; embedded MNIST has none.
    root = None
    if "data.root" in trials.columns:
        roots = [r for r in trials["data.root"].unique().to_list() if r]
        root = roots[0] if len(roots) == 1 else None
    try:
        specs = build_sweeps(experiment, parts[1], root)
    except UserError:
        return None
    return next((s for s in specs if s.name == name), None)


def _spec_matches(spec: SweepSpec, trials: pl.DataFrame) -> bool:
    """The declared axes are the table's axes (a sweep of an older grid is analysed without its spec)."""
    declared = {AXIS + a.name for a in spec.axes}
    present = {c for c in trials.columns if c.startswith(AXIS)}
    return declared == present


def missing_points(data: SweepData) -> list[dict[str, str]]:
    """Grid points without a finished trial: planned by the spec, else the product of the labels seen."""
    axes = data.axes()
    if not axes:
        return []
    present = {tuple(str(v) for v in row) for row in data.trials.select(axes).iter_rows()}
    if data.spec is not None:
        planned = [tuple(t.point[c.removeprefix(AXIS)] for c in axes) for t in data.spec.trials()]
    else:
        planned = list(itertools.product(*(data.label_order(c) for c in axes)))
    return [
        {c.removeprefix(AXIS): v for c, v in zip(axes, point, strict=True)}
        for point in planned
        if tuple(map(str, point)) not in present
    ]


def config_from_row(row: dict[str, Any]) -> TrialConfig:
    """Rebuild a trial's config from its flattened ``section.field`` columns."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in row.items():
        section, _, name = key.partition(".")
        if section in SECTIONS and name in _FIELD_TYPES.get(section, {}):
            kind = _FIELD_TYPES[section][name]
            if kind is tuple:
                value = tuple(str(value).split(",")) if value not in (None, "") else ()
            sections[section][name] = value
    return TrialConfig.from_dict(sections)


def _field_types() -> dict[str, dict[str, type]]:
    types_: dict[str, dict[str, type]] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        types_[section] = {f.name: _plain(hints[f.name]) for f in dataclasses.fields(cls)}
    return types_


def _plain(hint: Any) -> type:
    """``str | None`` -> str, ``tuple[str, ...]`` -> tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


_FIELD_TYPES = _field_types()


# ------------------------------------------------------------------- MLflow


def from_mlflow(experiment: str, tracking_uri: str, spec: SweepSpec | None = None) -> SweepData:
    """One MLflow experiment (a sweep): finished child runs -> trials; their metrics.parquet -> epochs."""
    check_reachable(tracking_uri, fallback="pass the sweep's results folder instead")
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        hint = f"known experiments: {', '.join(known)}" if known else "it holds no experiments yet"
        raise UserError(
            f"unknown MLflow experiment {experiment!r} in {tracking_uri} ({hint}): "
            "check --experiment and --tracking-uri"
        )
    runs = _all_runs(client, found.experiment_id)
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    if not children:
        raise UserError(
            f"MLflow experiment {experiment!r} in {tracking_uri} holds no trial runs: run the sweep first "
            "(python sweeps/<experiment>.py)"
        )
    finished = [r for r in children if r.info.status == "FINISHED"]
    failed = {
        r.data.tags[TRIAL_TAG]: _last_line(r.data.tags.get("finalbn.error", r.info.status))
        for r in children
        if r.info.status in ("FAILED", "KILLED")
    }
    if not finished:
        raise UserError(
            _all_failed_message(experiment, failed or {"?": "no run finished"}, "the runs in the MLflow UI")
        )
    cache = Path(tempfile.mkdtemp(prefix="finalbn-mlflow-"))
    fetch = _artifact_fetcher(client, {r.data.tags[TRIAL_TAG]: r.info.run_id for r in finished}, cache)
    records = [_trial_record(run, fetch) for run in finished]
    # pyarrow takes the columns from the first record: give every record every key
    # (a no-final-BN trial has no nobn_* metrics).
    keys = list(dict.fromkeys(key for record in records for key in record))
    trials = pl.from_arrow(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]))
    check_columns(trials, REQUIRED, f"MLflow experiment {experiment!r}")
    data = SweepData(
        name=experiment,
        trials=trials,
        epochs=_mlflow_epochs(trials, fetch),
        source=f"MLflow experiment {experiment} at {tracking_uri}",
        spec=spec,
        failed={k: v for k, v in failed.items() if k not in set(trials["trial_id"].to_list())},
        tracking_uri=tracking_uri,
        fetch=fetch,
    )
    data.versions = _mlflow_versions(finished)
    _attach_spec(data)
    return data


def latest_parent_run(tracking_uri: str, experiment: str) -> str | None:
    """Run id of the sweep's most recent invocation (a run without a parent), or None."""
    check_reachable(tracking_uri, fallback="pass the sweep's results folder instead")
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    parents = [r for r in _all_runs(client, found.experiment_id) if PARENT_TAG not in r.data.tags]
    parents = [r for r in parents if TRIAL_TAG not in r.data.tags]
    return max(parents, key=lambda r: r.info.start_time).info.run_id if parents else None


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    # MLflow's INFO lines (store migrations) are noise for a reader of results.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri)


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _artifact_fetcher(client: Any, run_ids: dict[str, str], cache: Path) -> ArtifactFetcher:
    def fetch(trial_id: str, name: str) -> Path | None:
        run_id = run_ids.get(trial_id)
        if run_id is None:
            return None
        target = cache / trial_id / name
        if target.exists():
            return target
        try:
            local = Path(client.download_artifacts(run_id, name, str(cache / trial_id)))
        except Exception:  # noqa: BLE001 - MLflow raises many types for an absent artifact
            return None
        if local != target and local.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local, target)
        return target if target.exists() else None

    return fetch


def _trial_record(run: Any, fetch: ArtifactFetcher) -> dict[str, Any]:
    trial_id = run.data.tags[TRIAL_TAG]
    params = _typed_params(run.data.params)
    name = run.data.tags.get("mlflow.runName", run.info.run_name or "")
    record: dict[str, Any] = {
        "trial_id": trial_id,
        "trial_name": re.sub(r"\s*\[[0-9a-f]+\]$", "", name),
        "dataset_fingerprint": run.data.tags.get("finalbn.dataset_fingerprint"),
        **_axis_labels(name, params),
        **params,
    }
    summary_path = fetch(trial_id, "summary.json")
    if summary_path is not None:
        summary = json.loads(summary_path.read_text())
        record["seconds"] = summary.get("seconds")
        record.update(summary.get("test", {}))
    else:
        # Without the summary artifact: the last epoch's test metrics are the final model's.
        metrics = run.data.metrics
        record.update({k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")})
        record.pop("loss", None)
    return record


def _typed_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow keeps params as text; give each the type of its config field."""
    typed: dict[str, Any] = {}
    for key, text in params.items():
        section, _, name = key.partition(".")
        kind = _FIELD_TYPES.get(section, {}).get(name, str)
        if text == "None":
            typed[key] = None
        elif kind is bool:
            typed[key] = text == "True"
        elif kind in (int, float):
            typed[key] = kind(text)
        else:
            typed[key] = text
    return typed


def _axis_labels(run_name: str, params: dict[str, Any]) -> dict[str, str]:
    """``train_minority=3 final_norm=bn seed=0`` -> ``axis.data.train_minority`` etc., as the folder tables hold."""
    labels = {}
    for token in re.sub(r"\s*\[[0-9a-f]+\]$", "", run_name).split():
        short, sep, label = token.partition("=")
        if not sep:
            continue
        full = next((k for k in params if k.endswith("." + short)), short)
        labels[AXIS + full] = label
    return labels


def _mlflow_epochs(trials: pl.DataFrame, fetch: ArtifactFetcher) -> pl.DataFrame | None:
    config_columns = [c for c in trials.columns if c.startswith((AXIS, "data.", "model.", "train."))]
    frames = []
    for row in trials.select("trial_id", "trial_name", "dataset_fingerprint", *config_columns).iter_rows(named=True):
        path = fetch(row["trial_id"], "metrics.parquet")
        if path is None:
            continue
        extra = {k: v for k, v in row.items() if k != "trial_id"}
        frames.append(pl.read_parquet(path).with_columns(**{k: pl.lit(v) for k, v in extra.items()}))
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def _mlflow_versions(runs: list[Any]) -> dict[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for run in runs:
        for tag, key in (("finalbn.version", "finalbn"), ("finalbn.git_commit", "git_commit")):
            if tag in run.data.tags:
                seen.setdefault(key, set()).add(run.data.tags[tag])
    return {k: sorted(v) for k, v in seen.items()}

"""``SweepData``: one finished (or partial) sweep as Polars tables, whatever it was read from.

``trials`` holds one row per finished trial (config columns such as
``data.train_minority``, readable ``axis.<name>`` labels, final test metrics,
``nobn_*``), ``epochs`` one row per trial x epoch when available; beside them
the sweep's plan (``grid.Plan``), what failed or is missing, and the code
versions. The readers are ``load`` (folders, Parquet) and ``mlflow_source``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from finalbn.analysis.coerce import config_from_row
from finalbn.analysis.grid import AXIS, Plan
from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.records import RecordError, TrialRecord, read_json, read_predictions
from finalbn.records.folders import CONFIG, PREDICTIONS, TRIALS
from finalbn.sweep.spec import SweepSpec
from finalbn.tracking import ArtifactFetcher

# Columns every analysis needs; a table without them is not a finalbn sweep table.
REQUIRED = ("trial_id", "f1_minority", "f1_majority")
# Axes averaged over rather than studied, when no spec says which are which.
NUISANCE = ("train.seed", "data.split_seed")


@dataclass
class SweepData:
    """Everything the analyses read about one sweep."""

    name: str
    trials: pl.DataFrame
    epochs: pl.DataFrame | None
    # Human-readable origin: a folder, a Parquet file, or an MLflow experiment.
    source: str
    folder: Path | None = None
    plan: Plan = field(default_factory=Plan)
    # Trial ids whose every attempt failed, with the last line of the error.
    failed: dict[str, str] = field(default_factory=dict)
    # Planned grid points (axis name -> label) with no finished trial.
    missing: list[dict[str, str]] = field(default_factory=list)
    # Code and library versions the sweep and its trials ran with, by kind ("finalbn", "git_commit", ...).
    versions: dict[str, list[str]] = field(default_factory=dict)
    # What the reader left out or could not tell, one line each, for the report.
    notes: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    fetch: ArtifactFetcher | None = None

    @property
    def spec(self) -> SweepSpec | None:
        return self.plan.spec

    @property
    def mlflow_experiment(self) -> str:
        """The sweep's MLflow experiment: its declared name (a folder may have been renamed), else ``name``."""
        return self.spec.name if self.spec is not None else self.name

    @property
    def analysis(self) -> str:
        """The report section that reads this sweep, as its record declares ("generic" without one)."""
        return self.plan.analysis

    def planned(self) -> int:
        """Trials the sweep declared; without a plan, what finished plus what failed."""
        size = self.plan.size()
        return size if size is not None else self.trials.height + len(self.failed)

    def trial_file(self, trial_id: str, name: str) -> Path | None:
        """A file of a trial's result folder (``predictions.parquet``, ``config.json``), if reachable."""
        if self.folder is not None:
            path = self.folder / TRIALS / trial_id / name
            if path.exists():
                return path
        return self.fetch(trial_id, name) if self.fetch is not None else None

    def predictions(self, trial_id: str) -> pl.DataFrame | None:
        """The trial's test-set predictions; None when they are not reachable or do not validate."""
        record, path = self.record(trial_id), self.trial_file(trial_id, PREDICTIONS)
        if record is None or path is None:
            return None
        try:
            return read_predictions(path, record.classes)
        except RecordError:
            return None

    def record(self, trial_id: str) -> TrialRecord | None:
        """The trial's config.json; None when it is not reachable or does not validate."""
        path = self.trial_file(trial_id, CONFIG)
        if path is None:
            return None
        try:
            return read_json(path, TrialRecord)
        except RecordError:
            return None

    def config(self, trial_id: str) -> TrialConfig:
        """The trial's config: from its config.json, else from its row of the table."""
        record = self.record(trial_id)
        if record is not None:
            return TrialConfig.from_dict(record.config)
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


def merge_versions(code: Mapping[str, str], per_trial: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The sweep's code version (its record) and each trial's own (config.json, run tags), by kind:
    more than one value under a kind means the trials did not all run the same code."""
    seen: dict[str, set[str]] = {key: {str(value)} for key, value in code.items() if value}
    for versions in per_trial:
        for key, value in versions.items():
            if value:
                seen.setdefault(key, set()).add(str(value))
    return {key: sorted(values) for key, values in seen.items()}


def check_columns(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{what} has no column {', '.join(repr(c) for c in missing)}: it is not a finalbn sweep table "
            "(or one from an older version); rerun the sweep or pass its results/<sweep name> folder"
        )


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no traceback recorded"


def all_failed_message(name: str, failed: dict[str, str], where: str) -> str:
    first = next(iter(failed.values()))
    return (
        f"all {len(failed)} trials of sweep {name} failed (first error: {first}): "
        f"see {where}, fix the cause and rerun the sweep"
    )

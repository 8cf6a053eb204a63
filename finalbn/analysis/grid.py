"""What a sweep declared, read from its ``sweep.json`` (or a spec passed in), never from its name.

A ``Plan`` holds the spec, the report section that reads the sweep, every
planned trial (trial id -> axis labels) and the code version the sweep ran.
A folder, Parquet file or MLflow experiment without a record has an empty
plan: it is analysed as "generic" with whatever axis columns its table has,
and nothing is reported missing, because nothing says what was planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finalbn.errors import UserError
from finalbn.records.folders import SWEEP_RECORD
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.spec import SweepSpec

# Prefix of the readable axis-label columns the driver writes (``axis.data.train_minority``).
AXIS = "axis."
GENERIC = "generic"


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec | None = None
    # The registered report section that reads the sweep (finalbn.analysis.sections).
    analysis: str = GENERIC
    # Trial id -> {axis name: label} for the whole planned grid; empty when no record says.
    trials: dict[str, dict[str, str]] = field(default_factory=dict)
    # The code the sweep ran (finalbn, git_commit, torch, ...), from its record.
    code: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, record: SweepRecord | None, spec: SweepSpec | None = None) -> Plan:
        """The record's plan; a spec passed in decides the spec and section (and the record is
        only used when it is that sweep's)."""
        if record is not None and (spec is None or spec.name == record.name):
            spec = spec or record.spec()
            return cls(spec, spec.analysis, dict(record.trials), dict(record.code))
        if spec is not None:
            return cls(spec, spec.analysis)
        return cls()

    def size(self) -> int | None:
        """Trials planned; None when unknown."""
        if self.trials:
            return len(self.trials)
        return self.spec.size() if self.spec is not None else None

    def labels(self, trial_id: str) -> dict[str, str]:
        """``axis.<name>`` -> label of a planned trial, as the folder tables hold them."""
        return {AXIS + name: label for name, label in self.trials.get(trial_id, {}).items()}


def read_plan(folder: Path, spec: SweepSpec | None) -> Plan:
    """The plan of a sweep folder (or of the folder an MLflow record was downloaded into)."""
    return Plan.of(SweepRecord.read(folder), spec)


def keep_planned(trials: pl.DataFrame, plan: Plan, name: str) -> tuple[pl.DataFrame, list[str]]:
    """Drop finished trials the plan does not hold (runs of an earlier grid under the same name),
    with a note; none left means the record belongs to another sweep. Without a plan all stay."""
    if plan.spec is None:
        return trials, [f"no {SWEEP_RECORD} found: analysed as a generic sweep, its planned grid unknown"]
    if not plan.trials:
        return trials, []
    planned = trials.filter(pl.col("trial_id").is_in(list(plan.trials)))
    if planned.height == 0:
        raise UserError(
            f"the {SWEEP_RECORD} of {name} plans none of its {trials.height} finished trials: it records another "
            f"sweep; move it aside to analyse the trials as a generic sweep, or rerun the sweep to write it again"
        )
    dropped = trials.height - planned.height
    notes = [f"{dropped} finished trial(s) outside the planned grid left out"] if dropped else []
    return planned, notes


def missing_points(trials: pl.DataFrame, plan: Plan) -> list[dict[str, str]]:
    """Planned grid points (axis name -> label) without a finished trial; a failed trial's point is one."""
    if plan.trials:
        finished = set(trials["trial_id"].to_list())
        return [dict(labels) for trial_id, labels in plan.trials.items() if trial_id not in finished]
    if plan.spec is None:
        return []
    # A spec without its record has no trial ids (they need the data): match on the labels.
    names = [axis.name for axis in plan.spec.axes]
    if any(AXIS + name not in trials.columns for name in names):
        return []
    present = {tuple(map(str, row)) for row in trials.select([AXIS + n for n in names]).iter_rows()}
    return [t.point for t in plan.spec.trials() if tuple(t.point[n] for n in names) not in present]

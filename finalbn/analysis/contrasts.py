"""The comparisons a sweep declares, read one way by every analysis.

A sweep's ``SweepSpec.contrasts`` name its paired comparisons (treated vs control, two labels of one
axis; the first is its headline) and ``SweepSpec.derived`` its arms scored from other arms' trials
(final BN removed at test, a post-hoc method) through prefixed final metrics. Nothing here knows
which axis or labels a sweep uses: a spec without contrasts gets none, and the analyses say "no
contrast declared" rather than guess one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from finalbn.analysis.grid import AXIS
from finalbn.analysis.stats import paired_differences
from finalbn.analysis.sweep_data import NUISANCE
from finalbn.errors import UserError
from finalbn.records.folders import SWEEP_RECORD
from finalbn.sweep.spec import Contrast, Derived, SweepSpec

# Column of the arms table: "" for a trained arm's row, the derived arm's metric prefix for its rows
# (what a figure reads the trial's predictions under).
PREFIX = "metric_prefix"
# A derived arm's row counts when its trial has this metric under the arm's prefix.
PRIMARY = "f1_minority"
NO_CONTRAST = f"no contrast declared (the sweep's {SWEEP_RECORD} names no treated vs control pair): nothing is guessed"


@dataclass(frozen=True)
class Arms:
    """The trials with one more row per derived arm and scored trial, and what could not be scored."""

    trials: pl.DataFrame
    # Derived label -> source trials left out because they lack its prefixed metrics.
    dropped: dict[str, int]

    def notes(self) -> list[str]:
        return [
            f"derived arm {label}: {count} trial(s) left out, they have no {PRIMARY} under its prefix"
            for label, count in self.dropped.items()
            if count
        ]


def contrasts_of(spec: SweepSpec | None) -> tuple[Contrast, ...]:
    """The declared contrasts, the headline first; none for no spec or a spec that declares none."""
    return spec.contrasts if spec is not None else ()


def headline_contrast(spec: SweepSpec | None) -> Contrast | None:
    declared = contrasts_of(spec)
    return declared[0] if declared else None


def derived_of(spec: SweepSpec | None) -> tuple[Derived, ...]:
    return spec.derived if spec is not None else ()


def arm_column(frame: pl.DataFrame, axis: str) -> str:
    """The column holding ``axis``' labels: its ``axis.<name>`` label column, else (a table without label
    columns) the config column of a field axis."""
    for column in (AXIS + axis, axis):
        if column in frame.columns:
            return column
    raise UserError(f"table has no column {AXIS + axis!r} for the declared axis {axis!r}: pass that sweep's table")


def derive(trials: pl.DataFrame, derived: Sequence[Derived]) -> Arms:
    """``trials`` plus, per derived arm, its source label's trials with every metric read under the arm's
    prefix (``nobn_f1_minority`` as ``f1_minority``) and the axis label (and a field axis' config column)
    set to the arm's label. Other derived prefixes are nulled on those rows: an arm has its own metrics only."""
    prefixes = {d.prefix for d in derived}
    base = trials.with_columns(pl.lit("").alias(PREFIX))
    rows, dropped = [base], {}
    for arm in derived:
        column = arm_column(trials, arm.axis)
        if arm.label in trials[column].cast(pl.String).to_list():
            raise UserError(f"derived arm {arm.label!r} is also a trained label of axis {arm.axis!r}: rename one")
        source = trials.filter(pl.col(column).cast(pl.String) == arm.source)
        scored = [c for c in trials.columns if c.startswith(arm.prefix)]
        key = arm.prefix + PRIMARY
        kept = source.filter(pl.col(key).cast(pl.Float64).is_not_nan()) if key in scored else source.clear()
        dropped[arm.label] = source.height - kept.height
        if kept.height == 0:
            continue
        other = [c for c in trials.columns if c.startswith(tuple(prefixes)) and c not in scored]
        labels = [c for c in (AXIS + arm.axis, arm.axis) if c in trials.columns]
        rows.append(
            kept.with_columns(pl.col(c).alias(c.removeprefix(arm.prefix)) for c in scored).with_columns(
                *(pl.lit(None, dtype=trials.schema[c]).alias(c) for c in [*scored, *other]),
                *(pl.lit(arm.label).alias(c) for c in labels),
                pl.lit(arm.prefix).alias(PREFIX),
            )
        )
    return Arms(pl.concat(rows, how="diagonal_relaxed"), dropped)


def arms_of(trials: pl.DataFrame, spec: SweepSpec | None) -> Arms:
    """``derive`` over the spec's declared derived arms (none without a spec)."""
    return derive(trials, derived_of(spec))


def with_derived(trials: pl.DataFrame, spec: SweepSpec | None) -> pl.DataFrame:
    """The trials with the spec's derived arms' rows (``derive``); ``arms_of`` also says what was left out."""
    return arms_of(trials, spec).trials


def pairing_keys(frame: pl.DataFrame, contrast: Contrast, by: Sequence[str] = ()) -> list[str]:
    """What makes two runs a pair: every other axis' label and the seeds (config columns), beyond ``by``."""
    column = arm_column(frame, contrast.axis)
    axes = [c for c in frame.columns if c.startswith(AXIS) and c != column]
    seeds = [c for c in NUISANCE if c in frame.columns]
    return [c for c in [*axes, *seeds] if c not in by]


def paired(frame: pl.DataFrame, metric: str, contrast: Contrast, by: Sequence[str] = ()) -> pl.DataFrame:
    """``stats.paired_differences`` of ``contrast`` (treated - control) on ``metric``: one row per pair of runs
    equal in ``by``, in every other axis and in the seeds."""
    column = arm_column(frame, contrast.axis)
    labels = frame.with_columns(pl.col(column).cast(pl.String))
    keys = pairing_keys(frame, contrast, by)
    return paired_differences(labels, metric, column, contrast.treated, contrast.control, pair_on=keys, by=by)


def arm_labels(frame: pl.DataFrame, axis: str, spec: SweepSpec | None) -> list[str]:
    """The labels of ``axis`` present in ``frame``: declared values in declared order, then derived arms,
    then any other label as the table holds it."""
    present = [v for v in frame[arm_column(frame, axis)].cast(pl.String).unique(maintain_order=True) if v is not None]
    declared: list[str] = []
    if spec is not None:
        for declared_axis in spec.axes:
            if declared_axis.name == axis:
                declared += [declared_axis.label(i) for i in range(len(declared_axis.values))]
        declared += [d.label for d in spec.derived if d.axis == axis]
    return [v for v in declared if v in present] + [v for v in present if v not in declared]

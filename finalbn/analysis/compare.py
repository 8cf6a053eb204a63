"""Which runs the with/without figures compare (Figures 4.3, 4.4, 4.8, 4.9): the two arms of the sweep's
headline contrast, at one setting.

A sweep holds many settings; these figures show one. The rule, so a reader
knows what they see: among the settings (every varying config field except
those the contrast's axis sets, and the seed) that hold both arms, take the
most imbalanced one (fewest minority training images), then the one with the
fewest other factorial options on (the thesis' "one option at a time"), then
the one closest to the sweep's base config (e.g. softmax + CCE for Table 4.8),
then the first. An arm may be derived (final BN removed at test, a post-hoc
method): its runs are its source's, read under its metric prefix. Without a
declared contrast there is nothing to compare and nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from finalbn.analysis.contrasts import PREFIX, arm_column, arm_labels, arms_of, headline_contrast
from finalbn.analysis.sweep_data import NUISANCE, SweepData
from finalbn.sweep.experiments import FACTORS
from finalbn.sweep.spec import Contrast, SweepSpec, flatten

# Config columns that vary without being a setting: where the data lives, how runs are named.
IGNORED = {"data.root", *NUISANCE}


@dataclass(frozen=True)
class Arm:
    label: str
    # Trial ids, in seed order.
    trials: list[str]
    # "" for a trained arm; a derived arm's metric prefix, under which its trials' predictions are read.
    prefix: str

    @property
    def derived(self) -> bool:
        return bool(self.prefix)


@dataclass(frozen=True)
class Comparison:
    contrast: Contrast
    # Config fields held fixed (those that vary in the sweep), with their values.
    fixed: dict[str, Any]
    treated: Arm
    control: Arm
    # At the same setting: the other arms of the contrasts declared on the same axis (Figure 4.3's weighted
    # loss) and the derived arms of the two compared, in the axis' order.
    others: tuple[Arm, ...] = ()

    def arms(self) -> list[Arm]:
        """Control, the others, treated: the order the figures draw them in."""
        return [self.control, *self.others, self.treated]

    def describe(self) -> str:
        held = ", ".join(f"{k}={v}" for k, v in self.fixed.items()) or "the sweep's only setting"
        runs = ", ".join(f"{arm.label} {len(arm.trials)}" for arm in (self.treated, self.control))
        return f"{self.treated.label} vs {self.control.label} at {held} (runs: {runs})"


def choose_comparison(data: SweepData) -> Comparison | None:
    """The headline contrast's arms at the chosen setting; None without a contrast or a setting holding both."""
    spec = data.spec
    contrast = headline_contrast(spec)
    if spec is None or contrast is None:
        return None
    trials = arms_of(data.trials, spec).trials
    column = arm_column(trials, contrast.axis)
    trials = trials.with_columns(pl.col(column).cast(pl.String))
    fields = _fields(spec, contrast.axis)
    settings = [c for c in _config_columns(trials) if c not in IGNORED | fields and trials[c].n_unique() > 1]
    groups = trials.group_by(settings, maintain_order=True) if settings else [((), trials)]
    both = [frame for _, frame in groups if {contrast.treated, contrast.control} <= set(frame[column].to_list())]
    if not both:
        return None
    frame = min(both, key=lambda f: _preference(f, settings, flatten(spec.base)))
    wanted = {contrast.treated, contrast.control}
    related = {label for c in spec.contrasts if c.axis == contrast.axis for label in (c.treated, c.control)}
    related |= {d.label for d in spec.derived if d.axis == contrast.axis and d.source in wanted}
    order = arm_labels(frame, contrast.axis, spec)
    others = tuple(_arm(frame, column, label) for label in order if label in related - wanted)
    return Comparison(
        contrast,
        {c: frame[c][0] for c in settings},
        _arm(frame, column, contrast.treated),
        _arm(frame, column, contrast.control),
        others,
    )


def _arm(frame: pl.DataFrame, column: str, label: str) -> Arm:
    rows = frame.filter(pl.col(column) == label)
    seed = "train.seed" if "train.seed" in rows.columns else "trial_id"
    return Arm(label, rows.sort(seed)["trial_id"].to_list(), str(rows[PREFIX][0]) if rows.height else "")


def _fields(spec: SweepSpec, axis: str) -> set[str]:
    """The config fields an axis sets: a joint axis' every field, a field axis its own."""
    declared = [a for a in spec.axes if a.name == axis]
    fields = {field for a in declared for i in range(len(a.values)) for field in a.overrides(i)}
    return fields or ({axis} if "." in axis else set())


def _preference(frame: pl.DataFrame, settings: list[str], base: dict[str, Any]) -> tuple[float, int, int]:
    row = frame.row(0, named=True)
    minority = float(row["data.train_minority"]) if "data.train_minority" in settings else 0.0
    # The contrast's own fields are not settings: only the other factorial options count.
    options_on = sum(1 for column, checked, _ in FACTORS.values() if column in settings and row[column] == checked)
    off_base = sum(1 for c in settings if c in base and str(row[c]) != str(base[c]))
    return (minority, options_on, off_base)


def _config_columns(trials: pl.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith(("data.", "model.", "train."))]

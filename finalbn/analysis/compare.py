"""Which runs a with/without-final-BN figure compares (Figures 4.3, 4.4, 4.8, 4.9).

A sweep holds many settings; these figures show one. The rule, so a reader
knows what they see: among the settings (every varying config field except
the final BN and the seed) that were run both with and without final BN,
take the most imbalanced one (fewest minority training images), then the
one with the fewest other factorial options on (the thesis' "one option at
a time"), then the one closest to the sweep's base config (e.g. softmax +
CCE for Table 4.8), then the first. Without a no-final-BN arm (the
batch-size sweep) each final-BN run is compared with itself with the final
BN removed at test (its ``nobn_`` outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from finalbn.analysis.sweep_data import NUISANCE, SweepData
from finalbn.experiments import FACTORS
from finalbn.spec import flatten

NORM = "model.final_norm"
# Config columns that vary without being a setting: where the data lives, how runs are named.
IGNORED = {NORM, "data.root", *NUISANCE}


@dataclass(frozen=True)
class Comparison:
    # Config fields held fixed (those that vary in the sweep), with their values.
    fixed: dict[str, Any]
    with_label: str
    without_label: str
    # Trial ids of each arm, in seed order.
    with_trials: list[str]
    without_trials: list[str]
    # True when "without" is the same runs scored with the final BN removed (nobn_ columns).
    removed_at_test: bool

    def describe(self) -> str:
        held = ", ".join(f"{k}={v}" for k, v in self.fixed.items()) or "the sweep's only setting"
        return f"{self.with_label} vs {self.without_label} at {held} ({len(self.with_trials)} runs each)"


def choose_comparison(data: SweepData) -> Comparison | None:
    trials = data.trials
    if NORM not in trials.columns or "bn" not in trials[NORM].to_list():
        return None
    if "axis.variant" in trials.columns and {"plain", "final_BN"} <= set(trials["axis.variant"].to_list()):
        arm, on, off, labels = "axis.variant", "final_BN", "plain", ("final BN", "plain (no final BN)")
    else:
        arm, on, off, labels = NORM, "bn", "none", ("final BN", "no final BN")
    settings = [c for c in _config_columns(trials) if c not in IGNORED and trials[c].n_unique() > 1]
    groups = trials.group_by(settings, maintain_order=True) if settings else [((), trials)]
    both, with_only = [], []
    for _, frame in groups:
        values = set(frame[arm].to_list())
        (both if {on, off} <= values else with_only if on in values else []).append(frame)
    base = flatten(data.spec.base) if data.spec is not None else {}
    if both:
        frame = min(both, key=lambda f: _preference(f, settings, base))
        fixed = {c: frame[c][0] for c in settings}
        with_ids, without_ids = _ids(frame, arm, on), _ids(frame, arm, off)
        return Comparison(fixed, labels[0], labels[1], with_ids, without_ids, removed_at_test=False)
    if with_only and "nobn_f1_minority" in trials.columns:
        frame = min(with_only, key=lambda f: _preference(f, settings, base))
        ids = _ids(frame, arm, on)
        return Comparison(
            {c: frame[c][0] for c in settings}, "final BN", "final BN removed at test", ids, ids, removed_at_test=True
        )
    return None


def _preference(frame: pl.DataFrame, settings: list[str], base: dict[str, Any]) -> tuple[float, int, int]:
    row = frame.row(0, named=True)
    minority = float(row["data.train_minority"]) if "data.train_minority" in settings else 0.0
    options_on = sum(1 for column, checked, _ in FACTORS.values() if column in settings and row[column] == checked)
    # Only factorial options other than the final BN count: the arms differ in it anyway.
    options_on -= 1 if NORM in settings and row.get(NORM) == "bn" else 0
    off_base = sum(1 for c in settings if c in base and str(row[c]) != str(base[c]))
    return (minority, options_on, off_base)


def _ids(frame: pl.DataFrame, arm: str, value: str) -> list[str]:
    seed = "train.seed" if "train.seed" in frame.columns else "trial_id"
    return frame.filter(pl.col(arm) == value).sort(seed)["trial_id"].to_list()


def _config_columns(trials: pl.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith(("data.", "model.", "train."))]

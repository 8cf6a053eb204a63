"""Command-line overrides of a declared sweep (--set, --axis, --seeds): typed, checked, recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finalbn.config import trial_id
from finalbn.errors import UserError
from finalbn.experiments import build_sweeps
from finalbn.overrides import Overrides, apply
from finalbn.sweep.record import SweepRecord

REPO = Path(__file__).resolve().parents[1]


def laptop(experiment: str = "imbalance_ratio"):
    [spec] = build_sweeps(experiment, "laptop", None)
    return spec


def test_set_axis_and_seeds_reshape_the_grid_and_are_recorded() -> None:
    spec = apply(
        laptop(), Overrides(sets=("train.lr=3e-3", "data.minority=3"), axes=("data.train_minority=3,90",), seeds=3)
    )
    assert spec.base.train.lr == 3e-3 and spec.base.data.minority == ("3",)
    assert {a.name: a.values for a in spec.axes}["data.train_minority"] == (3, 90)
    assert {a.name: a.values for a in spec.axes}["train.seed"] == (0, 1, 2)
    assert spec.size() == 2 * 2 * 1 * 3
    assert spec.overrides == (
        "--set train.lr=3e-3",
        "--set data.minority=3",
        "--axis data.train_minority=3,90",
        "--seeds 3",
    )
    record = SweepRecord.of(spec, {}, {"git_commit": "x"})
    assert record.overrides == list(spec.overrides) and record.spec() == spec


def test_an_override_is_another_trial_id() -> None:
    before = laptop().trials()[0].config
    after = apply(laptop(), Overrides(sets=("train.lr=0.0123",))).trials()[0].config
    assert trial_id(before, "f") != trial_id(after, "f")


def test_a_joint_axis_is_picked_by_label() -> None:
    spec = apply(laptop("headline"), Overrides(axes=("variant=plain,final_BN",)))
    variant = next(a for a in spec.axes if a.name == "variant")
    assert variant.labels == ("plain", "final_BN") and len(variant.values) == 2


def test_a_new_field_axis_is_added_and_a_single_value_is_fixed() -> None:
    spec = apply(laptop(), Overrides(axes=("train.lr=1e-3,3e-3", "train.epochs=3")))
    axes = {a.name: a for a in spec.axes}
    assert axes["train.lr"].values == (1e-3, 3e-3) and axes["train.lr"].role == "scientific"
    assert axes["train.epochs"].role == "fixed"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (Overrides(sets=("train.lrr=3",)), "unknown config field 'train.lrr': did you mean train.lr?"),
        (Overrides(sets=("train.epochs=ten",)), "train.epochs='ten': not an integer"),
        (Overrides(sets=("model.final_norm=none",)), "model.final_norm is an axis of this sweep"),
        (Overrides(sets=("model.pool=max",)), "model.pool='max': choose one of avg, avgmax"),
        (Overrides(sets=("train.lr",)), "--set 'train.lr': use SECTION.FIELD=VALUE"),
        (Overrides(axes=("variant=plain",)), "neither a config field"),
        (Overrides(axes=("data.train_minority=3,3",)), "a value is given twice"),
        (Overrides(seeds=0), "--seeds 0: use 1 or more"),
        (Overrides(sets=("train.augment=maybe",)), "use true or false"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: Overrides, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace("(", r"\(")) as caught:
        apply(laptop(), overrides)
    assert "\n" not in str(caught.value)


def test_the_dry_run_shows_the_overrides() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "imbalance_ratio.py"),
            "--dry-run",
            "--seeds",
            "3",
            "--set",
            "train.lr=3e-3",
            "--axis",
            "data.train_minority=3,30,90",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "overrides: --set train.lr=3e-3 --axis data.train_minority=3,30,90 --seeds 3" in done.stdout
    assert "18 trials" in done.stdout and "train.seed [nuisance]: 0, 1, 2" in done.stdout


def test_no_flag_is_a_prefix_of_another() -> None:
    epoch = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "imbalance_ratio.py"), "--dry-run", "--epoch", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert epoch.returncode == 2 and "unrecognized arguments: --epoch 1" in epoch.stderr

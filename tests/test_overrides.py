"""Command-line overrides of a declared sweep (--set, --axis, --seeds): typed, checked, recorded."""

from __future__ import annotations

import re

import pytest

from finalbn.config import trial_id
from finalbn.errors import UserError
from finalbn.sweep.cli import run_script
from finalbn.sweep.experiments import build_sweeps
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.record import SweepRecord


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
        (Overrides(sets=("train.epochs=ten",)), "train.epochs='ten': use an integer"),
        (Overrides(sets=("train.epochs=2.5",)), "train.epochs='2.5': use an integer"),
        (Overrides(sets=("train.steps=many",)), "train.steps='many': use an integer, or none"),
        (Overrides(sets=("model.final_norm=none",)), "model.final_norm is an axis of this sweep"),
        (Overrides(sets=("model.pool=max",)), "model.pool='max': choose one of avg, avgmax"),
        (Overrides(sets=("train.lr",)), "--set 'train.lr': use SECTION.FIELD=VALUE"),
        (Overrides(axes=("variant=plain",)), "neither a config field"),
        (Overrides(axes=("data.train_minority=3,3",)), "a value is given twice"),
        (Overrides(seeds=0), "--seeds 0: use 1 or more"),
        (Overrides(sets=("train.augment=maybe",)), "train.augment='maybe': use true or false"),
        (
            Overrides(axes=("data.train_minority=1", "data.train_minority=4")),
            "--axis data.train_minority is given twice: give all its values in one, --axis data.train_minority=1,4",
        ),
        (
            Overrides(axes=("variant=plain", "variant=final_BN")),
            "--axis variant is given twice: give all its values in one, --axis variant=plain,final_BN",
        ),
        (Overrides(sets=("train.lr=1e-3", "train.lr=3e-3")), "--set train.lr is given twice (1e-3, 3e-3): keep one"),
        (Overrides(axes=("train.seed=0,1",), seeds=3), "--seeds and --axis train.seed both set the seeds: keep one"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: Overrides, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        apply(laptop(), overrides)
    assert "\n" not in str(caught.value)


def test_a_value_set_is_taken_as_its_field_type() -> None:
    spec = apply(laptop(), Overrides(sets=("train.steps=none", "train.augment=yes", "train.lr=1", "data.majority=3+5")))
    t = spec.base.train
    assert t.steps is None and t.augment is True and t.lr == 1.0 and type(t.lr) is float
    assert spec.base.data.majority == ("3", "5")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (Overrides(sets=("data.image_size=100000",)), "data.image_size is 100000: use an integer >= 8 and <= 1,024"),
        (Overrides(axes=("train.lr=1e-3,1e308",)), "train.lr is 1e+308: use a number > 0 and <= 10"),
        (Overrides(axes=("train.epochs=0,3",)), "train.epochs is 0: use an integer >= 1 and <= 10,000"),
        (Overrides(sets=("model.final_bn_momentum=-0.1",)), "model.final_bn_momentum is -0.1: use a number > 0"),
    ],
)
def test_a_number_set_or_swept_out_of_bounds_is_refused_before_training(overrides: Overrides, message: str) -> None:
    """Bounds are validate()'s, which the plan runs on every trial (check); the dry run runs the same."""
    from finalbn.sweep.plan import check

    with pytest.raises(UserError) as caught:
        check(apply(laptop(), overrides), download=False)
    assert str(caught.value).startswith(message), caught.value


def test_a_repeated_axis_is_one_line_from_the_sweep_script(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dry-run", "--axis", "data.train_minority=1", "--axis", "data.train_minority=4"]
    assert run_script("imbalance_ratio", None, argv) == 2
    out, err = capsys.readouterr()
    assert not out and err.strip() == (
        "finalbn: error: --axis data.train_minority is given twice: give all its values in one, "
        "--axis data.train_minority=1,4"
    )


def test_the_dry_run_shows_the_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dry-run", "--seeds", "3", "--set", "train.lr=3e-3", "--axis", "data.train_minority=3,30,90"]
    assert run_script("imbalance_ratio", None, argv) == 0
    out = capsys.readouterr().out
    assert "overrides: --set train.lr=3e-3 --axis data.train_minority=3,30,90 --seeds 3" in out
    assert "18 trials" in out and "train.seed [nuisance]: 0, 1, 2" in out


def test_no_flag_is_a_prefix_of_another(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        run_script("imbalance_ratio", None, ["--dry-run", "--epoch", "1"])
    assert refused.value.code == 2 and "unrecognized arguments: --epoch 1" in capsys.readouterr().err

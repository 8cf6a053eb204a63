"""The methods registry and the baselines sweep (issue 20): declared grids, contrasts, ids, overrides, records.

Nothing here trains: the expected methods, counts and contrasts are transcribed from the issue, not from
the modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_folder_sweeps import folder_flags, write_digit_folders

from finalbn.config import TrainConfig, trial_id, validate
from finalbn.errors import UserError
from finalbn.records.folders import SWEEP_RECORD as RECORD_FILE
from finalbn.sweep.cli import dry_run, run_script
from finalbn.sweep.experiments import ClassFolders, build_sweeps
from finalbn.sweep.methods import METHODS, TRAINED_NAMES, baseline_contrasts, derived_arms, method_axis
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.spec import Contrast, Derived, SweepSpec
from finalbn.train.presets import EMBEDDED_MNIST, THESIS

REPO = Path(__file__).resolve().parents[1]
FAKE_ROOT = "/nonexistent/plantvillage"
# The issue's methods: trained, and post-hoc as (source, metric prefix).
TRAINED = ("plain", "weighted_loss", "logit_adjusted_loss", "balanced_softmax", "focal", "oversampling", "final_bn")
POST_HOC = {
    "posthoc_logit_adjustment": ("plain", "la_"),
    "val_threshold": ("plain", "thr_"),
    "final_bn_removed": ("final_bn", "nobn_"),
    "final_bn+val_threshold": ("final_bn", "thr_"),
    "final_bn+posthoc_logit_adjustment": ("final_bn", "la_"),
}
KNOBS = {"model.final_norm", "train.weighted_loss", "train.loss", "train.sampler"}


def with_overrides(base, overrides: dict[str, object]):
    changes: dict[str, dict[str, object]] = {}
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        changes.setdefault(section, {})[name] = value
    return base.replace(**changes)


def labels(spec: SweepSpec, axis: str) -> set[str]:
    found = next(a for a in spec.axes if a.name == axis)
    return {found.label(i) for i in range(len(found.values))} | {d.label for d in spec.derived if d.axis == axis}


# ------------------------------------------------------------------ registry


def test_the_registry_holds_the_issues_methods_in_order() -> None:
    assert TRAINED_NAMES == TRAINED
    assert set(METHODS) == {*TRAINED, *POST_HOC}
    for name in TRAINED:
        method = METHODS.get(name)
        assert method.name == name and method.summary and not method.source and not method.prefix
        # Every knob set explicitly: no method differs from another by a default.
        assert set(method.overrides) == KNOBS, name
    for name, (source, prefix) in POST_HOC.items():
        method = METHODS.get(name)
        assert (method.source, method.prefix, method.overrides) == (source, prefix, {}), name
        assert method.summary


@pytest.mark.parametrize("base", [EMBEDDED_MNIST, THESIS], ids=["mnist", "thesis"])
def test_every_trained_method_is_a_valid_config_and_a_different_one(base) -> None:
    configs = [with_overrides(base, METHODS.get(name).overrides) for name in TRAINED]
    for config in configs:
        validate(config)
    assert len({trial_id(config, "abc") for config in configs}) == len(TRAINED)
    # plain is the base protocol itself: nothing done about the imbalance.
    assert configs[0] == base.replace(model={"final_norm": "none"})


def test_the_stated_paper_defaults_are_the_configs_defaults() -> None:
    train = TrainConfig()
    assert train.tau == 1.0 and "tau = 1" in METHODS.get("logit_adjusted_loss").defaults  # Menon et al.
    assert "tau = 1" in METHODS.get("posthoc_logit_adjustment").defaults
    assert train.focal_gamma == 2.0 and train.focal_alpha is None  # Lin et al.
    assert METHODS.get("focal").defaults == "gamma = 2, no alpha"
    assert {METHODS.get(name).reference for name in ("logit_adjusted_loss", "balanced_softmax", "focal")} == {
        "Menon et al., ICLR 2021",
        "Ren et al., NeurIPS 2020",
        "Lin et al., ICCV 2017",
    }


def test_method_axis_is_the_joint_axis_of_trained_methods() -> None:
    axis = method_axis(["plain", "final_bn"])
    assert (axis.name, axis.labels, axis.joint) == ("method", ("plain", "final_bn"), True)
    assert axis.values[1]["model.final_norm"] == "bn" and axis.values[0]["model.final_norm"] == "none"
    with pytest.raises(UserError, match=r"^val_threshold is scored from plain's trials: ask for plain$"):
        method_axis(["val_threshold"])
    with pytest.raises(UserError, match="unknown method 'nope'"):
        method_axis(["nope"])


def test_derived_arms_follow_their_sources() -> None:
    assert {arm.label for arm in derived_arms(TRAINED)} == set(POST_HOC)
    assert derived_arms(["plain", "focal"]) == (
        Derived("method", "posthoc_logit_adjustment", "plain", "la_"),
        Derived("method", "val_threshold", "plain", "thr_"),
    )
    assert derived_arms(["focal"]) == ()


def test_baseline_contrasts_put_every_method_against_final_bn() -> None:
    contrasts = baseline_contrasts(TRAINED)
    # treated = the method, control = final BN: a positive difference means the method beats final BN.
    against = [c.treated for c in contrasts if c.control == "final_bn"]
    assert set(against) == (set(TRAINED) | set(POST_HOC)) - {"final_bn"}
    assert len(against) == len(set(against)) == 11
    assert contrasts[0] == Contrast("method", "plain", "final_bn")
    # Then the thesis' own claims, final BN treated.
    assert contrasts[-2:] == (
        Contrast("method", "final_bn", "plain"),
        Contrast("method", "final_bn", "final_bn_removed"),
    )
    assert {c.axis for c in contrasts} == {"method"}
    assert baseline_contrasts(["plain", "focal"]) == ()


# ------------------------------------------------------------------ the sweep


def test_the_cpu_preset_is_420_trials_and_a_ratio_sweep_of_100() -> None:
    main, ratio = build_sweeps("baselines", "cpu", FAKE_ROOT)
    assert (main.name, main.size(), len(main.trials())) == ("baselines-cpu", 420, 420)
    configs = [t.config for t in main.trials()]
    assert Counter(c.train.lr for c in configs) == {3e-3: 210, 1e-3: 210}
    assert Counter(c.data.plant for c in configs) == {"Apple": 140, "Pepper": 140, "Tomato": 140}
    assert {c.train.seed for c in configs} == set(range(10))
    assert {(c.data.train_minority, c.data.train_majority, c.model.backbone) for c in configs} == {
        (10, 1000, "efficientnet_lite0")
    }
    assert Counter(t.point["method"] for t in main.trials()) == dict.fromkeys(TRAINED, 60)
    assert (ratio.name, ratio.size()) == ("baselines_ratio-cpu", 100)
    rc = [t.config for t in ratio.trials()]
    assert sorted({c.data.train_minority for c in rc}) == [5, 10, 20, 50, 100]
    assert {(c.data.plant, c.train.lr) for c in rc} == {("Apple", 3e-3)}
    assert {c.train.seed for c in rc} == set(range(5))
    assert {t.point["method"] for t in ratio.trials()} == {"plain", "weighted_loss", "logit_adjusted_loss", "final_bn"}
    assert main.analysis == ratio.analysis == "baselines"
    text = "\n".join(dry_run(spec) for spec in (main, ratio))
    assert "baselines-cpu (beyond the thesis): 420 trials" in text and "100 trials" in text


def test_the_ratio_sweeps_1_percent_trials_are_the_main_sweeps() -> None:
    main, ratio = build_sweeps("baselines", "cpu", FAKE_ROOT)
    ours = {trial_id(t.config, "abc") for t in ratio.trials() if t.config.data.train_minority == 10}
    assert len(ours) == 4 * 5 and ours <= {trial_id(t.config, "abc") for t in main.trials()}


@pytest.mark.parametrize(
    ("preset", "data", "expected"),
    [("paper", FAKE_ROOT, 210), ("laptop", None, 28), ("laptop", FAKE_ROOT, 42), ("smoke", None, 14)],
)
def test_preset_counts(preset: str, data: str | None, expected: int) -> None:
    [spec] = build_sweeps("baselines", preset, data)
    assert spec.size() == expected
    assert {t.point["method"] for t in spec.trials()} == set(TRAINED)
    if preset == "paper":
        assert {(t.config.model.backbone, t.config.model.unfreeze) for t in spec.trials()} == {("vgg19_bn", "none")}
    if preset == "smoke":
        assert {t.config.train.epochs for t in spec.trials()} == {2}


def test_plain_weighted_loss_and_final_bn_are_the_headline_trials() -> None:
    """Same plant and seed, same id (a fixed manifest fingerprint): run after the headline sweep, reused."""
    main, _ = build_sweeps("baselines", "cpu", FAKE_ROOT)
    [headline] = build_sweeps("headline", "cpu", FAKE_ROOT)
    same = {"plain": "plain", "weighted_loss": "WL", "final_bn": "final_BN"}
    ours = {
        (t.point["data.plant"], same[t.point["method"]], t.config.train.seed): trial_id(t.config, "abc")
        for t in main.trials()
        if t.point["method"] in same and t.config.train.lr == 3e-3
    }
    theirs = {
        (t.point["data.plant"], t.point["variant"], t.config.train.seed): trial_id(t.config, "abc")
        for t in headline.trials()
    }
    assert len(ours) == 90 and ours == theirs
    others = {trial_id(t.config, "abc") for t in main.trials() if t.point["method"] not in same}
    assert not others & set(theirs.values())


def test_every_contrast_names_arms_of_its_sweep() -> None:
    for preset, data in (("smoke", None), ("laptop", None), ("cpu", FAKE_ROOT), ("paper", FAKE_ROOT)):
        for spec in build_sweeps("baselines", preset, data):
            assert spec.contrasts and spec.contrasts[0] == Contrast("method", "plain", "final_bn")
            arms = labels(spec, "method")
            for contrast in spec.contrasts:
                assert {contrast.treated, contrast.control} <= arms, contrast
            assert {arm.source for arm in spec.derived} <= arms


# ------------------------------------------------------------------ overrides


def test_axis_method_narrows_the_grid_and_its_contrasts() -> None:
    [spec] = build_sweeps("baselines", "smoke", None)
    narrowed = apply(spec, Overrides(axes=("method=plain,final_bn",)))
    assert narrowed.size() == 2 * 2
    assert {t.point["method"] for t in narrowed.trials()} == {"plain", "final_bn"}
    # Post-hoc arms cost nothing: all five stay, their sources being there.
    assert narrowed.derived == spec.derived
    assert Contrast("method", "final_bn", "plain") in narrowed.contrasts
    assert Contrast("method", "focal", "final_bn") not in narrowed.contrasts
    assert all({c.treated, c.control} <= labels(narrowed, "method") for c in narrowed.contrasts)
    # Without final_bn, nothing is left to contrast with it, and final BN's post-hoc arms go.
    without = apply(spec, Overrides(axes=("method=plain,focal",)))
    assert without.contrasts == () and {arm.source for arm in without.derived} == {"plain"}


def test_axis_plant_picks_one_plant_of_both_cpu_sweeps() -> None:
    specs = [apply(spec, Overrides(axes=("data.plant=Apple",))) for spec in build_sweeps("baselines", "cpu", FAKE_ROOT)]
    assert [spec.size() for spec in specs] == [140, 100]
    assert {t.config.data.plant for spec in specs for t in spec.trials()} == {"Apple"}


def test_a_post_hoc_method_is_refused_with_the_trained_one_to_ask_for(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--preset", "smoke", "--axis", "method=plain,val_threshold", "--dry-run"]
    assert run_script("baselines", None, argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("val_threshold is scored from plain's trials: ask for plain")
    assert run_script("baselines", None, ["--preset", "smoke", "--axis", "method=final_bn_removed", "--dry-run"]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("final_bn_removed is scored from final_bn's trials: ask for final_bn")
    )


def test_class_folders_have_no_plant_axis() -> None:
    folders = ClassFolders("/data/own", ("cats",), ("dogs",))
    main, ratio = build_sweeps("baselines", "cpu", folders)
    assert (main.name, main.size(), ratio.name, ratio.size()) == (
        "baselines-cpu-folder",
        140,
        "baselines_ratio-cpu-folder",
        100,
    )
    assert all(axis.name != "data.plant" for spec in (main, ratio) for axis in spec.axes)
    assert {t.config.data.source for t in main.trials()} == {"folder"}


# ------------------------------------------------------------------ dry runs


def test_the_script_dry_runs_the_smoke_preset(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "baselines.py"),
            "--preset",
            "smoke",
            "--dry-run",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "baselines-smoke (beyond the thesis): 14 trials" in done.stdout
    assert "method [scientific]: plain, weighted_loss, logit_adjusted_loss" in done.stdout
    assert not any(tmp_path.iterdir())


def test_a_dry_run_on_class_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digits = write_digit_folders(tmp_path, {"eight": 70, "three": 30})
    argv = ["--preset", "smoke", *folder_flags(digits), "--axis", "method=plain,final_bn", "--dry-run"]
    assert run_script("baselines", None, [*argv, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "baselines-smoke-folder+method=plain,final_bn" in out and ": 4 trials" in out
    assert "checked data: class 'three'" in out


def test_the_laptop_dry_run_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_script("baselines", None, ["--preset", "laptop", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "baselines-laptop (beyond the thesis): 28 trials" in capsys.readouterr().out


# ------------------------------------------------------------------ sweep.json


def test_sweep_json_keeps_the_contrasts_and_derived_arms(tmp_path: Path) -> None:
    [spec] = build_sweeps("baselines", "smoke", None)
    SweepRecord.of(spec, {}, {"git_commit": "x"}).write(tmp_path)
    raw = json.loads((tmp_path / RECORD_FILE).read_text())
    assert raw["contrasts"][0] == {"axis": "method", "treated": "plain", "control": "final_bn"}
    again = SweepRecord.read(tmp_path).spec()
    assert again == spec and again.contrasts == spec.contrasts and len(again.derived) == 5


@pytest.mark.parametrize(
    ("experiment", "contrasts", "derived"),
    [
        (
            "bn_removal",
            [
                ("model.final_norm", "bn", "none"),
                ("model.final_norm", "bn", "removed"),
                ("model.final_norm", "removed", "none"),
            ],
            [("model.final_norm", "removed", "bn", "nobn_")],
        ),
        ("imbalance_ratio", [("model.final_norm", "bn", "none")], [("model.final_norm", "removed", "bn", "nobn_")]),
        (
            "headline",
            [("variant", "final_BN", "plain"), ("variant", "final_BN", "WL")],
            [("variant", "final_BN_removed", "final_BN", "nobn_")],
        ),
        ("batch_size", [("model.final_norm", "bn", "removed")], [("model.final_norm", "removed", "bn", "nobn_")]),
    ],
)
def test_an_older_sweep_json_gets_contrasts_inferred_from_its_axes(
    experiment: str, contrasts: list[tuple[str, ...]], derived: list[tuple[str, ...]], tmp_path: Path
) -> None:
    [spec] = build_sweeps(experiment, "laptop", None)
    SweepRecord.of(spec, {}, {"git_commit": "x"}).write(tmp_path)
    path = tmp_path / RECORD_FILE
    raw = json.loads(path.read_text())
    del raw["contrasts"], raw["derived"]
    path.write_text(json.dumps(raw))
    record = SweepRecord.read(tmp_path)
    assert record.contrasts is None and record.derived is None
    rebuilt = record.spec()
    assert rebuilt.contrasts == tuple(Contrast(*c) for c in contrasts)
    assert rebuilt.derived == tuple(Derived(*d) for d in derived)
    # What the declaration says today, too: an old folder reads as a new one would.
    assert rebuilt == spec

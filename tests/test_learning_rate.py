"""Fixed optimizer steps (train.steps), the learning_rate experiment, and its report section.

Trials are real (embedded MNIST, a few steps); the step count is read back from
the optimizer state a real checkpoint holds.
"""

from pathlib import Path

import polars as pl
import pytest
import torch
from backends import serial

from finalbn.analysis.learning_rate import compact, lr_table
from finalbn.analysis.report import write_report
from finalbn.config import TrialConfig, trial_id, validate
from finalbn.data import build_manifest
from finalbn.errors import UserError
from finalbn.records import SUMMARY, Summary, read_json
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.experiments import LEARNING_RATES, SMOKE_DATA, build_sweeps
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.spec import Contrast
from finalbn.tracking import NullTracker
from finalbn.train import train_trial, uses_feature_cache
from finalbn.train.presets import EMBEDDED_MNIST
from finalbn.train.recipe import round_steps, steps_per_epoch

FAKE_ROOT = "/nonexistent/plantvillage"
# 34 training images: 4 steps an epoch at batch 8, 1 at batch 32.
SMALL = EMBEDDED_MNIST.replace(data=SMOKE_DATA, train={"device": "cpu"})


def optimizer_steps(config: TrialConfig, tmp_path: Path) -> tuple[int, int]:
    """(optimizer steps taken, metric rows) of a real trial, from its checkpoint."""
    checkpoint = tmp_path / "checkpoint.pt"
    result = train_trial(config, build_manifest(config.data), checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=False)["optimizer"]["state"]
    return int(state[0]["step"]), len(result.epochs)


def test_ids_of_configs_without_steps_or_cpu_amp_are_unchanged() -> None:
    # Computed before train.steps and train.cpu_amp existed: adding a field must not orphan any finished trial.
    assert trial_id(TrialConfig(), "abc") == "5c3bafb5e165"
    assert trial_id(EMBEDDED_MNIST.replace(train={"cpu_amp": False}), "abc") == "fd895902e5b3"
    assert trial_id(TrialConfig().replace(train={"steps": 150}), "abc") != "5c3bafb5e165"
    # The laptop presets train in bf16 now: other numbers, other trials.
    assert trial_id(EMBEDDED_MNIST, "abc") != "fd895902e5b3"


@pytest.mark.parametrize(("batch_size", "steps"), [(8, 7), (32, 5)], ids=["part-of-a-pass", "many-passes"])
def test_fixed_steps_train_exactly_that_many(tmp_path: Path, batch_size: int, steps: int) -> None:
    config = SMALL.replace(train={"epochs": 3, "batch_size": batch_size, "steps": steps})
    assert optimizer_steps(config, tmp_path) == (steps, 3)


def test_without_steps_the_epochs_decide() -> None:
    assert steps_per_epoch(34, 8) == 4
    assert SMALL.train.steps is None


def test_epochs_count_optimizer_steps_as_before(tmp_path: Path) -> None:
    assert optimizer_steps(SMALL.replace(train={"epochs": 2, "batch_size": 8}), tmp_path) == (8, 2)


def test_rounds_split_the_steps_evenly() -> None:
    assert [round_steps(7, 3, e) for e in (1, 2, 3)] == [2, 2, 3]
    assert sum(round_steps(150, 10, e) for e in range(1, 11)) == 150


def test_fixed_steps_resume_exactly(tmp_path: Path) -> None:
    config = SMALL.replace(train={"epochs": 3, "batch_size": 8, "steps": 9})
    manifest = build_manifest(config.data)
    whole = train_trial(config, manifest)
    checkpoint = tmp_path / "checkpoint.pt"

    def stop_after_round_1(row: dict[str, float]) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_trial(config, manifest, on_epoch=stop_after_round_1, checkpoint=checkpoint)
    resumed = train_trial(config, manifest, checkpoint=checkpoint)
    assert resumed.final == whole.final
    assert [r["train_loss"] for r in resumed.epochs] == [r["train_loss"] for r in whole.epochs]


def test_steps_below_epochs_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^steps 2 < epochs 3: .*raise steps or lower epochs$"):
        validate(SMALL.replace(train={"epochs": 3, "steps": 2}))


def test_steps_is_an_axis_and_a_set_override() -> None:
    [spec] = build_sweeps("batch_size", "smoke", None)
    swept = apply(spec, Overrides(axes=("train.steps=8,16",)))
    assert sorted({t.config.train.steps for t in swept.trials()}) == [8, 16]
    fixed = apply(spec, Overrides(sets=("train.steps=12",)))
    assert {t.config.train.steps for t in fixed.trials()} == {12}
    assert apply(fixed, Overrides(sets=("train.steps=none",))).base.train.steps is None


def test_learning_rate_cpu_is_the_thesis_protocol_on_the_cached_trunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINALBN_FEATURE_CACHE", raising=False)
    rates, steps = build_sweeps("learning_rate", "cpu", FAKE_ROOT)
    configs = [t.config for t in rates.trials()]
    assert len(configs) == 3 * len(LEARNING_RATES) * 2 * 5
    assert {c.train.lr for c in configs} == set(LEARNING_RATES) and min(LEARNING_RATES) < 3e-3 < max(LEARNING_RATES)
    assert {c.data.plant for c in configs} == {"Apple", "Pepper", "Tomato"}
    assert {(c.data.train_majority, c.data.train_minority, c.train.epochs) for c in configs} == {(1000, 10, 10)}
    assert all(uses_feature_cache(c) and c.train.steps is None for c in configs)
    fixed = [t.config for t in steps.trials()]
    assert steps.name == "batch_steps-cpu" and steps.analysis == "batch_steps"
    # The steps batch 64 makes in the thesis' 10 epochs over 1,010 images.
    assert {c.train.steps for c in fixed} == {10 * steps_per_epoch(1010, 64)} == {150}
    assert sorted({c.train.batch_size for c in fixed}) == [16, 32, 64, 128, 256, 512]
    assert {c.model.final_norm for c in fixed} == {"bn", "none"}


@pytest.mark.parametrize("preset", ["smoke", "laptop"])
def test_small_presets_fix_the_steps_of_their_base(preset: str) -> None:
    _, steps = build_sweeps("learning_rate", preset, None)
    base = steps.base
    images = base.data.train_majority + base.data.train_minority
    assert base.train.steps == base.train.epochs * steps_per_epoch(images, base.train.batch_size)


@pytest.fixture(scope="module")
def smoke_sweeps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learning_rate")
    rates, steps = build_sweeps("learning_rate", "smoke", None)
    # Two batch sizes are enough for an optimum: 8 trials, as many as the learning-rate sweep.
    for spec in (rates, apply(steps, Overrides(axes=("train.batch_size=8,16",)))):
        report = run_sweep(spec, SweepOptions(out=out), serial(), NullTracker())
        assert not report.failed
    return out


@pytest.mark.slow
def test_every_trial_logs_what_explains_the_effect(smoke_sweeps: Path) -> None:
    trials = pl.read_parquet(smoke_sweeps / "learning_rate-smoke" / "trials.parquet")
    assert trials.height == 8
    for column in ("auc", "minority_prob_on_majority", "minority_prob_on_minority", "ece", "brier"):
        assert trials[column].is_not_null().all(), column
    # Only a final BN has a scale, a shift and a removed-BN twin.
    with_bn = trials.filter(pl.col("model.final_norm") == "bn")
    for column in ("bn_scale_minority", "bn_shift_3", "bn_var_8", "nobn_auc"):
        assert with_bn[column].is_not_null().all(), column
    assert trials.filter(pl.col("model.final_norm") == "none")["bn_scale_minority"].is_null().all()
    folder = next((smoke_sweeps / "learning_rate-smoke").glob("trials/*/summary.json")).parent
    assert "auc" in read_json(folder / SUMMARY, Summary).test.values()


@pytest.mark.slow
def test_report_sections_for_both_sweeps(smoke_sweeps: Path) -> None:
    # No Grad-CAM: it retrains two trials per report in `python -m finalbn.train` subprocesses (~7 s each), and
    # the sections asked here do not depend on it; test_analysis_e2e draws it from retrained trials.
    lr = write_report(smoke_sweeps / "learning_rate-smoke", gradcam=False)
    assert lr.kind == "learning_rate"
    caveat, finding = lr.headline.split("\n")
    assert caveat == "Learning rate x final BN: 2 seeds per learning rate: too few for reliable intervals; 5 needed."
    assert finding.startswith("Learning rate x final BN: all: bn - none in minority F1 ")
    gains = pl.read_csv(lr.html.parent / "tables" / "lr_bn_gain.csv")
    assert set(gains["metric"]) == {"f1_minority", "auc", "minority_prob_on_majority"}
    assert gains["pairs"].to_list() == [2] * gains.height
    table = pl.read_csv(lr.html.parent / "tables" / "lr_by_final_bn.csv")
    assert table.height == 4 and {"auc_mean", "bn_shift_minority_mean", "f1_minority_lo"} <= set(table.columns)
    steps = write_report(smoke_sweeps / "batch_steps-smoke", gradcam=False)
    assert steps.kind == "batch_steps"
    assert steps.headline.startswith("At a fixed 4 optimizer steps: Batch optimum: ")


def test_the_report_table_names_every_learning_rate_exactly() -> None:
    # Rounded like the metrics (3 digits), 1e-4 and 3e-4 both printed 0.000 in docs/reproduction.md.
    trials = pl.DataFrame(
        {
            "train.lr": [1e-4, 1e-4, 3e-4, 3e-4, 3e-3, 3e-3],
            "model.final_norm": ["bn", "none"] * 3,
            "train.seed": [0] * 6,
            "f1_minority": [0.7, 0.6, 0.8, 0.75, 0.97, 0.7],
        }
    )
    bn = Contrast("model.final_norm", "bn", "none")
    table = compact(lr_table(trials, bn), bn, ())
    assert table["train.lr"].to_list() == ["0.0001", "0.0001", "0.0003", "0.0003", "0.003", "0.003"]
    assert table["f1_minority_mean"].to_list() == pytest.approx([0.7, 0.6, 0.8, 0.75, 0.97, 0.7])

"""One trial end to end on real data: embedded MNIST and real PlantVillage JPEGs."""

import ast
import functools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import finalbn.train.loop
import finalbn.train.recipe
import finalbn.train.results
from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig, trial_id
from finalbn.data import Manifest, build_manifest
from finalbn.models import create_model
from finalbn.provenance import git_commit
from finalbn.records import SUMMARY, Summary, read_json
from finalbn.train import TrialResult, checkpoint_epoch, class_weights, train_trial
from finalbn.train.cli import train_main
from finalbn.train.presets import EMBEDDED_MNIST
from finalbn.train.recipe import amp_dtype, native_cpu_bf16
from finalbn.train.results import run_config, run_trial

REPO = Path(__file__).resolve().parents[1]


def mnist(epochs: int = 2, **train: object) -> TrialConfig:
    return EMBEDDED_MNIST.replace(train={"epochs": epochs, **train})


@functools.cache
def manifest_of(data: DataConfig) -> Manifest:
    """One manifest per data config, built once, as a sweep's planner does."""
    return build_manifest(data)


def trained(config: TrialConfig, **options: object) -> TrialResult:
    """A plain user call: the trial id is computed from the manifest."""
    return train_trial(config, manifest_of(config.data), **options)


def test_cli_writes_the_result_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m finalbn.train`` (its entry, in this process: test_help runs the module for real)."""
    monkeypatch.chdir(REPO)
    assert train_main(["--epochs", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 3
    assert "test_f1[3]" in epoch_lines[0] and "test_f1[8]" in epoch_lines[0]
    assert "final BN removed" in out

    [folder] = list(tmp_path.iterdir())
    record = json.loads((folder / "config.json").read_text())
    assert record["trial_id"] == folder.name
    assert record["versions"]["git_commit"] == git_commit()
    assert record["config"]["data"]["minority"] == ["3"]
    assert record["classes"] == ["8", "3"]

    metrics = pl.read_parquet(folder / "metrics.parquet")
    assert metrics["epoch"].to_list() == [1, 2, 3]
    for column in (
        "train_loss",
        "val_loss",
        "val_accuracy",
        "test_accuracy",
        "test_f1_3",
        "test_precision_8",
        "val_recall_3",
        "test_ece",
        "test_brier",
        "seconds",
    ):
        assert metrics[column].is_finite().all(), column

    manifest = pl.read_parquet(folder / "manifest.parquet")
    counts = manifest.group_by("split", "label").len()
    assert {(split, label): n for split, label, n in counts.rows()} == {
        ("test", "3"): 150,
        ("test", "8"): 150,
        ("train", "3"): 3,
        ("train", "8"): 300,
        ("val", "3"): 3,
        ("val", "8"): 50,
    }

    predictions = pl.read_parquet(folder / "predictions.parquet")
    assert predictions.height == 300
    probs = predictions.select("prob_8", "prob_3").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert {"nobn_prob_3", "nobn_predicted_index"} <= set(predictions.columns)

    confusion = (folder / "confusion.csv").read_text().splitlines()
    assert confusion[0].split(",")[1:] == ["8", "3"]
    assert sum(int(v) for line in confusion[1:] for v in line.split(",")[1:]) == 300

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test"]["f1_minority"] == pytest.approx(metrics["test_f1_minority"][-1])
    state = torch.load(folder / "model.pt", weights_only=True)
    assert "final_norm.running_mean" in state


def test_run_trial_writes_the_planned_folder_and_recomputes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a sweep worker calls: config, manifest, id and commit are the planner's."""
    config = mnist(epochs=1, device="cpu")
    manifest = manifest_of(config.data)

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the planner has done this already")

    monkeypatch.setattr(finalbn.train.results, "build_manifest", not_here)
    monkeypatch.setattr(finalbn.train.results, "validate", not_here)
    monkeypatch.setattr(finalbn.train.results, "make_trial_id", not_here)
    monkeypatch.setattr(finalbn.train.loop, "make_trial_id", not_here)
    result, folder = run_trial(
        config, manifest, "planned-id", tmp_path / "sweep" / "planned-id", git_commit="0123abc", save_model=False
    )
    assert folder == tmp_path / "sweep" / "planned-id" and result.trial_id == "planned-id"
    record = json.loads((folder / "config.json").read_text())
    assert record["trial_id"] == "planned-id" and record["versions"]["git_commit"] == "0123abc"
    assert record["manifest_fingerprint"] == manifest.fingerprint()
    assert {"finalbn", "python", "torch"} <= set(record["versions"])
    assert pl.read_parquet(folder / "metrics.parquet")["trial_id"].to_list() == ["planned-id"]
    assert Manifest.read(folder / "manifest.parquet").fingerprint() == manifest.fingerprint()
    assert not (folder / "model.pt").exists()


def test_a_plain_call_computes_the_trial_id_from_the_manifest() -> None:
    config = mnist(epochs=1, device="cpu")
    assert trained(config).trial_id == trial_id(config, manifest_of(config.data).fingerprint())


def test_trial_code_never_imports_the_command_line() -> None:
    """cli -> results -> train: a way back from train to cli would be a cycle."""
    package = REPO / "finalbn" / "train"
    # The result folder's writer is finalbn/train/results.py since the layout move: in the package.
    for path in package.glob("*.py"):
        if path.name == "__main__.py":
            continue
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not {name for name in imported if name and name.startswith(("finalbn.cli", "finalbn.sweep"))}, path


def numbers(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Epoch rows without wall-clock time, the one column that may differ between runs."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_same_seed_same_metrics_other_seed_differs() -> None:
    first = trained(mnist())
    second = trained(mnist())
    assert numbers(first.epochs) == numbers(second.epochs)
    assert first.final == second.final
    assert first.trial_id == second.trial_id
    other = trained(mnist(seed=1))
    assert numbers(other.epochs) != numbers(first.epochs)
    assert other.trial_id != first.trial_id


@pytest.mark.skipif(not native_cpu_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_cpu_amp_trains_in_bf16_with_a_float32_head_and_says_so(tmp_path: Path) -> None:
    config = mnist(epochs=1, cpu_amp=True, device="cpu")
    fp32 = config.replace(train={"cpu_amp": False})
    assert trial_id(fp32, "f") != trial_id(config, "f")
    bf16 = trained(config)
    plain = trained(fp32)
    assert (bf16.precision, plain.precision) == ("bfloat16", "float32")
    # Rounding the convolutions to bf16 changes the numbers, not what is learnt.
    assert bf16.epochs[0]["train_loss"] != plain.epochs[0]["train_loss"]
    assert abs(bf16.epochs[0]["train_loss"] - plain.epochs[0]["train_loss"]) < 0.05
    # The logits and the final BN over them stay float32 under bf16 autocast.
    model = create_model(config.model, num_classes=2, in_channels=1, image_size=28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.forward_features(torch.zeros(4, 1, 28, 28)).dtype == torch.bfloat16
        assert model(torch.zeros(4, 1, 28, 28)).dtype == torch.float32
    folder = tmp_path / "trial"
    run_trial(config, manifest_of(config.data), bf16.trial_id, folder, git_commit=None)
    assert read_json(folder / SUMMARY, Summary).precision == "bfloat16"


def test_cpu_amp_is_float32_where_the_cpu_has_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finalbn.train.recipe, "native_cpu_bf16", lambda: False)
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, TrainConfig(cpu_amp=True)) is None
    assert trained(mnist(epochs=1, cpu_amp=True, device="cpu")).precision == "float32"
    monkeypatch.setattr(finalbn.train.recipe, "native_cpu_bf16", lambda: True)
    assert amp_dtype(cpu, TrainConfig(cpu_amp=True)) == torch.bfloat16
    assert amp_dtype(cpu, TrainConfig(cpu_amp=False)) is None
    # amp is CUDA's switch: it never turns a CPU to bf16.
    assert amp_dtype(cpu, TrainConfig(amp=True, cpu_amp=False)) is None


def test_final_bn_removed_metrics_only_when_the_model_has_one() -> None:
    with_bn = trained(mnist(epochs=1))
    assert "nobn_f1_minority" in with_bn.final
    without = trained(mnist(epochs=1).replace(model={"final_norm": "none"}))
    assert not any(key.startswith("nobn_") for key in without.final)
    assert "final_norm.running_mean" not in without.state_dict


@pytest.mark.parametrize(
    "model, train",
    [
        ({"output": "sigmoid"}, {"loss": "bce"}),
        ({}, {"loss": "bce"}),
        ({"final_norm": "selu", "final_bias": False}, {}),
        ({"backbone": "fc128", "first_bn": True}, {}),
        (
            {},
            {"weighted_loss": True, "augment": True, "mixup_alpha": 0.4, "weight_decay": 1e-2, "label_smoothing": 0.1},
        ),
        ({}, {"optimizer": "sgd", "schedule": "constant"}),
    ],
)
def test_thesis_variants_train(model: dict, train: dict) -> None:
    config = mnist(epochs=1, **train).replace(model=model)
    result = trained(config)
    [row] = result.epochs
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert 0.0 <= row["test_f1_3"] <= 1.0
    # Every variant is a distinct trial.
    assert result.trial_id != trained(mnist(epochs=1)).trial_id


def test_knobs_change_the_training() -> None:
    plain = trained(mnist(epochs=1)).epochs[0]["train_loss"]
    for knob in ({"weighted_loss": True}, {"augment": True}, {"mixup_alpha": 0.4}, {"label_smoothing": 0.1}):
        assert trained(mnist(epochs=1, **knob)).epochs[0]["train_loss"] != plain, knob


def test_class_weights_balance_total_weight() -> None:
    labels = torch.tensor([0] * 1000 + [1] * 10)
    weights = class_weights(labels, 2)
    assert weights[1] / weights[0] == pytest.approx(100.0)
    assert (weights * torch.bincount(labels)).tolist() == pytest.approx([505.0, 505.0])


@pytest.mark.plantvillage
def test_plantvillage_trial_on_real_images(plantvillage_root: Path, tmp_path: Path) -> None:
    config = TrialConfig(
        data=DataConfig(
            source="plantvillage",
            root=str(plantvillage_root),
            plant="Apple",
            train_majority=200,
            train_minority=10,
            val_majority=30,
            val_minority=5,
            test_majority=50,
            test_minority=50,
            image_size=64,
        ),
        model=ModelConfig(backbone="resnet18", weights="none", unfreeze="all"),
        train=TrainConfig(epochs=2, batch_size=32, augment=True),
    )
    result, folder = run_config(config, tmp_path, save_model=False)
    assert [row["epoch"] for row in result.epochs] == [1.0, 2.0]
    assert result.predictions.height == 100
    assert set(result.predictions["label"]) == {"healthy", "unhealthy"}
    assert result.confusion.sum() == 100
    assert 0.0 <= result.final["f1_unhealthy"] <= 1.0
    assert "nobn_f1_unhealthy" in result.final
    assert not (folder / "model.pt").exists()
    manifest = pl.read_parquet(folder / "manifest.parquet")
    assert manifest.filter(pl.col("split") == "train").height == 210


class Preempted(Exception):
    """Stands in for the kill a preempted Slurm job gets mid-trial."""


@pytest.mark.parametrize(
    "model, train",
    [
        # Trained whole: batch order, DA draws, MX weights and partners all continue.
        ({"head": "thesis"}, {"augment": True, "mixup_alpha": 0.4, "weighted_loss": True}),
        # A frozen backbone: the head trains on cached features; its dropout continues.
        ({"head": "thesis", "unfreeze": "none"}, {}),
    ],
    ids=["whole-network", "cached-features"],
)
def test_interrupted_trial_resumes_where_it_stopped(tmp_path: Path, model: dict, train: dict) -> None:
    config = mnist(epochs=4, device="cpu", **train).replace(model=model)
    uninterrupted = trained(config, cache_dir=tmp_path)
    checkpoint = tmp_path / "trial" / "checkpoint.pt"
    assert checkpoint_epoch(checkpoint) == 0

    def stop_in_epoch_3(row: dict[str, float]) -> None:
        if row["epoch"] == 3:
            raise Preempted

    with pytest.raises(Preempted):
        trained(config, on_epoch=stop_in_epoch_3, checkpoint=checkpoint, cache_dir=tmp_path)
    assert checkpoint_epoch(checkpoint) == 2
    assert checkpoint_epoch(checkpoint, trial=uninterrupted.trial_id) == 2

    seen: list[float] = []
    resumed = trained(config, on_epoch=lambda row: seen.append(row["epoch"]), checkpoint=checkpoint, cache_dir=tmp_path)
    assert seen == [3.0, 4.0]
    assert numbers(resumed.epochs) == numbers(uninterrupted.epochs)
    assert resumed.final == uninterrupted.final
    assert resumed.predictions.equals(uninterrupted.predictions)
    for key, tensor in uninterrupted.state_dict.items():
        assert torch.equal(resumed.state_dict[key], tensor), key
    # The caller deletes a finished trial's checkpoint; until then it says 4 of 4.
    assert checkpoint_epoch(checkpoint) == 4


def test_checkpoint_of_another_trial_is_ignored_and_replaced(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    first = trained(mnist(epochs=2, device="cpu"), checkpoint=checkpoint)
    seen: list[float] = []
    other = trained(
        mnist(epochs=2, device="cpu", seed=1), on_epoch=lambda row: seen.append(row["epoch"]), checkpoint=checkpoint
    )
    assert seen == [1.0, 2.0]
    assert numbers(other.epochs) == numbers(trained(mnist(epochs=2, device="cpu", seed=1)).epochs)
    assert checkpoint_epoch(checkpoint, trial=other.trial_id) == 2
    assert checkpoint_epoch(checkpoint, trial=first.trial_id) == 0
    # A half-written or foreign file only means starting over.
    checkpoint.write_bytes(b"not a checkpoint")
    assert checkpoint_epoch(checkpoint) == 0
    assert len(trained(mnist(epochs=1, device="cpu"), checkpoint=checkpoint).epochs) == 1

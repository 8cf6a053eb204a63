"""The decoded-image cache and the frozen-backbone feature cache, on real PlantVillage JPEGs and real MNIST digits."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from finalbn.config import SPLITS, DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.data import build_manifest, load_split_tensors
from finalbn.data.cache import cached_images
from finalbn.errors import UserError
from finalbn.presets import EMBEDDED_MNIST
from finalbn.train import TrialResult, train_trial

SMALL = dict(train_majority=40, train_minority=8, val_majority=6, val_minority=3, test_majority=12, test_minority=12)


def pv(root: Path, **changes: object) -> DataConfig:
    return DataConfig(
        **{"source": "plantvillage", "root": str(root), "plant": "Apple", "image_size": 64, **SMALL, **changes}
    )


def trained(config: TrialConfig, cache_dir: Path) -> TrialResult:
    return train_trial(config, build_manifest(config.data), cache_dir=cache_dir)


def numbers(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def entries(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / kind).glob("*.npy")) if (cache / kind).is_dir() else []


# ------------------------------------------------------------ decoded images


@pytest.mark.plantvillage
def test_cached_pixels_are_the_decoded_pixels(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = pv(plantvillage_root)
    manifest = build_manifest(cfg)
    cached = load_split_tensors(manifest, cfg, cache_dir=tmp_path)
    [entry] = entries(tmp_path, "images")
    built = entry.stat().st_mtime_ns
    again = load_split_tensors(manifest, cfg, cache_dir=tmp_path)
    assert entry.stat().st_mtime_ns == built, "a warm entry must be read, not rebuilt"
    monkeypatch.setenv("FINALBN_IMAGE_CACHE", "0")
    decoded = load_split_tensors(manifest, cfg, cache_dir=tmp_path)
    for split in SPLITS:
        assert cached.x[split].dtype == torch.uint8
        assert cached.x[split].shape == (manifest.table.filter(pl.col("split") == split).height, 3, 64, 64)
        assert torch.equal(cached.x[split], decoded.x[split]), split
        assert torch.equal(again.x[split], decoded.x[split]), split
    # Writing to the tensors changes this process's copy, never the cache file.
    monkeypatch.delenv("FINALBN_IMAGE_CACHE")
    cached.x["train"].fill_(0)
    assert torch.equal(load_split_tensors(manifest, cfg, cache_dir=tmp_path).x["train"], decoded.x["train"])
    # Another image size is another entry; no temporary files are left behind.
    load_split_tensors(manifest, pv(plantvillage_root, image_size=32), cache_dir=tmp_path)
    assert len(entries(tmp_path, "images")) == 2
    assert not list((tmp_path / "images").glob(".*tmp*"))


@pytest.mark.plantvillage
def test_trial_is_bit_identical_with_and_without_the_image_cache(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrialConfig(
        data=pv(plantvillage_root, image_size=32),
        model=ModelConfig(backbone="simple_cnn", weights="none", unfreeze="all"),
        train=TrainConfig(epochs=1, batch_size=16, device="cpu"),
    )
    cached = trained(config, cache_dir=tmp_path)
    assert entries(tmp_path, "images")
    monkeypatch.setenv("FINALBN_IMAGE_CACHE", "0")
    uncached = trained(config, cache_dir=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
    assert numbers(cached.epochs) == numbers(uncached.epochs)
    assert cached.final == uncached.final
    assert cached.predictions.equals(uncached.predictions)


@pytest.mark.plantvillage
def test_cache_errors_name_the_fix_and_leave_no_entry(plantvillage_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for folder, label in (("Apple___healthy", "good"), ("Apple___Apple_scab", "sick")):
        (root / label).mkdir(parents=True)
        for path in sorted((plantvillage_root / folder).iterdir())[:12]:
            shutil.copy(path, root / label / path.name)
    counts = dict(train_majority=6, train_minority=6, val_majority=2, val_minority=2, test_majority=4, test_minority=4)
    cfg = DataConfig(source="folder", root=str(root), majority=("good",), minority=("sick",), image_size=32, **counts)
    manifest = build_manifest(cfg)
    (root / manifest.table["path"][0]).unlink()
    with pytest.raises(UserError, match="rebuild the manifest"):
        load_split_tensors(manifest, cfg, cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")] == []
    # A cache folder that cannot be made names the setting to change.
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="point FINALBN_CACHE_DIR at a writable folder"):
        load_split_tensors(manifest, cfg, cache_dir=tmp_path / "a-file")


def build_entry(root: Path, files: pl.DataFrame, cache: Path, start: Any, inodes: Any) -> None:
    """One of several processes asking for the same entry at once; reports the file it got."""
    start.wait()
    store = cached_images(root, files, "plantvillage", 48, cache)
    assert store.shape == (files.height, 3, 48, 48)
    inodes.put(next((cache / "images").glob("*.npy")).stat().st_ino)


@pytest.mark.plantvillage
def test_processes_building_one_entry_at_once_share_one_build(plantvillage_root: Path, tmp_path: Path) -> None:
    manifest = build_manifest(pv(plantvillage_root, train_majority=400))
    files = manifest.table.select("path", "sha256").sort("path")
    spawn = multiprocessing.get_context("spawn")
    start, inodes = spawn.Barrier(2), spawn.Queue()
    args = (plantvillage_root, files, tmp_path, start, inodes)
    workers = [spawn.Process(target=build_entry, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    got = [inodes.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    [entry] = entries(tmp_path, "images")
    # The loser of the race read the winner's file instead of building and replacing it.
    assert got == [entry.stat().st_ino] * 2
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [entry.name, f"{entry.name}.lock"]


# -------------------------------------------------------- backbone features


def assert_same_results(cached: TrialResult, uncached: TrialResult) -> None:
    assert len(cached.epochs) == len(uncached.epochs)
    for ours, theirs in zip(numbers(cached.epochs), numbers(uncached.epochs), strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key
    assert cached.final.keys() == uncached.final.keys()
    for key in cached.final:
        assert cached.final[key] == pytest.approx(uncached.final[key], abs=1e-4), key
    assert cached.predictions.columns == uncached.predictions.columns
    for column in cached.predictions.columns:
        if column.startswith(("prob_", "nobn_prob_")):
            np.testing.assert_allclose(cached.predictions[column], uncached.predictions[column], atol=1e-4)
        else:
            assert cached.predictions[column].to_list() == uncached.predictions[column].to_list(), column
    # The saved model is the whole network, backbone included, with the same weights.
    assert cached.state_dict.keys() == uncached.state_dict.keys()
    assert any(key.startswith("backbone.") for key in cached.state_dict)
    for key, tensor in cached.state_dict.items():
        torch.testing.assert_close(tensor, uncached.state_dict[key], atol=1e-4, rtol=0, msg=key)


@pytest.mark.plantvillage
def test_frozen_resnet_trains_its_head_on_cached_features(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrialConfig(
        data=pv(plantvillage_root),
        # The thesis head has dropout and BN layers; the final BN sits on the logits.
        model=ModelConfig(backbone="resnet18", weights="none", unfreeze="none"),
        train=TrainConfig(epochs=2, batch_size=16, weighted_loss=True, device="cpu"),
    )
    cached = trained(config, cache_dir=tmp_path)
    [features] = entries(tmp_path, "features")
    assert np.load(features, mmap_mode="r").shape == (len(cached.manifest.table), 512)
    assert "nobn_f1_unhealthy" in cached.final
    monkeypatch.setenv("FINALBN_FEATURE_CACHE", "0")
    uncached = trained(config, cache_dir=tmp_path)
    assert entries(tmp_path, "features") == [features]
    assert_same_results(cached, uncached)


def test_frozen_cnn_on_mnist_same_results_and_features_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = EMBEDDED_MNIST.replace(model={"unfreeze": "none", "head": "thesis"}, train={"epochs": 2, "device": "cpu"})
    cached = trained(config, cache_dir=tmp_path)
    # Same seed, other head setting: the backbone is the same, so are its features.
    trained(config.replace(model={"final_norm": "none"}), cache_dir=tmp_path)
    assert len(entries(tmp_path, "features")) == 1
    # Another seed draws other random backbone weights: other features.
    trained(config.replace(train={"seed": 1}), cache_dir=tmp_path)
    assert len(entries(tmp_path, "features")) == 2
    monkeypatch.setenv("FINALBN_FEATURE_CACHE", "0")
    assert_same_results(cached, trained(config, cache_dir=tmp_path))


@pytest.mark.parametrize(
    "model, train",
    [
        ({"unfreeze": "none"}, {"augment": True}),
        ({"unfreeze": "none"}, {"mixup_alpha": 0.4}),
        ({"unfreeze": "bn"}, {}),
        ({"unfreeze": "all"}, {}),
    ],
    ids=["DA", "MX", "unfreeze-bn", "unfreeze-all"],
)
def test_no_feature_cache_when_the_backbone_input_or_weights_change(tmp_path: Path, model: dict, train: dict) -> None:
    config = EMBEDDED_MNIST.replace(model=model, train={"epochs": 1, "device": "cpu", **train})
    trained(config, cache_dir=tmp_path)
    assert entries(tmp_path, "features") == []

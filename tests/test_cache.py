"""The decoded-image cache and the frozen-backbone feature cache, on real PlantVillage JPEGs and real MNIST digits."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from finalbn.config import SPLITS, DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.data import build_manifest, load_split_tensors
from finalbn.data.cache import cached_images, cached_rows
from finalbn.errors import UserError
from finalbn.models import create_model
from finalbn.train import TrialResult, train_trial
from finalbn.train.features import Normalizer, cached_features, extract_features
from finalbn.train.presets import EMBEDDED_MNIST

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
    tensors = load_split_tensors(manifest, cfg, cache_dir=tmp_path)
    assert entries(tmp_path, "images") == [], "pixels are decoded on first use, not before"
    cached = tensors.x
    [entry] = entries(tmp_path, "images")
    built = entry.stat().st_mtime_ns
    again = load_split_tensors(manifest, cfg, cache_dir=tmp_path).x
    assert entry.stat().st_mtime_ns == built, "a warm entry must be read, not rebuilt"
    monkeypatch.setenv("FINALBN_IMAGE_CACHE", "0")
    decoded = load_split_tensors(manifest, cfg, cache_dir=tmp_path).x
    for split in SPLITS:
        assert cached[split].dtype == torch.uint8
        assert cached[split].shape == (manifest.table.filter(pl.col("split") == split).height, *tensors.image_shape)
        assert torch.equal(cached[split], decoded[split]), split
        assert torch.equal(again[split], decoded[split]), split
    # Writing to the tensors changes this process's copy, never the cache file.
    monkeypatch.delenv("FINALBN_IMAGE_CACHE")
    cached["train"].fill_(0)
    assert torch.equal(load_split_tensors(manifest, cfg, cache_dir=tmp_path).x["train"], decoded["train"])
    # Another image size is another entry; no temporary files are left behind.
    assert (
        load_split_tensors(manifest, pv(plantvillage_root, image_size=32), cache_dir=tmp_path).x["val"].shape[-1] == 32
    )
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
    tensors = load_split_tensors(manifest, cfg, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="rebuild the manifest"):
        tensors.x["train"].sum()
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")] == []
    # A cache folder that cannot be made names the setting to change.
    (tmp_path / "a-file").write_text("")
    tensors = load_split_tensors(manifest, cfg, cache_dir=tmp_path / "a-file")
    with pytest.raises(UserError, match="point FINALBN_CACHE_DIR at a writable folder"):
        tensors.x["train"].sum()


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


def frozen_pv(root: Path, **changes: object) -> TrialConfig:
    return TrialConfig(
        data=pv(root, **changes),
        model=ModelConfig(backbone="resnet18", weights="none", unfreeze="none"),
        train=TrainConfig(epochs=1, batch_size=16, device="cpu"),
    )


def shard_rows(cache: Path) -> list[int]:
    """Rows per feature shard, in name order."""
    return [len(index.read_text().split()) for index in sorted((cache / "features").glob("*.sha256"))]


@pytest.mark.plantvillage
def test_features_are_cached_per_image_and_equal_the_extracted_ones(plantvillage_root: Path, tmp_path: Path) -> None:
    config = frozen_pv(plantvillage_root)
    torch.manual_seed(0)
    model = create_model(config.model, num_classes=2, in_channels=3, image_size=64)
    normalize = Normalizer(
        torch.tensor((0.485, 0.456, 0.406)).view(1, -1, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(1, -1, 1, 1)
    )
    cpu = torch.device("cpu")
    first = load_split_tensors(build_manifest(config.data), config.data, cache_dir=tmp_path)
    cached = cached_features(model, first, normalize, cpu, tmp_path)
    # A cold cache extracts every image in manifest order, in the same batches as one call over them all.
    extracted = extract_features(model, torch.cat([first.x[split] for split in SPLITS]), normalize)
    assert np.array_equal(torch.cat([cached[split] for split in SPLITS]).numpy(), extracted)
    # Another draw (another split seed, more minority images) shares many images with the first.
    other = pv(plantvillage_root, split_seed=1, train_minority=12)
    second = load_split_tensors(build_manifest(other), other, cache_dir=tmp_path)
    again = cached_features(model, second, normalize, cpu, tmp_path)
    ids = [sha for split in SPLITS for sha in second.sha256[split]]
    known = {sha for split in SPLITS for sha in first.sha256[split]}
    new = list(dict.fromkeys(sha for sha in ids if sha not in known))
    assert known & set(ids) and new, "the two draws must overlap and differ"
    # Only the images the first trial did not have were extracted: one more shard with their rows.
    assert shard_rows(tmp_path) in ([len(known), len(new)], [len(new), len(known)])
    rows = torch.cat([again[split] for split in SPLITS]).numpy()
    stored = dict(zip([sha for split in SPLITS for sha in first.sha256[split]], extracted, strict=True))
    for row, sha in zip(rows, ids, strict=True):
        if sha in stored:
            assert np.array_equal(row, stored[sha]), "a cached row is the stored row, bit for bit"
    images = torch.cat([second.x[split] for split in SPLITS])
    np.testing.assert_allclose(rows, extract_features(model, images, normalize), rtol=1e-5, atol=1e-6)


@pytest.mark.plantvillage
def test_a_trial_with_all_features_cached_decodes_no_pixels(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = frozen_pv(plantvillage_root)
    manifest = build_manifest(config.data)
    warm = train_trial(config, manifest, cache_dir=tmp_path / "cache")
    # The same images under a root that holds none of them: reading any pixel fails.
    gone = dataclasses.replace(manifest, root=str(tmp_path / "gone"))
    (tmp_path / "gone").mkdir()
    with pytest.raises(UserError, match="rebuild the manifest"):
        train_trial(config, gone, cache_dir=tmp_path / "cold")
    # Another head on the same features: the same result with or without the image files.
    head = config.replace(model={"final_norm": "none"})
    assert train_trial(head, gone, cache_dir=tmp_path / "cache").final == trained(head, tmp_path / "cache").final
    assert entries(tmp_path / "cache", "images") == [], "a frozen trial needs no decoded-image cache"
    # Cache off: the trial decodes again, with the same results.
    monkeypatch.setenv("FINALBN_FEATURE_CACHE", "0")
    with pytest.raises(UserError, match="rebuild the manifest"):
        train_trial(config, gone, cache_dir=tmp_path / "cache")
    assert_same_results(warm, train_trial(config, manifest, cache_dir=tmp_path / "cache"))


# ------------------------------------------------------------ rows by sha256

DIM = 8


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def rows_of(ids: list[str]) -> np.ndarray:
    """A row per id that only that id has: its first 32 digest bytes as 8 float32."""
    return (
        np.frombuffer(b"".join(bytes.fromhex(i) for i in ids), dtype=np.uint8)
        .reshape(-1, DIM, 4)[..., 0]
        .astype(np.float32)
    )


def test_rows_are_built_once_per_id_and_broken_shards_rebuilt(tmp_path: Path) -> None:
    built: list[list[str]] = []

    def build(ids: list[str]) -> np.ndarray:
        built.append(ids)
        return rows_of(ids)

    first, second = [sha(n) for n in range(5)], [sha(n) for n in (3, 4, 4, 5, 6)]
    assert np.array_equal(cached_rows(tmp_path, "k", first, DIM, build), rows_of(first))
    assert np.array_equal(cached_rows(tmp_path, "k", second, DIM, build), rows_of(second))
    assert np.array_equal(cached_rows(tmp_path, "k", first + second, DIM, build), rows_of(first + second))
    # Repeats are built once; what a shard holds is never built again; another key is another store.
    assert built == [first, [sha(5), sha(6)]]
    cached_rows(tmp_path, "other", first[:1], DIM, build)
    assert built[-1] == first[:1]
    # A truncated shard and one whose index lost a line are deleted and their rows built again.
    [big, small] = sorted((tmp_path.glob("k-*.npy")), key=lambda p: p.stat().st_size, reverse=True)
    big.write_bytes(big.read_bytes()[:100])
    index = small.with_suffix(".sha256")
    index.write_text(index.read_text().splitlines()[0] + "\n")
    built.clear()
    assert np.array_equal(cached_rows(tmp_path, "k", second, DIM, build), rows_of(second))
    assert built == [[sha(3), sha(4), sha(5), sha(6)]]
    assert not big.exists() and not small.exists() and not index.exists()
    assert len(list(tmp_path.glob("k-*.sha256"))) == 1
    assert not list(tmp_path.glob(".*tmp*"))


def build_rows(cache: Path, ids: list[str], start: Any, log: Path) -> None:
    """One of several processes asking for overlapping rows at once; logs every id it builds."""

    def build(missing: list[str]) -> np.ndarray:
        # Slow enough that the other process asks while this one builds.
        time.sleep(1.0)
        with log.open("a") as handle:
            handle.write("".join(f"{i}\n" for i in missing))
        return rows_of(missing)

    start.wait()
    assert np.array_equal(cached_rows(cache, "k", ids, DIM, build), rows_of(ids))


def test_processes_asking_for_overlapping_rows_build_each_once(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    start, log = spawn.Barrier(2), tmp_path / "built.txt"
    wanted = [[sha(n) for n in range(0, 30)], [sha(n) for n in range(10, 40)]]
    workers = [spawn.Process(target=build_rows, args=(tmp_path / "cache", ids, start, log)) for ids in wanted]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    built = log.read_text().split()
    assert sorted(built) == sorted({sha(n) for n in range(40)})

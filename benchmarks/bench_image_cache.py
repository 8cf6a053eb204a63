"""Decoded-image cache: normalised 224 px training batches per second against torchvision's usual input pipeline.

Both deliver one trial's input: the thesis' 10 epochs of shuffled batches of
64 float images, normalised with the ImageNet mean/std, from the training
split of one plant's thesis-protocol manifest (Apple: 1,000 healthy + 10
diseased real PlantVillage JPEGs), the same count of batches on both sides:

(a) ``datasets.ImageFolder`` + PIL ``Resize(224)``, ``ToTensor``, ``Normalize``
    + ``DataLoader(num_workers=W, shuffle=True)``, one fresh pass per epoch
    (workers start with it, as in a loop without persistent workers);
(b) the tool: ``load_split_tensors`` from a warm cache (the memory-mapped
    uint8 store, built once beforehand), then per batch a shuffled index and
    the trainer's own ``Normalizer`` (uint8 -> float / 255, minus mean, over std).

W = os.cpu_count() for both; both read every page of every batch they deliver.
The one-time build of the cache (decoding every image of the manifest into the
store) is its own row. Needs the PlantVillage subset: FINALBN_PLANTVILLAGE,
else ../shared/data/plantvillage.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from finalbn.config import DataConfig
from finalbn.data import Manifest, build_manifest, load_split_tensors
from finalbn.data.sources import IMAGENET_MEAN, IMAGENET_STD
from finalbn.train import Normalizer

TARGET = 5.0
BATCH = 64
SIZE = 224
REPO = Path(__file__).resolve().parents[1]


def plantvillage_root() -> Path:
    root = Path(os.environ.get("FINALBN_PLANTVILLAGE") or REPO.parent / "shared" / "data" / "plantvillage")
    if not root.is_dir():
        raise SystemExit(f"PlantVillage subset not found at {root}: set FINALBN_PLANTVILLAGE to its folder")
    return root


def image_folder(manifest: Manifest, split: str, folder: Path) -> Path:
    """The split's files as ImageFolder wants them, one folder per class (symlinks, no copies)."""
    root = Path(manifest.root or "")
    for path, label in manifest.table.filter(pl.col("split") == split).select("path", "label").rows():
        link = folder / label / Path(path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root / path)
    return folder


def torchvision_epochs(folder: Path, epochs: int, batches: int, workers: int) -> float:
    """Seconds for ``epochs`` fresh shuffled passes of ``batches`` batches each through the usual pipeline."""
    pipeline = transforms.Compose(
        [transforms.Resize(SIZE), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(folder), transform=pipeline),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    started = time.perf_counter()
    for _ in range(epochs):
        delivered = 0
        for images, _ in loader:
            assert images.shape == (BATCH, 3, SIZE, SIZE) and images.dtype == torch.float32
            touch(images)
            delivered += 1
        assert delivered == batches
    return time.perf_counter() - started


def cached_epochs(manifest: Manifest, cfg: DataConfig, cache: Path, epochs: int, batches: int, seed: int) -> float:
    """Seconds to map the splits from the warm cache and deliver epochs x batches batches as the trainer does."""
    started = time.perf_counter()
    data = load_split_tensors(manifest, cfg, cache_dir=cache)
    x = data.x["train"]
    normalize = Normalizer(torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, batches * BATCH, BATCH):
            images = normalize(x[order[start : start + BATCH]])
            assert images.shape == (BATCH, 3, SIZE, SIZE) and images.dtype == torch.float32
            touch(images)
    return time.perf_counter() - started


def touch(images: torch.Tensor) -> None:
    """Read one float per memory page, as the model's first layer would read them all.

    A DataLoader's batch arrives in shared memory its worker wrote: the
    consumer pays the page faults when it first reads it. Touching every page
    in both pipelines counts that cost on both sides.
    """
    images.view(-1)[::1024].sum()


def run(quick: bool = False) -> list[dict[str, object]]:
    workers = os.cpu_count() or 1
    # The thesis trains 10 epochs; quick runs deliver one.
    epochs, repeats = (1, 1) if quick else (10, 3)
    cfg = DataConfig(root=str(plantvillage_root()), plant="Apple", image_size=SIZE)
    manifest = build_manifest(cfg)
    batches = manifest.table.filter(pl.col("split") == "train").height // BATCH
    images = epochs * batches * BATCH
    with tempfile.TemporaryDirectory() as temp:
        folder = image_folder(manifest, "train", Path(temp) / "imagefolder")
        cache = Path(temp) / "cache"
        started = time.perf_counter()
        # Pixels decode on first use of .x: that builds the cache entry timed here.
        _ = load_split_tensors(manifest, cfg, cache_dir=cache).x
        build = time.perf_counter() - started
        # Warm-up: both then read their files through the same warm page cache.
        torchvision_epochs(folder, 1, batches, workers)
        # One long run for the slow side, the median of several for the fast one.
        baseline = torchvision_epochs(folder, epochs, batches, workers)
        tool = statistics.median(cached_epochs(manifest, cfg, cache, epochs, batches, seed) for seed in range(repeats))
    scale = (
        f"Apple thesis-protocol train split, {epochs} epoch(s) x {batches} shuffled batches of {BATCH} "
        f"({images} images), W={workers}"
    )
    return [
        {
            "benchmark": f"decoded-image cache, normalised {SIZE} px training batches: {scale}",
            "baseline": f"ImageFolder + PIL Resize/ToTensor/Normalize + DataLoader: {images / baseline:.0f} images/s",
            "this tool": f"warm cache (load_split_tensors + trainer's Normalizer): {images / tool:.0f} images/s",
            "ratio": baseline / tool,
            "target": f"≥ {TARGET:g}×",
        },
        {
            "benchmark": f"decoded-image cache, one-time build of {manifest.table.height} images at {SIZE} px",
            "baseline": f"ImageFolder pipeline above: {images / baseline:.0f} images/s",
            "this tool": f"build {build:.1f} s: {manifest.table.height / build:.0f} images/s, once per node",
            "ratio": (manifest.table.height / build) / (images / baseline),
            "target": "once per node (no target)",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)

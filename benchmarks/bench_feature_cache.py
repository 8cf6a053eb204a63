"""Frozen-backbone feature cache: a trial and a whole frozen sweep, cached against uncached.

Scale (stated in every row): the thesis backbone ResNet34 with fixed random
weights loaded from a file (as ImageNet weights would be: one backbone for
every seed; nothing is downloaded), the thesis head and protocol on Apple
(1,000 + 10 train, 157 val, 300 test real PlantVillage JPEGs) at a reduced
112 px, the thesis' 10 epochs, batch 64, one torch thread per trial (a sweep
runs one trial per core). The decoded-image cache is warm on both sides and the
manifest is built once and passed in, as a sweep's planner does (its cost,
the same on both sides, is stated in the rows).

* Uncached: ``FINALBN_FEATURE_CACHE=0``, the backbone runs on every batch of
  every epoch. Measured on a 2-epoch trial; the 10-epoch time is its setup plus
  10 x its mean epoch time (epochs cost the same), stated as extrapolated.
* Cached: every trial of the sweep (final BN x WL x LS x 3 seeds = 24 trials)
  is run for real, the first one extracting the features into the cache.

``quick`` runs ResNet18 at 64 px, 2 epochs, 20 trials (no LS), all measured.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.data import Manifest, build_manifest, load_split_tensors
from finalbn.models import create_model
from finalbn.train import TrialResult, train_trial

TARGET = 100.0
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scale:
    backbone: str
    image_size: int
    epochs: int
    # Epochs of the measured uncached trial; fewer than ``epochs`` means extrapolated.
    uncached_epochs: int
    smoothing: tuple[float, ...]
    seeds: int

    def describe(self) -> str:
        return (
            f"{self.backbone} (fixed random weights), Apple thesis split 1467 images, {self.image_size} px, "
            f"{self.epochs} epochs, batch 64, 1 thread per trial"
        )


FULL = Scale(backbone="resnet34", image_size=112, epochs=10, uncached_epochs=2, smoothing=(0.0, 0.1), seeds=3)
QUICK = Scale(backbone="resnet18", image_size=64, epochs=2, uncached_epochs=2, smoothing=(0.0,), seeds=5)


def plantvillage_root() -> Path:
    root = Path(os.environ.get("FINALBN_PLANTVILLAGE") or REPO.parent / "shared" / "data" / "plantvillage")
    if not root.is_dir():
        raise SystemExit(f"PlantVillage subset not found at {root}: set FINALBN_PLANTVILLAGE to its folder")
    return root


def sweep_configs(base: TrialConfig, scale: Scale) -> list[TrialConfig]:
    """A frozen-backbone sweep of head factors (final BN x WL x LS x seeds): none changes the backbone's input."""
    configs = []
    for final_norm in ("bn", "none"):
        for weighted_loss in (False, True):
            for smoothing in scale.smoothing:
                for seed in range(scale.seeds):
                    configs.append(
                        base.replace(
                            model={"final_norm": final_norm},
                            train={"weighted_loss": weighted_loss, "label_smoothing": smoothing, "seed": seed},
                        )
                    )
    return configs


@contextmanager
def feature_cache(enabled: bool) -> Iterator[None]:
    previous = os.environ.get("FINALBN_FEATURE_CACHE")
    os.environ["FINALBN_FEATURE_CACHE"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["FINALBN_FEATURE_CACHE"]
        else:
            os.environ["FINALBN_FEATURE_CACHE"] = previous


def timed(config: TrialConfig, manifest: Manifest, cache: Path) -> tuple[float, TrialResult]:
    started = time.perf_counter()
    result = train_trial(config, manifest, cache_dir=cache)
    return time.perf_counter() - started, result


def uncached_trial_seconds(config: TrialConfig, manifest: Manifest, cache: Path, scale: Scale) -> float:
    """Seconds of one uncached trial of ``scale.epochs`` epochs, measured on ``scale.uncached_epochs``."""
    with feature_cache(False):
        seconds, result = timed(config.replace(train={"epochs": scale.uncached_epochs}), manifest, cache)
    epoch_seconds = [row["seconds"] for row in result.epochs]
    setup = seconds - sum(epoch_seconds)
    return setup + scale.epochs * statistics.fmean(epoch_seconds)


def fixed_trunk(path: Path, scale: Scale) -> Path:
    """A random trunk saved once, so every seed loads the same backbone (as with ImageNet weights)."""
    torch.manual_seed(1234)
    model = create_model(ModelConfig(backbone=scale.backbone, weights="none"), 2, 3, scale.image_size)
    torch.save(model.backbone.state_dict(), path)
    return path


def run(quick: bool = False) -> list[dict[str, object]]:
    scale = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # The frozen random trunk warns once per trial; the warning is the point of another test.
    logging.getLogger("finalbn.models.net").setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as temp:
            return measure(scale, Path(temp))
    finally:
        torch.set_num_threads(threads)


def measure(scale: Scale, temp: Path) -> list[dict[str, object]]:
    data = DataConfig(root=str(plantvillage_root()), plant="Apple", image_size=scale.image_size)
    started = time.perf_counter()
    manifest = build_manifest(data)
    manifest_seconds = time.perf_counter() - started
    cache = temp / "cache"
    # Pixels decode on first use of .x: warm the image cache before anything is timed.
    _ = load_split_tensors(manifest, data, cache_dir=cache).x
    base = TrialConfig(
        data=data,
        model=ModelConfig(backbone=scale.backbone, weights=str(fixed_trunk(temp / "trunk.pt", scale))),
        train=TrainConfig(epochs=scale.epochs, device="cpu"),
    )
    configs = sweep_configs(base, scale)
    uncached = uncached_trial_seconds(configs[0], manifest, cache, scale)
    with feature_cache(True):
        cached = [timed(config, manifest, cache)[0] for config in configs]
    assert len(list((cache / "features").glob("*.npy"))) == 1, "every trial of the sweep shares one feature shard"
    warm = statistics.median(cached[1:])
    extrapolated = scale.uncached_epochs < scale.epochs
    how = (
        f"extrapolated: setup + {scale.epochs} x mean epoch of a measured {scale.uncached_epochs}-epoch trial"
        if extrapolated
        else "measured"
    )
    note = f"manifest built once and passed in, as a sweep's planner does ({manifest_seconds:.1f} s, not counted)"
    trials = len(configs)
    return [
        {
            "benchmark": f"feature cache, one trial: {scale.describe()}",
            "baseline": f"uncached trial {uncached:.1f} s ({how})",
            "this tool": f"cached trial {warm:.2f} s (median of {trials - 1} warm trials, measured)",
            "ratio": uncached / warm,
            "target": "—",
        },
        {
            "benchmark": f"feature cache, frozen sweep of {trials} trials: {scale.describe()}; {note}",
            "baseline": f"{trials} x uncached trial = {trials * uncached:.0f} s ({how})",
            "this tool": (
                f"{sum(cached):.1f} s measured: first trial with feature extraction {cached[0]:.1f} s "
                f"+ {trials - 1} head-only trials"
            ),
            "ratio": trials * uncached / sum(cached),
            "target": f"≥ {TARGET:g}×",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)

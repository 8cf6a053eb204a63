"""Pixels and labels of a manifest's splits, ready for a trainer."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from finalbn.config import SPLITS, DataConfig
from finalbn.data.manifest import Manifest
from finalbn.data.sources import SOURCES


@dataclass
class SplitTensors:
    """Per split: uint8 images [N, C, H, W], int64 labels and manifest paths, row for row.

    The trainer divides by 255 and then normalises with mean/std per channel.
    """

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    paths: dict[str, list[str]]
    classes: tuple[str, ...]
    minority: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_split_tensors(manifest: Manifest, cfg: DataConfig) -> SplitTensors:
    """Decode every split of ``manifest`` in manifest order, with cfg's source and image size.

    Files are read from ``manifest.root``; MNIST sources keep 28x28.
    """
    source = SOURCES.get(cfg.source)()
    x, y, paths = {}, {}, {}
    for split in SPLITS:
        rows = manifest.table.filter(pl.col("split") == split)
        paths[split] = rows["path"].to_list()
        x[split] = source.load(manifest.root, paths[split], cfg)
        y[split] = rows["label_index"].cast(pl.Int64).to_torch()
    return SplitTensors(
        x=x,
        y=y,
        paths=paths,
        classes=manifest.classes,
        minority=manifest.minority,
        mean=source.mean,
        std=source.std,
    )

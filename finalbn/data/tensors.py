"""Pixels and labels of a manifest's splits, ready for a trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from finalbn.config import SPLITS, DataConfig
from finalbn.data.cache import IMAGE_CACHE_ENV, cache_enabled, cached_images, pixels_key
from finalbn.data.manifest import Manifest
from finalbn.data.sources import SOURCES, require_root


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
    # Names the pixels of all splits together: equal keys, equal x.
    pixels_key: str


def load_split_tensors(manifest: Manifest, cfg: DataConfig, cache_dir: Path | None = None) -> SplitTensors:
    """Decode every split of ``manifest`` in manifest order, with cfg's source and image size.

    Files are read from ``manifest.root``; MNIST sources keep 28x28. Image files
    are decoded once into the decoded-image cache (``finalbn.data.cache``, under
    ``cache_dir``) and every later trial with the same manifest maps them from
    there, unless FINALBN_IMAGE_CACHE=0; the pixels are the same either way.
    """
    source = SOURCES.get(cfg.source)()
    rows = {split: manifest.table.filter(pl.col("split") == split) for split in SPLITS}
    files = pl.concat([rows[split] for split in SPLITS])
    paths = {split: rows[split]["path"].to_list() for split in SPLITS}
    if source.decodes_files and cache_enabled(IMAGE_CACHE_ENV):
        store = cached_images(Path(require_root(manifest.root)), files, cfg.source, cfg.image_size, cache_dir)
        bounds = np.cumsum([0, *(len(paths[split]) for split in SPLITS)])
        # Views of the memory map, no copies: a batch reads only its own rows.
        x = {split: torch.from_numpy(store[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLITS)}
    else:
        x = {split: source.load(manifest.root, paths[split], cfg) for split in SPLITS}
    return SplitTensors(
        x=x,
        y={split: rows[split]["label_index"].cast(pl.Int64).to_torch() for split in SPLITS},
        paths=paths,
        classes=manifest.classes,
        minority=manifest.minority,
        mean=source.mean,
        std=source.std,
        pixels_key=pixels_key(cfg.source, cfg.image_size, files),
    )

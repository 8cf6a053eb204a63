"""Pixels and labels of a manifest's splits, ready for a trainer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from finalbn.config import SPLITS, DataConfig
from finalbn.data.cache import IMAGE_CACHE_ENV, cache_enabled, cached_images, pixels_id
from finalbn.data.manifest import Manifest
from finalbn.data.sources import SOURCES, require_root


@dataclass
class SplitTensors:
    """Per split: uint8 images [N, C, H, W], int64 labels, manifest paths and sha256s, row for row.

    The images are decoded on first use of ``x``: a trial that trains on cached
    features never touches them. The trainer divides by 255 and then
    normalises with mean/std per channel.
    """

    y: dict[str, torch.Tensor]
    paths: dict[str, list[str]]
    sha256: dict[str, list[str]]
    classes: tuple[str, ...]
    minority: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # [C, H, W] of every image.
    image_shape: tuple[int, ...]
    # With an image's sha256, names its pixels: equal pairs, equal pixels.
    pixels_id: str
    # Pixels of some manifest paths [N, C, H, W], decoded now and cached nowhere.
    load: Callable[[list[str]], torch.Tensor]
    _decode_all: Callable[[], dict[str, torch.Tensor]]

    @functools.cached_property
    def x(self) -> dict[str, torch.Tensor]:
        return self._decode_all()


def load_split_tensors(manifest: Manifest, cfg: DataConfig, cache_dir: Path | None = None) -> SplitTensors:
    """Every split of ``manifest`` in manifest order, with cfg's source and image size; pixels on first use.

    Files are read from ``manifest.root``; MNIST sources keep 28x28. Image files
    are decoded once into the decoded-image cache (``finalbn.data.cache``, under
    ``cache_dir``) and every later trial with the same manifest maps them from
    there, unless FINALBN_IMAGE_CACHE=0; the pixels are the same either way.
    """
    source = SOURCES.get(cfg.source)()
    rows = {split: manifest.table.filter(pl.col("split") == split) for split in SPLITS}
    files = pl.concat([rows[split] for split in SPLITS])
    paths = {split: rows[split]["path"].to_list() for split in SPLITS}

    def load(some: list[str]) -> torch.Tensor:
        return source.load(manifest.root, some, cfg)

    # Read now: the setting in force when the tensors were asked for is the one that applies.
    use_cache = source.decodes_files and cache_enabled(IMAGE_CACHE_ENV)

    def decode_all() -> dict[str, torch.Tensor]:
        if not use_cache:
            return {split: load(paths[split]) for split in SPLITS}
        store = cached_images(Path(require_root(manifest.root)), files, cfg.source, cfg.image_size, cache_dir)
        bounds = np.cumsum([0, *(len(paths[split]) for split in SPLITS)])
        # Views of the memory map, no copies: a batch reads only its own rows.
        return {split: torch.from_numpy(store[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLITS)}

    # decode_image makes every file RGB at the configured size; other sources
    # hold their arrays in memory, where one image costs nothing to look at.
    image_shape = (
        (3, cfg.image_size, cfg.image_size)
        if source.decodes_files
        else tuple(load(files["path"][:1].to_list()).shape[1:])
    )
    return SplitTensors(
        y={split: rows[split]["label_index"].cast(pl.Int64).to_torch() for split in SPLITS},
        paths=paths,
        sha256={split: rows[split]["sha256"].to_list() for split in SPLITS},
        classes=manifest.classes,
        minority=manifest.minority,
        mean=source.mean,
        std=source.std,
        image_shape=image_shape,
        pixels_id=pixels_id(cfg.source, cfg.image_size),
        load=load,
        _decode_all=decode_all,
    )

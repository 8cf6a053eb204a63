"""What the network is fed: normalised images, or a frozen backbone's cached features.

A frozen backbone fed the same images every epoch (unfreeze none, no DA, no
MX) computes the same features every epoch, so it runs once per image and
the head trains on its features, kept in the cache per image file for every
other trial that contains the image (see :func:`uses_feature_cache`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finalbn.config import SPLITS, TrialConfig
from finalbn.data import SplitTensors
from finalbn.data.cache import FEATURE_CACHE_ENV, cache_enabled, cache_root, cached_rows, content_key
from finalbn.models import FinalBNNet
from finalbn.train.recipe import amp_dtype

# A line on what a trial does before its first epoch: computing a frozen backbone's features of
# images not cached yet can take minutes, and a sweep's progress shows it instead of a silence.
PhaseCallback = Callable[[str], None]

# Evaluation batch size: large enough to be fast, small enough for 224 px on CPU.
EVAL_BATCH = 128
# Images decoded at once to extract their features: 1,024 at 224 px is 150 MB of pixels.
DECODE_CHUNK = 8 * EVAL_BATCH
# Bump when the features stored for the same key change (extraction, shard layout).
FEATURE_FORMAT = 2


@dataclass(frozen=True)
class Normalizer:
    """uint8 images -> normalised float batches on the device.

    The batch it returns is overwritten by its next call with the same shape:
    callers consume a batch (forward, and backward in training) before they
    ask for the next one.
    """

    mean: torch.Tensor
    std: torch.Tensor
    # One float buffer per batch shape and autograd mode, reused every step: on
    # CPU a fresh [64, 3, 224, 224] float batch is a new 38 MB mapping each
    # step, whose page faults cost more than the normalisation itself.
    # (Inference-mode tensors cannot enter autograd, hence the mode in the key.)
    _buffers: dict[tuple[tuple[int, ...], bool], torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.mean.device)
        key = (tuple(images.shape), torch.is_inference_mode_enabled())
        floats = self._buffers.get(key)
        if floats is None:
            floats = self._buffers[key] = torch.empty(images.shape, dtype=torch.float32, device=self.mean.device)
        # (x / 255 - mean) / std in place: the same floats as out of place.
        return floats.copy_(images).div_(255.0).sub_(self.mean).div_(self.std)


@dataclass(frozen=True)
class ToDevice:
    """Cached float features -> the same batch on the device."""

    device: torch.device

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.device)


@dataclass(frozen=True)
class Inputs:
    """What the network is fed, per split: uint8 images through the whole network,
    or a frozen backbone's precomputed features through the head only."""

    x: dict[str, torch.Tensor]
    # A batch of x -> float network input on the device.
    prepare: Callable[[torch.Tensor], torch.Tensor]
    head_only: bool
    # The autocast dtype of training and evaluation alike (recipe.amp_dtype); None: float32.
    precision: torch.dtype | None

    def logits(self, model: FinalBNNet, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(batch.device.type, dtype=self.precision, enabled=self.precision is not None):
            return model.forward_head(batch) if self.head_only else model(batch)


def make_inputs(
    config: TrialConfig,
    model: FinalBNNet,
    data: SplitTensors,
    device: torch.device,
    cache_dir: Path | None,
    on_phase: PhaseCallback | None = None,
) -> Inputs:
    """The trial's inputs: cached features where :func:`uses_feature_cache` allows, else images."""
    normalize = Normalizer(
        torch.tensor(data.mean, device=device).view(1, -1, 1, 1),
        torch.tensor(data.std, device=device).view(1, -1, 1, 1),
    )
    precision = amp_dtype(device, config.train)
    if uses_feature_cache(config):
        features = cached_features(model, data, normalize, device, cache_dir, precision, on_phase)
        return Inputs(features, ToDevice(device), head_only=True, precision=precision)
    return Inputs(data.x, normalize, head_only=False, precision=precision)


def uses_feature_cache(config: TrialConfig) -> bool:
    """Whether the backbone's output for an image is the same every epoch, so the
    head can train on features computed once: the backbone is frozen (and so in
    eval mode) and sees unchanged images (no DA, no MX). FINALBN_FEATURE_CACHE=0 turns it off."""
    m, t = config.model, config.train
    return m.unfreeze == "none" and not t.augment and t.mixup_alpha == 0 and cache_enabled(FEATURE_CACHE_ENV)


def cached_features(
    model: FinalBNNet,
    data: SplitTensors,
    normalize: Normalizer,
    device: torch.device,
    cache_dir: Path | None,
    precision: torch.dtype | None = None,
    on_phase: PhaseCallback | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone features of every split, each image's computed once per backbone on this kind of
    device and kept in the cache by the image's sha256 for every later trial that contains it.
    ``precision``: the autocast dtype the backbone runs in, as it would without the cache.

    Only the images whose features are not cached yet are decoded: none, once they all are.
    """
    key = content_key(
        "features",
        FEATURE_FORMAT,
        data.pixels_id,
        _backbone_fingerprint(model),
        data.mean,
        data.std,
        # CPU and GPU kernels round differently, and so may another torch: each keeps its own features.
        device.type,
        torch.__version__,
        # On CPU the thread count changes the rounding too (up to 7e-6 measured, EfficientNet-Lite0).
        torch.get_num_threads() if device.type == "cpu" else None,
        # Only when set, so that float32 features keep the keys they were cached under.
        *([str(precision)] if precision is not None else []),
    )
    ids = [sha for split in SPLITS for sha in data.sha256[split]]
    path_of = dict(zip(ids, (path for split in SPLITS for path in data.paths[split]), strict=True))

    def build(missing: list[str]) -> np.ndarray:
        return extract_files(model, data, [path_of[sha] for sha in missing], normalize, precision, on_phase)

    stored = cached_rows(cache_root(cache_dir) / "features", key, ids, model.feature_dim, build)
    bounds = np.cumsum([0, *(len(data.sha256[split]) for split in SPLITS)])
    return {split: torch.from_numpy(stored[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLITS)}


def extract_files(
    model: FinalBNNet,
    data: SplitTensors,
    paths: list[str],
    normalize: Normalizer,
    precision: torch.dtype | None,
    on_phase: PhaseCallback | None = None,
) -> np.ndarray:
    """:func:`extract_features` of manifest paths, decoded a chunk at a time so that their pixels
    are never all in memory; the chunks are whole evaluation batches, so the batches are the same.
    ``on_phase`` hears how many are done before each chunk."""
    features = np.empty((len(paths), model.feature_dim), dtype=np.float32)
    for start in range(0, len(paths), DECODE_CHUNK):
        if on_phase is not None:
            on_phase(f"backbone features: {start:,} of {len(paths):,} new images")
        chunk = paths[start : start + DECODE_CHUNK]
        features[start : start + len(chunk)] = extract_features(model, data.load(chunk), normalize, precision)
    return features


@torch.inference_mode()
def extract_features(
    model: FinalBNNet, images: torch.Tensor, normalize: Normalizer, precision: torch.dtype | None = None
) -> np.ndarray:
    """The backbone's [N, D] features of uint8 images as float32, in eval mode (as a frozen backbone
    trains), under autocast to ``precision`` when given."""
    model.eval()
    features = np.empty((len(images), model.feature_dim), dtype=np.float32)
    for start in range(0, len(images), EVAL_BATCH):
        chunk = normalize(images[start : start + EVAL_BATCH])
        with torch.autocast(chunk.device.type, dtype=precision, enabled=precision is not None):
            features[start : start + len(chunk)] = model.forward_features(chunk).float().cpu().numpy()
    return features


def _backbone_fingerprint(model: FinalBNNet) -> str:
    """sha256 over the backbone's structure and tensors: equal fingerprints, equal features.

    Hashing the tensors, not naming the weights, also covers random weights
    ("none"), which change with the seed.
    """
    digest = hashlib.sha256(repr(model.backbone).encode())
    for name, tensor in model.backbone.state_dict().items():
        # The strides too: channels-last weights run other kernels, which round differently.
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.stride()}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()

"""One trial: ``train_trial(config) -> TrialResult``.

A plain function: it imports no Ray, MLflow or submitit, so the same call runs
in a loop, under Ray Tune or inside a Slurm task; adapters wrap it.
``run_trial`` adds the result folder (config, manifest, metric rows,
predictions, confusion matrix, weights) around it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from finalbn.config import SPLITS, TrialConfig, trial_id, validate
from finalbn.data import Manifest, SplitTensors, build_manifest, load_split_tensors
from finalbn.data.cache import FEATURE_CACHE_ENV, cache_enabled, cache_root, cached_array, content_key
from finalbn.errors import UserError
from finalbn.metrics import calibration_metrics, classification_metrics, confusion
from finalbn.models import FinalBNNet, create_model, without_final_norm

log = logging.getLogger(__name__)

EpochRow = dict[str, float]
EpochCallback = Callable[[EpochRow], None]

# Evaluation batch size: large enough to be fast, small enough for 224 px on CPU.
EVAL_BATCH = 128
# fastai's Adam betas, the convention the thesis trained with.
ADAM_BETAS = (0.9, 0.99)
# Per-sample brightness/contrast jitter of the augmentation (DA), as a fraction.
JITTER = 0.2
# Bump when a checkpoint's contents change; other versions are ignored.
CHECKPOINT_FORMAT = 1


@dataclass
class TrialResult:
    trial_id: str
    config: TrialConfig
    manifest: Manifest
    epochs: list[EpochRow]
    # Test-set outputs of the final model, one row per image.
    predictions: pl.DataFrame
    # Test confusion matrix of the final model: rows true, columns predicted.
    confusion: np.ndarray
    # Test metrics of the final model; with a final BN also "nobn_*" keys,
    # the same model evaluated with its final BN removed (thesis Table 4.6).
    final: dict[str, float]
    state_dict: dict[str, torch.Tensor]
    device: str
    seconds: float


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
    _buffers: dict[tuple[tuple[int, ...], bool], torch.Tensor] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.mean.device)
        key = (tuple(images.shape), torch.is_inference_mode_enabled())
        floats = self._buffers.get(key)
        if floats is None:
            floats = self._buffers[key] = torch.empty(images.shape, dtype=torch.float32, device=self.mean.device)
        # (x / 255 - mean) / std in place: the same floats as out of place.
        return floats.copy_(images).div_(255.0).sub_(self.mean).div_(self.std)


@dataclass(frozen=True)
class _ToDevice:
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

    def logits(self, model: FinalBNNet, batch: torch.Tensor) -> torch.Tensor:
        return model.forward_head(batch) if self.head_only else model(batch)


@dataclass
class _Progress:
    """Everything an epoch changes: what a checkpoint holds, so that a resumed
    trial continues exactly as an uninterrupted one would."""

    model: FinalBNNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    # Batch order, DA draws and MX partners.
    generator: torch.Generator
    # MX's mixing weights.
    mixup_rng: np.random.Generator
    rows: list[EpochRow]
    device: torch.device

    def snapshot(self, tid: str) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "trial_id": tid,
            "epoch": len(self.rows),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "mixup_rng": self.mixup_rng.bit_generator.state,
            # Dropout in the head draws from torch's global generators.
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "rows": self.rows,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.generator.set_state(saved["generator"])
        self.mixup_rng.bit_generator.state = saved["mixup_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if self.device.type == "cuda" and saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        self.rows[:] = saved["rows"]


def train_trial(
    config: TrialConfig,
    manifest: Manifest | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint: Path | None = None,
    cache_dir: Path | None = None,
) -> TrialResult:
    """Train one model from ``config`` and evaluate it every epoch.

    Same config and seed on CPU -> identical metrics: every random draw comes
    from generators seeded here. A frozen backbone fed the same images every
    epoch (unfreeze none, no DA, no MX) runs once per image: the head trains on
    its features, cached under ``cache_dir`` (see :func:`uses_feature_cache`).
    With ``checkpoint``, the state is saved there after every epoch (after
    ``on_epoch`` returned), and a checkpoint of this trial found there is
    continued from: ``on_epoch`` sees only the new epochs, the result all of them.
    """
    started = time.perf_counter()
    validate(config)
    manifest = manifest if manifest is not None else build_manifest(config.data)
    tid = trial_id(config, manifest.fingerprint())
    data = load_split_tensors(manifest, config.data, cache_dir)
    device = resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)
    model = create_model(
        config.model,
        num_classes=len(data.classes),
        in_channels=data.x["train"].shape[1],
        image_size=data.x["train"].shape[-1],
    ).to(device)
    normalize = Normalizer(
        torch.tensor(data.mean, device=device).view(1, -1, 1, 1),
        torch.tensor(data.std, device=device).view(1, -1, 1, 1),
    )
    if uses_feature_cache(config):
        features = _cached_features(model, data, normalize, device, cache_dir)
        inputs = Inputs(features, _ToDevice(device), head_only=True)
    else:
        inputs = Inputs(data.x, normalize, head_only=False)
    criterion = make_criterion(config, data, device)
    progress = _start(config, model, len(data.y["train"]), device)
    if checkpoint is not None:
        _resume(progress, checkpoint, tid)
    for row in _fit(config, progress, inputs, data, criterion):
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, progress.snapshot(tid))

    output = config.model.output
    test_probs = predict(model, inputs, "test", output)
    y_test = data.y["test"].numpy()
    final = _test_metrics(y_test, test_probs, data)
    predictions = _prediction_frame(data, test_probs, prefix="")
    if config.model.final_norm == "bn":
        removed = predict(without_final_norm(model), inputs, "test", output)
        final |= {f"nobn_{k}": v for k, v in _test_metrics(y_test, removed, data).items()}
        predictions = pl.concat([predictions, _prediction_frame(data, removed, prefix="nobn_")], how="horizontal")
    return TrialResult(
        trial_id=tid,
        config=config,
        manifest=manifest,
        epochs=list(progress.rows),
        predictions=predictions,
        confusion=confusion(y_test, test_probs, len(data.classes)),
        final=final,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        device=str(device),
        seconds=time.perf_counter() - started,
    )


def uses_feature_cache(config: TrialConfig) -> bool:
    """Whether the backbone's output for an image is the same every epoch, so the
    head can train on features computed once: the backbone is frozen (and so in
    eval mode) and sees unchanged images (no DA, no MX). FINALBN_FEATURE_CACHE=0 turns it off."""
    m, t = config.model, config.train
    return m.unfreeze == "none" and not t.augment and t.mixup_alpha == 0 and cache_enabled(FEATURE_CACHE_ENV)


def checkpoint_epoch(path: Path, trial: str | None = None) -> int:
    """The last finished epoch a checkpoint holds; 0 when there is none, it is
    unreadable, or it belongs to another trial than ``trial`` (when given)."""
    saved = _load_checkpoint(path, mmap=True)
    if saved is None or (trial is not None and saved["trial_id"] != trial):
        return 0
    return int(saved["epoch"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    return torch.device(name)


def _start(config: TrialConfig, model: FinalBNNet, n_train: int, device: torch.device) -> _Progress:
    """The state before epoch 1; its generators are seeded from config.train.seed."""
    t = config.train
    optimizer = make_optimizer(config, model)
    # fp16 needs loss scaling to keep small gradients; bf16 does not.
    amp_dtype = _amp_dtype(device, t.amp)
    return _Progress(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer, steps_per_epoch(n_train, t.batch_size)),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        generator=torch.Generator().manual_seed(t.seed),
        mixup_rng=np.random.default_rng(t.seed),
        rows=[],
        device=device,
    )


def _fit(
    config: TrialConfig,
    progress: _Progress,
    inputs: Inputs,
    data: SplitTensors,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Iterator[EpochRow]:
    """Train the epochs after those in progress.rows, appending and yielding one metric row after each."""
    t = config.train
    model, generator, device = progress.model, progress.generator, progress.device
    x_train, y_train = inputs.x["train"], data.y["train"]
    num_classes = len(data.classes)
    amp_dtype = _amp_dtype(device, t.amp)

    for epoch in range(len(progress.rows) + 1, t.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for index in _batches(len(y_train), t.batch_size, generator):
            batch = inputs.prepare(x_train[index])
            targets = F.one_hot(y_train[index], num_classes).float().to(device)
            if t.augment:
                batch = augment(batch, generator)
            if t.mixup_alpha > 0:
                batch, targets = mixup(batch, targets, t.mixup_alpha, progress.mixup_rng, generator)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = inputs.logits(model, batch)
            # The loss runs in float32: BCE is unsafe under fp16 autocast.
            loss = criterion(logits.float(), targets)
            progress.optimizer.zero_grad(set_to_none=True)
            progress.scaler.scale(loss).backward()
            progress.scaler.step(progress.optimizer)
            progress.scaler.update()
            if progress.scheduler is not None:
                progress.scheduler.step()
            total += loss.item() * len(index)
            seen += len(index)

        row: EpochRow = {"epoch": float(epoch), "train_loss": total / seen}
        for split in ("val", "test"):
            if len(data.y[split]) == 0:
                continue
            probs, loss = _evaluate(model, inputs, data, split, criterion, config.model.output)
            row[f"{split}_loss"] = loss
            metrics = classification_metrics(data.y[split].numpy(), probs, data.classes, data.minority)
            row |= {f"{split}_{k}": v for k, v in metrics.items()}
            if split == "test":
                row |= {f"test_{k}": v for k, v in calibration_metrics(data.y[split].numpy(), probs).items()}
        row["seconds"] = time.perf_counter() - started
        progress.rows.append(row)
        yield row


def _resume(progress: _Progress, path: Path, tid: str) -> None:
    saved = _load_checkpoint(path, mmap=False)
    if saved is None:
        return
    if saved["trial_id"] != tid:
        log.warning("checkpoint %s belongs to trial %s, not %s: starting over", path, saved["trial_id"], tid)
        return
    progress.restore(saved)
    log.info("resuming trial %s after epoch %d from %s", tid, len(progress.rows), path)


def _load_checkpoint(path: Path, mmap: bool) -> dict[str, Any] | None:
    """A checkpoint of this format, or None; an unreadable one only means starting over."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        return None
    # What torch.load raises for a truncated or foreign file.
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        log.warning("ignoring unreadable checkpoint %s (%s)", path, error)
        return None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring checkpoint %s: not a finalbn checkpoint of format %d", path, CHECKPOINT_FORMAT)
        return None
    return saved


def _save_checkpoint(path: Path, snapshot: dict[str, Any]) -> None:
    """Written to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(snapshot, temp)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:
        raise UserError(
            f"cannot write checkpoint {path} ({error.strerror or error}): put the results in a writable folder"
        ) from None
    finally:
        temp.unlink(missing_ok=True)


def _cached_features(
    model: FinalBNNet, data: SplitTensors, normalize: Normalizer, device: torch.device, cache_dir: Path | None
) -> dict[str, torch.Tensor]:
    """Backbone features of every split, computed once per backbone and data on this
    kind of device and kept in the cache for the other trials of a sweep."""
    sizes = [len(data.y[split]) for split in SPLITS]
    key = content_key(
        "features",
        data.pixels_key,
        _backbone_fingerprint(model),
        data.mean,
        data.std,
        # CPU and GPU kernels round differently: each keeps its own features.
        device.type,
    )
    shape = (sum(sizes), model.feature_dim)

    def build(temp: Path) -> None:
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float32, shape=shape)
        offset = 0
        for split, size in zip(SPLITS, sizes, strict=True):
            out[offset : offset + size] = extract_features(model, data.x[split], normalize)
            offset += size
        out.flush()

    stored = cached_array(cache_root(cache_dir) / "features" / f"{key}.npy", shape, np.dtype(np.float32), build)
    bounds = np.cumsum([0, *sizes])
    return {split: torch.from_numpy(stored[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLITS)}


@torch.inference_mode()
def extract_features(model: FinalBNNet, images: torch.Tensor, normalize: Normalizer) -> np.ndarray:
    """The backbone's [N, D] float32 features of uint8 images, in eval mode (as a frozen backbone trains)."""
    model.eval()
    features = np.empty((len(images), model.feature_dim), dtype=np.float32)
    for start in range(0, len(images), EVAL_BATCH):
        chunk = normalize(images[start : start + EVAL_BATCH])
        features[start : start + len(chunk)] = model.forward_features(chunk).float().cpu().numpy()
    return features


def _backbone_fingerprint(model: FinalBNNet) -> str:
    """sha256 over the backbone's structure and tensors: equal fingerprints, equal features.

    Hashing the tensors, not naming the weights, also covers random weights
    ("none"), which change with the seed.
    """
    digest = hashlib.sha256(repr(model.backbone).encode())
    for name, tensor in model.backbone.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def make_criterion(
    config: TrialConfig, data: SplitTensors, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss on logits and soft (one-hot, smoothed or mixed) targets."""
    t, output = config.train, config.model.output
    weight = class_weights(data.y["train"], len(data.classes)).to(device) if t.weighted_loss else None
    smoothing = t.label_smoothing

    def cce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)

    def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
        per_class = weight.expand_as(targets) if weight is not None else None
        if output == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, targets, weight=per_class)
        # softmax + BCE (Table 4.8): BCE over the softmax probabilities.
        probs = logits.softmax(dim=1).clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(probs, targets, weight=per_class)

    return cce if t.loss == "cce" else bce


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """WL: n / (k * n_c), so a class's total weight is the same for every class."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return len(labels) / (num_classes * counts.clamp(min=1))


def make_optimizer(config: TrialConfig, model: FinalBNNet) -> torch.optim.Optimizer:
    t = config.train
    params = model.trainable_parameters()
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, betas=ADAM_BETAS, weight_decay=t.weight_decay)


def make_scheduler(
    config: TrialConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    t = config.train
    if t.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=t.epochs * steps_per_epoch)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DA on a normalised batch: per-sample flips and transposes (together every
    90-degree turn and mirror), and brightness/contrast jitter.

    Leaves have no canonical orientation, so every turn and mirror is a valid
    view; done on tensors so it costs no per-image Python work.
    """
    n = images.shape[0]

    def draw() -> torch.Tensor:
        return torch.rand(n, generator=generator).to(images.device)

    flip_h = (draw() < 0.5).view(n, 1, 1, 1)
    images = torch.where(flip_h, images.flip(3), images)
    flip_v = (draw() < 0.5).view(n, 1, 1, 1)
    images = torch.where(flip_v, images.flip(2), images)
    if images.shape[2] == images.shape[3]:
        turn = (draw() < 0.5).view(n, 1, 1, 1)
        images = torch.where(turn, images.transpose(2, 3), images)
    contrast = (1 + JITTER * (2 * draw() - 1)).view(n, 1, 1, 1)
    brightness = (JITTER * (2 * draw() - 1)).view(n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * contrast + mean + brightness


def mixup(
    images: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MX (Zhang et al. 2018), fastai style: lambda = max(l, 1 - l) keeps each mix closer to its own image."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1 - lam)
    partner = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[partner], lam * targets + (1 - lam) * targets[partner]


def predict(model: FinalBNNet, inputs: Inputs, split: str, output: str) -> np.ndarray:
    """Class probabilities of a split in eval mode; sigmoid outputs are rescaled to sum to 1
    so that ECE and Brier compare like with like (argmax is unchanged)."""
    return _probabilities(_logits(model, inputs, split), output).numpy()


def _evaluate(
    model: FinalBNNet,
    inputs: Inputs,
    data: SplitTensors,
    split: str,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    output: str,
) -> tuple[np.ndarray, float]:
    logits = _logits(model, inputs, split)
    targets = F.one_hot(data.y[split], logits.shape[1]).float()
    return _probabilities(logits, output).numpy(), float(criterion(logits, targets))


@torch.inference_mode()
def _logits(model: FinalBNNet, inputs: Inputs, split: str) -> torch.Tensor:
    model.eval()
    x = inputs.x[split]
    chunks = [
        inputs.logits(model, inputs.prepare(x[i : i + EVAL_BATCH])).float().cpu() for i in range(0, len(x), EVAL_BATCH)
    ]
    return torch.cat(chunks)


def _probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    if output == "sigmoid":
        probs = logits.sigmoid()
        return probs / probs.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return logits.softmax(dim=1)


def _test_metrics(y: np.ndarray, probs: np.ndarray, data: SplitTensors) -> dict[str, float]:
    return classification_metrics(y, probs, data.classes, data.minority) | calibration_metrics(y, probs)


def _prediction_frame(data: SplitTensors, probs: np.ndarray, prefix: str) -> pl.DataFrame:
    columns: dict[str, object] = {}
    if not prefix:
        columns["path"] = data.paths["test"]
        columns["label"] = [data.classes[i] for i in data.y["test"].tolist()]
        columns["label_index"] = data.y["test"].numpy()
    columns[f"{prefix}predicted_index"] = probs.argmax(axis=1)
    for index, name in enumerate(data.classes):
        columns[f"{prefix}prob_{name}"] = probs[:, index]
    return pl.DataFrame(columns)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a ragged last batch is dropped (fastai does too),
    because a batch of one breaks BatchNorm in training mode."""
    order = torch.randperm(n, generator=generator)
    usable = _usable(n, batch_size)
    for start in range(0, usable, batch_size):
        yield order[start : start + batch_size]


def _usable(n: int, batch_size: int) -> int:
    """Samples used per epoch: whole batches only, unless the set is smaller than one batch."""
    return n if n <= batch_size else n - n % batch_size


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch, for the one-cycle schedule's length."""
    return math.ceil(_usable(n, batch_size) / batch_size)


if __name__ == "__main__":
    from finalbn.cli import train_main

    raise SystemExit(train_main())

"""One trial: ``train_trial(config) -> TrialResult``.

A plain function: it imports no Ray, MLflow or submitit, so the same call runs
in a loop, under Ray Tune or inside a Slurm task; adapters wrap it.
``run_trial`` adds the result folder (config, manifest, metric rows,
predictions, confusion matrix, weights) around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from finalbn.config import TrialConfig, trial_id, validate
from finalbn.data import Manifest, SplitTensors, build_manifest, load_split_tensors
from finalbn.errors import UserError
from finalbn.metrics import calibration_metrics, classification_metrics, confusion
from finalbn.models import FinalBNNet, create_model, without_final_norm

EpochRow = dict[str, float]
EpochCallback = Callable[[EpochRow], None]

# Evaluation batch size: large enough to be fast, small enough for 224 px on CPU.
EVAL_BATCH = 128
# fastai's Adam betas, the convention the thesis trained with.
ADAM_BETAS = (0.9, 0.99)
# Per-sample brightness/contrast jitter of the augmentation (DA), as a fraction.
JITTER = 0.2


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
class _Normalizer:
    """uint8 images -> normalised float batches on the device."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.mean.device).float() / 255.0 - self.mean) / self.std


def train_trial(
    config: TrialConfig,
    manifest: Manifest | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    """Train one model from ``config`` and evaluate it every epoch.

    Same config and seed on CPU -> identical metrics: every random draw comes
    from generators seeded here.
    """
    started = time.perf_counter()
    validate(config)
    manifest = manifest if manifest is not None else build_manifest(config.data)
    data = load_split_tensors(manifest, config.data)
    device = resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)
    model = create_model(
        config.model,
        num_classes=len(data.classes),
        in_channels=data.x["train"].shape[1],
        image_size=data.x["train"].shape[-1],
    ).to(device)
    normalize = _Normalizer(
        torch.tensor(data.mean, device=device).view(1, -1, 1, 1),
        torch.tensor(data.std, device=device).view(1, -1, 1, 1),
    )
    criterion = make_criterion(config, data, device)
    rows: list[EpochRow] = []
    for row in _fit(config, model, data, normalize, criterion, device):
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)

    test_probs = predict(model, data.x["test"], normalize, config.model.output)
    y_test = data.y["test"].numpy()
    final = _test_metrics(y_test, test_probs, data)
    predictions = _prediction_frame(data, test_probs, prefix="")
    if config.model.final_norm == "bn":
        removed = predict(without_final_norm(model), data.x["test"], normalize, config.model.output)
        final |= {f"nobn_{k}": v for k, v in _test_metrics(y_test, removed, data).items()}
        predictions = pl.concat([predictions, _prediction_frame(data, removed, prefix="nobn_")], how="horizontal")
    return TrialResult(
        trial_id=trial_id(config, manifest.fingerprint()),
        config=config,
        manifest=manifest,
        epochs=rows,
        predictions=predictions,
        confusion=confusion(y_test, test_probs, len(data.classes)),
        final=final,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        device=str(device),
        seconds=time.perf_counter() - started,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    return torch.device(name)


def _fit(
    config: TrialConfig,
    model: FinalBNNet,
    data: SplitTensors,
    normalize: _Normalizer,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
) -> Iterator[EpochRow]:
    """Train epoch by epoch, yielding one metric row after each."""
    t = config.train
    x_train, y_train = data.x["train"], data.y["train"]
    num_classes = len(data.classes)
    generator = torch.Generator().manual_seed(t.seed)
    mixup_rng = np.random.default_rng(t.seed)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch(len(y_train), t.batch_size))
    amp_dtype = _amp_dtype(device, t.amp)
    # fp16 needs loss scaling to keep small gradients; bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    for epoch in range(1, t.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for index in _batches(len(y_train), t.batch_size, generator):
            images = normalize(x_train[index])
            targets = F.one_hot(y_train[index], num_classes).float().to(device)
            if t.augment:
                images = augment(images, generator)
            if t.mixup_alpha > 0:
                images, targets = mixup(images, targets, t.mixup_alpha, mixup_rng, generator)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
            # The loss runs in float32: BCE is unsafe under fp16 autocast.
            loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(index)
            seen += len(index)

        row: EpochRow = {"epoch": float(epoch), "train_loss": total / seen}
        for split in ("val", "test"):
            if len(data.y[split]) == 0:
                continue
            probs, loss = _evaluate(model, data, split, normalize, criterion, config.model.output)
            row[f"{split}_loss"] = loss
            metrics = classification_metrics(data.y[split].numpy(), probs, data.classes, data.minority)
            row |= {f"{split}_{k}": v for k, v in metrics.items()}
            if split == "test":
                row |= {f"test_{k}": v for k, v in calibration_metrics(data.y[split].numpy(), probs).items()}
        row["seconds"] = time.perf_counter() - started
        yield row


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


def predict(model: FinalBNNet, images: torch.Tensor, normalize: _Normalizer, output: str) -> np.ndarray:
    """Class probabilities in eval mode; sigmoid outputs are rescaled to sum to 1
    so that ECE and Brier compare like with like (argmax is unchanged)."""
    return _probabilities(_logits(model, images, normalize), output).numpy()


def _evaluate(
    model: FinalBNNet,
    data: SplitTensors,
    split: str,
    normalize: _Normalizer,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    output: str,
) -> tuple[np.ndarray, float]:
    logits = _logits(model, data.x[split], normalize)
    targets = F.one_hot(data.y[split], logits.shape[1]).float()
    return _probabilities(logits, output).numpy(), float(criterion(logits, targets))


@torch.inference_mode()
def _logits(model: FinalBNNet, images: torch.Tensor, normalize: _Normalizer) -> torch.Tensor:
    model.eval()
    chunks = [model(normalize(images[i : i + EVAL_BATCH])).float().cpu() for i in range(0, len(images), EVAL_BATCH)]
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

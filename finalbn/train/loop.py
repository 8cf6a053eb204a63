"""One trial: ``train_trial(config, manifest) -> TrialResult``.

A plain function: it imports no Ray, MLflow or submitit, so the same call runs
in a loop, under Ray Tune or inside a Slurm task; adapters wrap it.
``finalbn.results.run_trial`` adds the result folder (config, manifest, metric
rows, predictions, confusion matrix, weights) around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from finalbn.config import TrialConfig, validate
from finalbn.config import trial_id as make_trial_id
from finalbn.data import Manifest, SplitTensors, load_split_tensors
from finalbn.errors import UserError
from finalbn.metrics import (
    calibration_metrics,
    class_prior,
    classification_metrics,
    confusion,
    final_bn_metrics,
    thresholded,
    trial_metrics,
    val_threshold,
)
from finalbn.models import FinalBNNet, create_model, without_final_norm
from finalbn.train.checkpoint import EpochRow, Progress, resume, save_checkpoint
from finalbn.train.features import EVAL_BATCH, Inputs, PhaseCallback, make_inputs
from finalbn.train.recipe import (
    Criterion,
    augment,
    batches,
    make_criterion,
    make_optimizer,
    make_scheduler,
    mixup,
    posthoc_logit_adjustment,
    round_steps,
    step_batches,
)

EpochCallback = Callable[[EpochRow], None]


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
    # Test metrics of the final model (finalbn.metrics.trial_metrics); the same set for
    # its post-hoc variants: "la_*" (logit-adjusted, softmax output), "thr_*" (decision
    # threshold chosen on val, with "thr_threshold") and with a final BN "nobn_*", the
    # model evaluated with its final BN removed (thesis Table 4.6).
    final: dict[str, float]
    state_dict: dict[str, torch.Tensor]
    device: str
    # The autocast dtype training and evaluation ran in ("float32": none).
    precision: str
    seconds: float


def train_trial(
    config: TrialConfig,
    manifest: Manifest,
    *,
    trial_id: str | None = None,
    on_epoch: EpochCallback | None = None,
    on_phase: PhaseCallback | None = None,
    checkpoint: Path | None = None,
    cache_dir: Path | None = None,
) -> TrialResult:
    """Train one model from ``config`` on the splits of ``manifest`` and evaluate it every epoch.

    The manifest is the caller's (build it once with finalbn.data.build_manifest,
    or read the planner's): building one hashes every image file. ``trial_id``
    is computed from the config and the manifest's fingerprint when not given.
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
    tid = trial_id if trial_id is not None else make_trial_id(config, manifest.fingerprint())
    data = load_split_tensors(manifest, config.data, cache_dir)
    device = resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)
    # Channels-last weights make every conv, pool and their backward run in
    # that layout: the same network and numbers up to summation order, and on
    # CPU the simple CNN's epoch about 1.4x faster (max-pooling NCHW was 13%
    # of a trial; benchmarks/main_job.py). Tensors of other ranks are unchanged.
    model = create_model(
        config.model,
        num_classes=len(data.classes),
        in_channels=data.image_shape[0],
        image_size=data.image_shape[-1],
    ).to(device, memory_format=torch.channels_last)
    inputs = make_inputs(config, model, data, device, cache_dir, on_phase)
    criterion = make_criterion(config, data, device)
    progress = _start(config, model, len(data.y["train"]), device, inputs.precision)
    if checkpoint is not None:
        resume(progress, checkpoint, tid)
    for row in _fit(config, progress, inputs, data, criterion):
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint is not None:
            save_checkpoint(checkpoint, progress.snapshot(tid))

    final, predictions, matrix = _final_evaluation(config, model, inputs, data)
    return TrialResult(
        trial_id=tid,
        config=config,
        manifest=manifest,
        epochs=list(progress.rows),
        predictions=predictions,
        confusion=matrix,
        final=final,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        device=str(device),
        precision=str(inputs.precision or torch.float32).removeprefix("torch."),
        seconds=time.perf_counter() - started,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    return torch.device(name)


def _start(
    config: TrialConfig, model: FinalBNNet, n_train: int, device: torch.device, precision: torch.dtype | None
) -> Progress:
    """The state before epoch 1; its generators are seeded from config.train.seed. ``precision``:
    the inputs' autocast dtype."""
    t = config.train
    optimizer = make_optimizer(config, model)
    return Progress(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer, n_train),
        # fp16 needs loss scaling to keep small gradients; bf16 does not.
        scaler=torch.amp.GradScaler(device.type, enabled=precision == torch.float16),
        generator=torch.Generator().manual_seed(t.seed),
        mixup_rng=np.random.default_rng(t.seed),
        rows=[],
        device=device,
    )


def _fit(
    config: TrialConfig, progress: Progress, inputs: Inputs, data: SplitTensors, criterion: Criterion
) -> Iterator[EpochRow]:
    """Train the epochs after those in progress.rows, appending and yielding one metric row after each."""
    for epoch in range(len(progress.rows) + 1, config.train.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(config, progress, inputs, data, criterion, epoch)
        row: EpochRow = {"epoch": float(epoch), "train_loss": loss}
        row |= _epoch_metrics(config, progress.model, inputs, data, criterion)
        row["seconds"] = time.perf_counter() - started
        progress.rows.append(row)
        yield row


def _train_epoch(
    config: TrialConfig, progress: Progress, inputs: Inputs, data: SplitTensors, criterion: Criterion, epoch: int
) -> float:
    """One pass over the training batches (under fixed train.steps: evaluation round ``epoch``'s
    share of the steps); the mean training loss per sample."""
    t = config.train
    model, generator, device = progress.model, progress.generator, progress.device
    x_train, y_train = inputs.x["train"], data.y["train"]
    num_classes = len(data.classes)
    model.train()
    total, seen = 0.0, 0
    if t.steps is None:
        order = batches(y_train, t.batch_size, generator, t.sampler)
    else:
        order = step_batches(y_train, t.batch_size, generator, round_steps(t.steps, t.epochs, epoch), t.sampler)
    for index in order:
        batch = inputs.prepare(x_train[index])
        targets = F.one_hot(y_train[index], num_classes).float().to(device)
        if t.augment:
            batch = augment(batch, generator)
        if t.mixup_alpha > 0:
            batch, targets = mixup(batch, targets, t.mixup_alpha, progress.mixup_rng, generator)
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
    return total / seen


def _epoch_metrics(
    config: TrialConfig, model: FinalBNNet, inputs: Inputs, data: SplitTensors, criterion: Criterion
) -> EpochRow:
    """Loss and classification metrics of the non-empty val and test splits, calibration of test."""
    row: EpochRow = {}
    for split in ("val", "test"):
        if len(data.y[split]) == 0:
            continue
        probs, loss = _evaluate(model, inputs, data, split, criterion, config.model.output)
        row[f"{split}_loss"] = loss
        metrics = classification_metrics(data.y[split].numpy(), probs, data.classes, data.minority)
        row |= {f"{split}_{k}": v for k, v in metrics.items()}
        if split == "test":
            row |= {f"test_{k}": v for k, v in calibration_metrics(data.y[split].numpy(), probs).items()}
    return row


def _final_evaluation(
    config: TrialConfig, model: FinalBNNet, inputs: Inputs, data: SplitTensors
) -> tuple[dict[str, float], pl.DataFrame, np.ndarray]:
    """Test metrics, per-image predictions and confusion matrix of the trained model, and the
    metrics of its post-hoc variants, scored from its logits with no training: logit-adjusted
    (la_*, softmax output only) and thresholded on val (thr_*, when val has both groups); with
    a final BN its learned scale/shift and statistics (bn_*), and the metrics and predictions
    also of the model without it (nobn_*)."""
    output = config.model.output
    test_logits = _logits(model, inputs, "test")
    test_probs = _probabilities(test_logits, output).numpy()
    y_test = data.y["test"].numpy()
    final = _test_metrics(y_test, test_probs, data)
    if output == "softmax":
        adjusted = posthoc_logit_adjustment(test_logits, data.y["train"], config.train.tau)
        final |= _prefixed("la_", _test_metrics(y_test, _probabilities(adjusted, output).numpy(), data))
    final |= _thresholded_metrics(model, inputs, data, output, test_probs)
    predictions = _prediction_frame(data, test_probs, prefix="")
    if config.model.final_norm == "bn":
        final |= _final_bn_values(model, data)
        removed = predict(without_final_norm(model), inputs, "test", output)
        final |= _prefixed("nobn_", _test_metrics(y_test, removed, data))
        predictions = pl.concat([predictions, _prediction_frame(data, removed, prefix="nobn_")], how="horizontal")
    return final, predictions, confusion(y_test, test_probs, len(data.classes))


def _thresholded_metrics(
    model: FinalBNNet, inputs: Inputs, data: SplitTensors, output: str, test_probs: np.ndarray
) -> dict[str, float]:
    """thr_*: the test metrics of decisions under the minority-score threshold chosen on val
    (finalbn.metrics.val_threshold), and that threshold as thr_threshold; the probabilities are
    the model's. None of them when val yields no threshold (no images of either group)."""
    y_val = data.y["val"].numpy()
    # An empty val split has no logits to compute.
    if len(y_val) == 0:
        return {}
    threshold = val_threshold(y_val, predict(model, inputs, "val", output), data.minority)
    if threshold is None:
        return {}
    decisions = thresholded(test_probs, data.minority, threshold)
    metrics = _test_metrics(data.y["test"].numpy(), test_probs, data, predicted=decisions)
    return _prefixed("thr_", metrics | {"threshold": threshold})


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def predict(model: FinalBNNet, inputs: Inputs, split: str, output: str) -> np.ndarray:
    """Class probabilities of a split in eval mode; sigmoid outputs are rescaled to sum to 1
    so that ECE and Brier compare like with like (argmax is unchanged)."""
    return _probabilities(_logits(model, inputs, split), output).numpy()


def _evaluate(
    model: FinalBNNet, inputs: Inputs, data: SplitTensors, split: str, criterion: Criterion, output: str
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


def _test_metrics(
    y: np.ndarray, probs: np.ndarray, data: SplitTensors, predicted: np.ndarray | None = None
) -> dict[str, float]:
    prior = class_prior(data.y["train"].numpy(), len(data.classes))
    return trial_metrics(y, probs, data.classes, data.minority, prior, predicted)


def _final_bn_values(model: FinalBNNet, data: SplitTensors) -> dict[str, float]:
    norm = model.final_norm
    if not isinstance(norm, torch.nn.BatchNorm1d):
        raise TypeError(f"final_norm bn built a {type(norm).__name__}, not a BatchNorm1d")
    arrays = [t.detach().float().cpu().numpy() for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var)]
    return final_bn_metrics(*arrays, data.classes, data.minority)


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

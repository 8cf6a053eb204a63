"""What a sweep will cost: assumed per-image costs (each backbone's entry lives with the backbone, in
finalbn.models.costs), or one measured calibration trial.

Two uses: ``--dry-run`` prints the predicted wall time of a sweep
(trial-seconds scheduled onto the workers), and ``--gpus-per-trial auto``
packs as many trials onto one GPU as the calibration trial's peak memory
allows.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

from finalbn.config import TrialConfig, class_counts, validate
from finalbn.models.costs import Device, forward_cost
from finalbn.train import uses_feature_cache

# Seconds every trial costs beyond its backbone's forward passes: building the
# model, reading its images or cached features, the head's training and the
# scoring of every epoch, its records: the whole cost of a trial on cached
# features. CPU: the cpu headline sweep (90 such trials, --backend serial, a
# quiet 2-core machine) took 3 min 32 s once its features were cached (README:
# Sweeps), 2.4 s a trial; on a heavily loaded one, 3.9-6.7 s of CPU time each.
# GPU: assumed (the same work, less of it in arithmetic).
TRIAL_SETUP_SECONDS: dict[Device, float] = {"cpu": 2.4, "gpu": 1.0}
# Memory a CUDA process holds beyond its tensors (context, kernels), per trial.
CUDA_CONTEXT_BYTES = 600 * 2**20
# Fraction of a GPU's memory packed trials may fill: allocator fragmentation and peaks.
GPU_FILL = 0.85
# More trials than this on one GPU contend for its compute more than they gain.
MAX_TRIALS_PER_GPU = 8


def epoch_work(config: TrialConfig) -> float:
    """One epoch's backbone work in forward-image units at 224 px (backward = 2 forwards).

    A trial that trains on cached frozen-backbone features does no backbone
    work per epoch: its features are counted once per data split, in
    :func:`assumed_sweep_seconds`.
    """
    if uses_feature_cache(config):
        return 0.0
    train, evaluated = _images(config)
    train_passes = 1 if config.model.unfreeze == "none" else 3
    return (train * train_passes + evaluated) * _scale(config)


def assumed_trial_seconds(config: TrialConfig, device: Device) -> float:
    """Seconds for one trial from the assumptions (its backbone's in finalbn.models.costs): its set-up,
    head and scoring, and its backbone's passes (none on cached features)."""
    forward = config.train.epochs * epoch_work(config) * forward_cost(config.model.backbone).seconds(device)
    return TRIAL_SETUP_SECONDS[device] + forward


def assumed_sweep_seconds(configs: list[TrialConfig], device: Device) -> float:
    """Trial-seconds of a sweep: every trial, plus one feature extraction per image of each pool
    (data without its counts, backbone) the feature-cached trials draw from. Features are cached per
    image, and draws from one pool overlap (a larger count adds images to a smaller one's), so the
    pool's largest draw is what gets extracted, once for every seed, count and head variant."""
    largest: dict[tuple[object, ...], TrialConfig] = {}
    for config in (c for c in configs if uses_feature_cache(c)):
        pool = (config.data.without_counts(), config.model.backbone, config.model.weights)
        if pool not in largest or sum(_images(config)) > sum(_images(largest[pool])):
            largest[pool] = config
    seconds = sum(assumed_trial_seconds(c, device) for c in configs)
    for config in largest.values():
        seconds += sum(_images(config)) * _scale(config) * forward_cost(config.model.backbone).seconds(device)
    return seconds


def _images(config: TrialConfig) -> tuple[int, int]:
    """(training images, evaluated images: validation + test)."""
    d = config.data
    majority, minority = class_counts(config)
    train = d.train_majority * majority + d.train_minority * minority
    evaluated = (d.val_majority + d.test_majority) * majority + (d.val_minority + d.test_minority) * minority
    return train, evaluated


def _scale(config: TrialConfig) -> float:
    return 1.0 if forward_cost(config.model.backbone).small_input else (config.data.image_size / 224) ** 2


@dataclass(frozen=True)
class Calibration:
    """One trial run for two epochs: set-up (data, model, first-epoch warm-up) and a steady epoch."""

    config: TrialConfig
    setup_seconds: float
    epoch_seconds: float
    device: str
    # torch's peak reserved memory during the trial, plus the CUDA context; 0 on CPU.
    peak_gpu_bytes: int = 0
    gpu_total_bytes: int = 0

    def trial_seconds(self, config: TrialConfig) -> float:
        """A trial of ``config`` scaled from the calibrated one by epochs and per-epoch work
        (head-only trials on cached features: the calibrated epoch as measured)."""
        calibrated = epoch_work(self.config)
        ratio = epoch_work(config) / calibrated if calibrated > 0 else 1.0
        return self.setup_seconds + config.train.epochs * self.epoch_seconds * ratio


def calibrate(config: TrialConfig, threads: int = 1) -> Calibration:
    """Run ``config`` for two epochs here and measure it (on its device: a GPU when there is one)."""
    import torch

    from finalbn.data import build_manifest
    from finalbn.train import resolve_device, train_trial

    probe = config.replace(train={"epochs": 2})
    # Built before the clock starts: a sweep's trials get the planner's manifest
    # and never build one, so its cost is no part of a trial's set-up.
    validate(probe)
    manifest = build_manifest(probe.data)
    device = resolve_device(probe.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    previous = torch.get_num_threads()
    # Timed with the threads a trial gets (--cpus-per-trial), then the caller's count again.
    torch.set_num_threads(max(1, threads))
    try:
        started = time.perf_counter()
        result = train_trial(probe, manifest)
        total = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    steady = result.epochs[-1]["seconds"]
    peak = total_memory = 0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_reserved(device) + CUDA_CONTEXT_BYTES
        total_memory = torch.cuda.get_device_properties(device).total_memory
    return Calibration(config, max(0.0, total - 2 * steady), steady, str(device), peak, total_memory)


def makespan(trial_seconds: list[float], workers: int) -> float:
    """Wall time when trials start in order on the first free worker (how Tune and a Slurm array fill slots)."""
    free_at = [0.0] * max(1, workers)
    for seconds in trial_seconds:
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + seconds)
    return max(free_at)


def trials_per_gpu(peak_bytes: int, total_bytes: int) -> int:
    """How many trials of this peak memory one GPU holds, within GPU_FILL of its memory."""
    if peak_bytes <= 0:
        return 1
    return max(1, min(MAX_TRIALS_PER_GPU, math.floor(GPU_FILL * total_bytes / peak_bytes)))

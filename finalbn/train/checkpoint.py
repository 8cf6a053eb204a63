"""A trial's checkpoint: everything an epoch changes, saved so a resumed trial
continues exactly as an uninterrupted one would.

An unreadable file, another format or another trial's checkpoint is never an
error: the trial only starts over.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finalbn.errors import UserError
from finalbn.models import FinalBNNet
from finalbn.records import write_atomic

log = logging.getLogger(__name__)

# One epoch's metrics, as on_epoch sees them and a checkpoint keeps them.
EpochRow = dict[str, float]

# Bump when a checkpoint's contents change; other versions are ignored.
CHECKPOINT_FORMAT = 1


@dataclass
class Progress:
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


def checkpoint_epoch(path: Path, trial: str | None = None) -> int:
    """The last finished epoch a checkpoint holds; 0 when there is none, it is
    unreadable, or it belongs to another trial than ``trial`` (when given)."""
    saved = load_checkpoint(path, mmap=True)
    if saved is None or (trial is not None and saved["trial_id"] != trial):
        return 0
    return int(saved["epoch"])


def resume(progress: Progress, path: Path, tid: str) -> None:
    """Continue from the checkpoint at ``path`` when it is one of trial ``tid``."""
    saved = load_checkpoint(path, mmap=False)
    if saved is None:
        return
    if saved["trial_id"] != tid:
        log.warning("checkpoint %s belongs to trial %s, not %s: starting over", path, saved["trial_id"], tid)
        return
    progress.restore(saved)
    log.info("resuming trial %s after epoch %d from %s", tid, len(progress.rows), path)


def load_checkpoint(path: Path, mmap: bool) -> dict[str, Any] | None:
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


def save_checkpoint(path: Path, snapshot: dict[str, Any]) -> None:
    """Written atomically, so a kill or a full disk mid-write leaves the previous checkpoint."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda temporary: torch.save(snapshot, temporary))
    except OSError as error:
        raise UserError(
            f"cannot write checkpoint {path} ({error.strerror or error}): put the results in a writable folder"
        ) from None

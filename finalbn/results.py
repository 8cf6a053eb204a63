"""A trial's result folder: written around ``train_trial``, never inside it.

Layout of ``<out_root>/<trial_id>/``:
  config.json         resolved config, trial id, data fingerprint, versions (before step 0)
  manifest.parquet    the split manifest (path, label, split, sha256, group)
  metrics.parquet     one row per epoch, rewritten after each epoch
  predictions.parquet test-set class probabilities per image (and with final BN removed)
  confusion.csv       test confusion matrix of the final model (rows true, columns predicted)
  summary.json        final test metrics, wall time, device, where it ran (worker)
  checkpoint.pt       state at the last finished epoch, while the trial runs with resume on
  model.pt            weights (state dict; load with torch.load(weights_only=True))
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

import finalbn
from finalbn.config import TrialConfig, trial_id, validate
from finalbn.data import build_manifest
from finalbn.errors import UserError
from finalbn.train import EpochCallback, EpochRow, TrialResult, checkpoint_epoch, train_trial

CHECKPOINT = "checkpoint.pt"


def run_trial(
    config: TrialConfig,
    out_root: Path,
    on_epoch: EpochCallback | None = None,
    save_model: bool = True,
    worker: dict[str, Any] | None = None,
    resume: bool = False,
) -> tuple[TrialResult, Path]:
    """Train one trial and write its result folder; returns the result and the folder.

    ``worker`` (node id, Slurm job, restarts...) is kept in summary.json. With
    ``resume`` the trial checkpoints after every epoch and, when its folder
    holds a checkpoint (a preempted or requeued attempt), continues from it.
    """
    validate(config)
    manifest = build_manifest(config.data)
    tid = trial_id(config, manifest.fingerprint())
    folder = writable_folder(out_root / tid)
    checkpoint = folder / CHECKPOINT if resume else None
    done = checkpoint_epoch(checkpoint, tid) if checkpoint is not None else 0
    rows: list[EpochRow] = _rows_up_to(folder, done)
    if done == 0:
        _write_json(folder / "config.json", _config_record(config, tid, manifest.fingerprint(), manifest.classes))
        manifest.write(folder / "manifest.parquet")

    def record(row: EpochRow) -> None:
        rows.append(row)
        # Rewritten each epoch so a killed trial still shows how far it got.
        epoch_frame(tid, rows).write_parquet(folder / "metrics.parquet")
        if on_epoch is not None:
            on_epoch(row)

    result = train_trial(config, manifest=manifest, on_epoch=record, checkpoint=checkpoint)
    result.predictions.write_parquet(folder / "predictions.parquet")
    write_confusion(folder / "confusion.csv", result.confusion, manifest.classes)
    _write_json(
        folder / "summary.json",
        {
            "trial_id": tid,
            "seconds": result.seconds,
            "device": result.device,
            "test": result.final,
            # resumed_from_epoch: the epoch a requeued attempt continued after (0: ran from the start).
            "worker": (worker or {}) | ({"resumed_from_epoch": done} if resume else {}),
        },
    )
    if save_model:
        torch.save(result.state_dict, folder / "model.pt")
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result, folder


def _rows_up_to(folder: Path, epoch: int) -> list[EpochRow]:
    """The metric rows a checkpointed attempt already wrote (epochs <= ``epoch``);
    rows of a half-finished later epoch are dropped, that epoch runs again."""
    path = folder / "metrics.parquet"
    if epoch == 0 or not path.exists():
        return []
    frame = pl.read_parquet(path).filter(pl.col("epoch") <= epoch).drop("trial_id")
    # Rows are float-valued as train_trial reports them; the file stores epoch as an integer.
    frame = frame.with_columns(pl.col("epoch").cast(pl.Float64))
    return frame.to_dicts()


def epoch_frame(tid: str, rows: list[EpochRow]) -> pl.DataFrame:
    frame = pl.DataFrame(rows).with_columns(pl.col("epoch").cast(pl.Int32))
    return frame.select(pl.lit(tid).alias("trial_id"), pl.all())


def write_confusion(path: Path, matrix: np.ndarray, classes: tuple[str, ...]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *classes])
        for name, counts in zip(classes, matrix.tolist(), strict=True):
            writer.writerow([name, *counts])


def _config_record(config: TrialConfig, tid: str, fingerprint: str, classes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "trial_id": tid,
        "manifest_fingerprint": fingerprint,
        "classes": list(classes),
        "config": config.to_dict(),
        "versions": {
            "finalbn": finalbn.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def writable_folder(folder: Path) -> Path:
    """Create ``folder`` and prove it writable, so a bad --out fails before any training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write results to {folder} ({error.strerror}): pass --out with a writable folder"
        ) from None
    return folder


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

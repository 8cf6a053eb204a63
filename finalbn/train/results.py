"""A trial's result folder: written around ``train_trial``, never inside it.

Layout of a trial's folder, ``<out>/<trial id>/``:
  config.json         resolved config, trial id, data fingerprint, code versions, git commit and the
                      fingerprint of the source on the trial's path (before step 0)
  manifest.parquet    the split manifest (path, label, split, sha256, group)
  metrics.parquet     one row per epoch, rewritten after each epoch
  predictions.parquet test-set class probabilities per image (and with final BN removed)
  confusion.csv       test confusion matrix of the final model (rows true, columns predicted)
  summary.json        final test metrics, wall time, device, precision and CPU threads, where it ran (worker)
  checkpoint.pt       state at the last finished epoch, while the trial runs with resume on
  model.pt            weights (state dict; load with torch.load(weights_only=True))
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from finalbn import provenance
from finalbn.config import TrialConfig, validate
from finalbn.config import trial_id as make_trial_id
from finalbn.data import Manifest, build_manifest
from finalbn.records import read_metrics, writable_folder, write_atomic, write_json, write_parquet, write_text
from finalbn.records.folders import CHECKPOINT, CONFIG, CONFUSION, MANIFEST, METRICS, MODEL, PREDICTIONS, SUMMARY
from finalbn.train import EpochCallback, EpochRow, PhaseCallback, TrialResult, checkpoint_epoch, train_trial

# The environment variables that set how many threads OpenMP and MKL use, recorded when set.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_trial(
    config: TrialConfig,
    manifest: Manifest,
    trial_id: str,
    folder: Path,
    *,
    git_commit: str,
    code: provenance.CodeFingerprint | None = None,
    on_epoch: EpochCallback | None = None,
    on_phase: PhaseCallback | None = None,
    save_model: bool = True,
    worker: dict[str, Any] | None = None,
    resume: bool = False,
) -> tuple[TrialResult, Path]:
    """Train one trial and write its result folder ``folder``; returns the result and the folder.

    Everything about the trial is the caller's: the config is valid, the
    manifest built (or read) and ``trial_id`` computed once, by the sweep's
    planner or by :func:`run_config`; nothing is recomputed here. ``git_commit``
    and ``code`` (None: this process's fingerprint) are recorded in config.json
    as the code the trial ran. ``worker`` (node id,
    Slurm job, restarts...) is kept in summary.json. With ``resume`` the trial
    checkpoints after every epoch and, when its folder holds a checkpoint (a
    preempted or requeued attempt), continues from it.
    """
    folder = writable_folder(folder)
    checkpoint = folder / CHECKPOINT if resume else None
    done = checkpoint_epoch(checkpoint, trial_id) if checkpoint is not None else 0
    rows: list[EpochRow] = _rows_up_to(folder, trial_id, done)
    if done == 0:
        write_json(folder / CONFIG, _config_record(config, trial_id, manifest, git_commit, code))
        manifest.write(folder / MANIFEST)

    def record_epoch(row: EpochRow) -> None:
        rows.append(row)
        # Rewritten each epoch so a killed trial still shows how far it got.
        write_parquet(folder / METRICS, epoch_frame(trial_id, rows))
        if on_epoch is not None:
            on_epoch(row)

    # Read as training starts: the worker set its thread count before calling.
    threads = {
        "torch": torch.get_num_threads(),
        "env": {name: os.environ[name] for name in THREAD_ENV if name in os.environ},
    }
    result = train_trial(
        config, manifest, trial_id=trial_id, on_epoch=record_epoch, on_phase=on_phase, checkpoint=checkpoint
    )
    write_parquet(folder / PREDICTIONS, result.predictions)
    write_confusion(folder / CONFUSION, result.confusion, manifest.classes)
    # Last: its presence is what marks the trial finished.
    write_json(
        folder / SUMMARY,
        {
            "trial_id": trial_id,
            "seconds": result.seconds,
            "device": result.device,
            "precision": result.precision,
            "threads": threads,
            "test": result.final,
            # resumed_from_epoch: the epoch a requeued attempt continued after (0: ran from the start).
            "worker": (worker or {}) | ({"resumed_from_epoch": done} if resume else {}),
        },
    )
    if save_model:
        write_atomic(folder / MODEL, lambda temporary: torch.save(result.state_dict, temporary))
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result, folder


def run_config(
    config: TrialConfig,
    out_root: Path,
    *,
    on_epoch: EpochCallback | None = None,
    save_model: bool = True,
    worker: dict[str, Any] | None = None,
    resume: bool = False,
) -> tuple[TrialResult, Path]:
    """One trial outside a sweep (``finalbn train``, a retrained Grad-CAM model):
    validate, build the manifest once, compute the trial id, and write the
    result folder ``out_root/<trial id>/`` with :func:`run_trial`."""
    validate(config)
    manifest = build_manifest(config.data)
    tid = make_trial_id(config, manifest.fingerprint())
    return run_trial(
        config,
        manifest,
        tid,
        out_root / tid,
        git_commit=provenance.git_commit(),
        on_epoch=on_epoch,
        save_model=save_model,
        worker=worker,
        resume=resume,
    )


def _rows_up_to(folder: Path, trial_id: str, epoch: int) -> list[EpochRow]:
    """The metric rows a checkpointed attempt already wrote (epochs <= ``epoch``);
    rows of a half-finished later epoch are dropped, that epoch runs again."""
    path = folder / METRICS
    if epoch == 0 or not path.exists():
        return []
    frame = read_metrics(path, trial_id).filter(pl.col("epoch") <= epoch).drop("trial_id")
    # Rows are float-valued as train_trial reports them; the file stores epoch as an integer.
    frame = frame.with_columns(pl.col("epoch").cast(pl.Float64))
    return frame.to_dicts()


def epoch_frame(tid: str, rows: list[EpochRow]) -> pl.DataFrame:
    frame = pl.DataFrame(rows).with_columns(pl.col("epoch").cast(pl.Int32))
    return frame.select(pl.lit(tid).alias("trial_id"), pl.all())


def write_confusion(path: Path, matrix: np.ndarray, classes: tuple[str, ...]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["true \\ predicted", *classes])
    for name, counts in zip(classes, matrix.tolist(), strict=True):
        writer.writerow([name, *counts])
    write_text(path, text.getvalue())


def _config_record(
    config: TrialConfig, tid: str, manifest: Manifest, commit: str, code: provenance.CodeFingerprint | None
) -> dict[str, Any]:
    code = code or provenance.code_fingerprint()
    return {
        "trial_id": tid,
        "manifest_fingerprint": manifest.fingerprint(),
        "classes": list(manifest.classes),
        "config": config.to_dict(),
        # The sweep's commit and code, not this process's: a worker may run from another checkout.
        "versions": provenance.code_versions() | {"git_commit": commit, "code_fingerprint": code.digest},
        "code": code.record(),
    }

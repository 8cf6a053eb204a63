"""Planning: every grid point resolved to a job before any trial runs.

The trial folders under ``<out>/<sweep>/trials/<trial id>/`` are the sweep's
state: a folder with ``summary.json`` is finished, so rerunning the same
command after a crash, a Ctrl-C or with another ``--max-concurrent`` runs only
what is missing or failed. Ray Tune's own experiment restore is not used for
this: it cannot tell a changed grid or changed data from an unchanged one,
while the trial id (a hash of the resolved config and the data manifest) can.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl

from finalbn.config import DataConfig, trial_id, validate
from finalbn.jobs import TrialJob
from finalbn.spec import SweepSpec

MANIFESTS = "manifests"


def plan(spec: SweepSpec, folder: Path, git_commit: str) -> list[TrialJob]:
    """Resolve every grid point to a job; bad configs or data fail here, before any trial.

    Each distinct dataset's manifest is built once (the only time its image
    files are hashed) and saved as ``<folder>/manifests/<fingerprint>.parquet``,
    which travels with every job that trains on it.
    """
    from finalbn.data import build_manifest
    from finalbn.models import check_weights

    manifests: dict[DataConfig, tuple[str, Path]] = {}
    checked: set[tuple[str, str]] = set()
    # Absolute: workers may run in another working directory.
    folder = folder.resolve()
    jobs = []
    for trial in spec.trials():
        validate(trial.config)
        model = (trial.config.model.backbone, trial.config.model.weights)
        if model not in checked:
            check_weights(*model)
            checked.add(model)
        data = trial.config.data
        if data not in manifests:
            manifest = build_manifest(data)
            fingerprint = manifest.fingerprint()
            path = folder / MANIFESTS / f"{fingerprint[:16]}.parquet"
            if not path.exists():
                # Written whole or not at all: another sweep may read it now.
                temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                manifest.write(temporary)
                os.replace(temporary, path)
            manifests[data] = (fingerprint, path)
        fingerprint, path = manifests[data]
        tid = trial_id(trial.config, fingerprint)
        jobs.append(TrialJob(trial, tid, fingerprint, folder / "trials" / tid, path, git_commit))
    return jobs


def is_finished(job: TrialJob) -> bool:
    return (job.folder / "summary.json").exists()


def set_aside_damaged(jobs: list[TrialJob]) -> list[str]:
    """A finished-looking trial folder whose files do not read back is moved
    aside (kept for inspection) so the trial reruns; returns one note per folder."""
    notes = []
    for job in jobs:
        if not is_finished(job):
            continue
        try:
            json.loads((job.folder / "summary.json").read_text())["test"]["f1_minority"]
            pl.read_parquet(job.folder / "metrics.parquet")
        except Exception as error:  # any unreadable state means: train it again
            # Outside trials/, so nothing that scans trial folders ever reads it again.
            damaged = job.folder.parent.parent / "damaged" / f"{job.trial_id}-{time.strftime('%Y%m%d-%H%M%S')}"
            damaged.parent.mkdir(exist_ok=True)
            job.folder.rename(damaged)
            notes.append(
                f"trial {job.trial_id}: result folder unreadable ({type(error).__name__}); "
                f"moved to {damaged}, it will be rerun"
            )
    return notes

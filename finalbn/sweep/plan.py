"""Planning: every grid point resolved to a job before any trial runs.

The trial folders under ``<out>/<sweep>/trials/<trial id>/`` are the sweep's
state: a folder with ``summary.json`` is finished (one whose records do not
validate is set aside first), so rerunning the same command after a crash, a
Ctrl-C or with another ``--max-concurrent`` runs only what is missing or
failed. Ray Tune's own experiment restore is not used for this: it cannot
tell a changed grid or changed data from an unchanged one, while the trial id
(a hash of the resolved config and the data manifest) can.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from finalbn.config import DataConfig, trial_id, validate
from finalbn.jobs import TrialJob
from finalbn.records import SUMMARY, RecordError, read_finished, write_text
from finalbn.spec import SweepSpec

MANIFESTS = "manifests"
# Trial folders whose records did not validate, each beside a file with the reason.
DAMAGED = "damaged"


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
                manifest.write(path)
            manifests[data] = (fingerprint, path)
        fingerprint, path = manifests[data]
        tid = trial_id(trial.config, fingerprint)
        jobs.append(TrialJob(trial, tid, fingerprint, folder / "trials" / tid, path, git_commit))
    return jobs


def is_finished(job: TrialJob) -> bool:
    return (job.folder / SUMMARY).exists()


def set_aside_damaged(jobs: list[TrialJob]) -> list[str]:
    """A finished-looking trial folder whose records do not validate (a file that
    does not parse, a wrong type, a null, a missing key) is moved to
    ``<sweep>/damaged/`` with the reason in a file beside it, kept for
    inspection, so that the trial reruns; returns one note per folder."""
    notes = []
    for job in jobs:
        if not is_finished(job):
            continue
        try:
            read_finished(job.folder, job.trial_id, job.trial.config.train.epochs)
        except RecordError as error:
            damaged = _set_aside(job, str(error))
            notes.append(
                f"trial {job.trial_id}: result folder unreadable ({error}); moved to {damaged}, it will be rerun"
            )
    return notes


def _set_aside(job: TrialJob, reason: str) -> Path:
    # Outside trials/, so nothing that scans trial folders ever reads it again.
    damaged_dir = job.folder.parent.parent / DAMAGED
    damaged_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = damaged_dir / f"{job.trial_id}-{stamp}"
    # The same trial set aside twice within a second (a test, a quick rerun) keeps both copies.
    for count in itertools.count(2):
        if not target.exists():
            break
        target = damaged_dir / f"{job.trial_id}-{stamp}-{count}"
    job.folder.rename(target)
    write_text(target.with_name(f"{target.name}.reason.txt"), f"trial {job.trial_id}: {reason}\n")
    return target

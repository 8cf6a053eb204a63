"""Finished trials reused across the sweeps of one results root.

A sweep with overrides has its own folder (finalbn.sweep.spec.own_name), yet many of
its trials are the preset sweep's: the same resolved config and data give the
same trial id. Before planning what to run, a pending trial whose finished
folder exists in a sibling sweep is copied in, so it is skipped, not trained
again, and each sweep folder stays whole on its own (it can be moved or sent).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from finalbn.records.folders import SUMMARY
from finalbn.sweep.jobs import TrialJob


def adopt_finished(jobs: list[TrialJob], root: Path) -> list[str]:
    """Copy finished sibling folders of ``jobs`` that are not finished here; one note per source sweep.

    Only folders with a summary.json (written last, so the trial finished) are copied; the driver
    then validates them like its own and sets damaged ones aside."""
    sources: Counter[str] = Counter()
    own = {job.folder.parent.parent for job in jobs}
    siblings = [sweep for sweep in sorted(root.iterdir()) if sweep not in own] if root.is_dir() else []
    for job in jobs:
        if (job.folder / SUMMARY).exists():
            continue
        source = _finished_sibling(job, siblings)
        if source is not None:
            _copy(source, job.folder)
            sources[source.parent.parent.name] += 1
    return [
        f"{count} finished trials reused from {name} (same config and data: same trial id)"
        for name, count in sorted(sources.items())
    ]


def _finished_sibling(job: TrialJob, siblings: list[Path]) -> Path | None:
    for sweep in siblings:
        candidate = sweep / job.folder.parent.name / job.trial_id
        if (candidate / SUMMARY).exists():
            return candidate
    return None


def _copy(source: Path, target: Path) -> None:
    """Whole or not at all: copied beside the target, then renamed into place. A half-written folder
    left by an earlier attempt (no summary.json) is replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)

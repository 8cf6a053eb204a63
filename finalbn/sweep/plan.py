"""Planning: every grid point resolved to a job before any trial runs.

The trial folders under ``<out>/<sweep>/trials/<trial id>/`` are the sweep's
state: a folder with ``summary.json`` is finished (one whose records do not
validate is set aside first, and so is one computed by other code: a source
file on the trial's path changed since, see finalbn.provenance), so rerunning
the same command after a crash, a Ctrl-C or with another ``--max-concurrent``
runs only what is missing, failed or stale. Ray Tune's own experiment restore is not used for this: it cannot
tell a changed grid or changed data from an unchanged one, while the trial id
(a hash of the resolved config and the data manifest) can.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from finalbn import provenance
from finalbn.config import SPLITS, DataConfig, TrialConfig, trial_id, validate
from finalbn.errors import UserError
from finalbn.records import RecordError, TrialRecord, read_finished, writable_folder, write_text
from finalbn.records.folders import DAMAGED, MANIFESTS, STALE, SUMMARY, TRIALS, TRIALS_TABLE, reason_file
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.spec import SweepSpec

if TYPE_CHECKING:
    from finalbn.data import Manifest

ROLES: tuple[Literal["majority", "minority"], ...] = ("majority", "minority")


@dataclass(frozen=True)
class Checked:
    """What planning resolved in memory: each distinct dataset's manifest, and what was checked."""

    manifests: dict[DataConfig, Manifest]
    # One line per check, for the dry run: usable vs needed images per class, each model's weights.
    notes: tuple[str, ...]


def check(spec: SweepSpec, download: bool = True) -> Checked:
    """Every check a plan makes, writing nothing: configs valid, each backbone's weights
    available (``download``: fetched now when they are not, else only found fetchable),
    every class able to supply the largest counts the sweep asks of it (one scan per
    dataset), and each distinct data config's manifest drawn."""
    from finalbn.data import build_manifest

    trials = spec.trials()
    for trial in trials:
        validate(trial.config)
    configs = [trial.config for trial in trials]
    notes = [_check_weights(*model, download) for model in dict.fromkeys(_models(configs))]
    notes += _check_counts(spec, configs)
    if any(c.train.cpu_amp for c in configs):
        notes.append(_cpu_precision_note())
    manifests = {data: build_manifest(data) for data in dict.fromkeys(c.data for c in configs)}
    return Checked(manifests, tuple(notes))


def _cpu_precision_note() -> str:
    from finalbn.train.recipe import native_cpu_bf16

    if native_cpu_bf16():
        here = "native bf16: trials on it train under bf16 autocast"
    else:
        here = "no native bf16: trials on it train in float32"
    return f"precision: train.cpu_amp on; this machine's CPU has {here} (each {SUMMARY} records which)"


def plan(spec: SweepSpec, folder: Path, git_commit: str) -> list[TrialJob]:
    """Resolve every grid point to a job; bad configs or data fail here, before any trial.

    The folder is created after the checks. Each distinct dataset's manifest is saved as
    ``<folder>/manifests/<fingerprint>.parquet``, which travels with every job
    that trains on it.
    """
    checked = check(spec)
    code = provenance.code_fingerprint()
    # Made only once the checks passed: a refused sweep leaves no folder behind.
    # Absolute: workers may run in another working directory.
    folder = writable_folder(folder).resolve()
    saved: dict[DataConfig, tuple[str, Path]] = {}
    for data, manifest in checked.manifests.items():
        fingerprint = manifest.fingerprint()
        path = folder / MANIFESTS / f"{fingerprint[:16]}.parquet"
        if not path.exists():
            manifest.write(path)
        saved[data] = (fingerprint, path)
    jobs = []
    for trial in spec.trials():
        fingerprint, path = saved[trial.config.data]
        tid = trial_id(trial.config, fingerprint)
        jobs.append(TrialJob(trial, tid, fingerprint, folder / TRIALS / tid, path, git_commit, code))
    return jobs


def _models(configs: list[TrialConfig]) -> list[tuple[str, str]]:
    return [(c.model.backbone, c.model.weights) for c in configs]


def _check_weights(backbone: str, weights: str, download: bool) -> str:
    """check_weights, which downloads missing ImageNet weights when their host answers;
    without ``download`` a missing file whose host answers passes as fetchable."""
    from finalbn.models import BACKBONES, check_weights
    from finalbn.models.weights import DOWNLOAD_HOST, hub_checkpoint_path
    from finalbn.network import can_reach

    spec = BACKBONES.get(backbone)
    # Only torchvision's ImageNet files are downloaded; every other check writes nothing.
    if not download and weights == "imagenet" and spec.wheel is None and spec.imagenet is not None:
        path = hub_checkpoint_path(spec.imagenet_weights())
        if path.is_file():
            return f"weights: {backbone} {weights} cached at {path}"
        if can_reach(DOWNLOAD_HOST):
            return f"weights: {backbone} {weights} not cached, {DOWNLOAD_HOST} answers: a real run fetches them"
    check_weights(backbone, weights)
    return f"weights: {backbone} {weights} available"


def _check_counts(spec: SweepSpec, configs: list[TrialConfig]) -> list[str]:
    """Each class's usable images against the most any trial of the sweep asks of it.

    Checked once per dataset (the data config without its counts) before any
    manifest is drawn, so a shortfall names the sweep's flags and the largest need.
    """
    from finalbn.data import SOURCES

    datasets: dict[DataConfig, list[DataConfig]] = {}
    for data in dict.fromkeys(c.data for c in configs):
        datasets.setdefault(data.without_counts(), []).append(data)
    notes = []
    for dataset, members in datasets.items():
        scan = SOURCES.get(dataset.source)().scan(dataset)
        usable = Counter(candidate.label_index for candidate in scan.candidates)
        for label_index, name in enumerate(scan.classes):
            role = ROLES[label_index in scan.minority]
            largest = max(members, key=lambda d: sum(d.count(s, role) for s in SPLITS))
            needed = sum(largest.count(s, role) for s in SPLITS)
            found = usable[label_index]
            if found < needed:
                parts = " + ".join(f"{s} {largest.count(s, role):,}" for s in SPLITS)
                skipped = ", ".join(f"{n:,} {why}" for why, n in sorted(scan.skipped.items()))
                raise UserError(
                    f"class {name!r} {scan.context} has {found:,} usable images"
                    + (f" (files skipped in the data set: {skipped})" if skipped else "")
                    + f", the sweep needs {needed:,} ({parts}): lower {_count_flags(spec, role)}, "
                    "or add images to that class"
                )
            notes.append(f"data: class {name!r} {scan.context}: {found:,} usable images, at most {needed:,} drawn")
    return notes


def _count_flags(spec: SweepSpec, role: str) -> str:
    """The sweep flags that set a role's counts: --axis where an axis sweeps the count, else --set."""
    swept = {axis.name for axis in spec.axes if not axis.joint}
    fields = [f"data.{s}_{role}" for s in SPLITS]
    flags = [f"--axis {field}=V1,V2,..." for field in fields if field in swept]
    fixed = [f"{field}=N" for field in fields if field not in swept]
    if fixed:
        flags.append(f"--set {' '.join(fixed)}")
    return " or ".join(flags)


def is_finished(job: TrialJob) -> bool:
    return (job.folder / SUMMARY).exists()


def set_aside_unusable(jobs: list[TrialJob], keep_stale: bool = False) -> list[str]:
    """The finished folders a sweep must not reuse as they are, each finished folder read once:

    - damaged: records that do not validate (a file that does not parse, a wrong type, a null, a
      missing key); moved to ``<sweep>/damaged/`` with the reason in a file beside it, kept for
      inspection, so that the trial reruns; a note per folder;
    - stale: computed by other code (a source file on the trial's path changed since it ran, see
      finalbn.provenance); named in one line and moved to ``<sweep>/stale/`` with the reason beside
      them, to be retrained; ``keep_stale`` (--keep-stale) leaves them, and the tables'
      code_fingerprint column then tells the code versions apart. Their MLflow runs go when they are
      retrained (the writer keeps one run per trial).

    A trial finished before fingerprints were recorded is judged by git: the files on its path that
    differ between its recorded commit and the files here now (an uncommitted edit it ran with is not
    seen). Where git cannot tell (a pip install, a commit it does not hold) the trial is kept and said
    so: retraining every result of an upgraded install unasked could cost days of compute for a risk its
    owner judges better, and the note says how to retrain them.
    """
    notes: list[str] = []
    stale: list[tuple[TrialJob, list[str]]] = []
    unknown = 0
    for job in jobs:
        if not is_finished(job):
            continue
        try:
            record = read_finished(job.folder, job.trial_id, job.trial.config.train.epochs).record
        except RecordError as error:
            damaged = _set_aside(job, DAMAGED, str(error))
            notes.append(
                f"trial {job.trial_id}: result folder unreadable ({error}); moved to {damaged}, it will be rerun"
            )
            continue
        changed = _changed_code(job, record)
        if changed is None:
            unknown += 1
        elif changed:
            stale.append((job, changed))
    if stale:
        names = sorted({name for _, changed in stale for name in changed})
        what = f"{_trials(len(stale))} computed by other code ({_first(names)} changed since)"
        if keep_stale:
            notes.append(f"{what}: kept (--keep-stale); {TRIALS_TABLE}'s code_fingerprint column tells them apart")
        else:
            for job, changed in stale:
                _set_aside(job, STALE, f"computed by other code ({', '.join(changed)} changed since)")
            aside = stale[0][0].folder.parent.parent / STALE
            notes.append(f"{what}: retraining them (old folders moved to {aside}); --keep-stale keeps them")
    if unknown:
        notes.append(
            f"{_trials(unknown)} finished before finalbn recorded which code trains a trial, and git cannot compare "
            f"their commit with this code: kept; move their folders out of {jobs[0].folder.parent} to retrain them"
        )
    return notes


def _changed_code(job: TrialJob, record: TrialRecord) -> list[str] | None:
    """The source files on the trial's path that changed since it ran ([]: none); None when nobody can tell."""
    if record.code is not None:
        return job.code.changed_from(record.code.files)
    changed = provenance.changed_since(record.versions.get("git_commit", ""))
    return None if changed is None else list(changed)


def _trials(count: int) -> str:
    return "1 trial was" if count == 1 else f"{count} trials were"


def _first(names: list[str], shown: int = 3) -> str:
    """Up to ``shown`` names, then how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _set_aside(job: TrialJob, into: str, reason: str) -> Path:
    # Outside trials/, so nothing that scans trial folders ever reads it again.
    aside = job.folder.parent.parent / into
    aside.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = aside / f"{job.trial_id}-{stamp}"
    # The same trial set aside twice within a second (a test, a quick rerun) keeps both copies.
    for count in itertools.count(2):
        if not target.exists():
            break
        target = aside / f"{job.trial_id}-{stamp}-{count}"
    job.folder.rename(target)
    write_text(target.with_name(reason_file(target.name)), f"trial {job.trial_id}: {reason}\n")
    return target

"""Which code produced a result: the package version, its git commit, the libraries, and a
fingerprint of the source files that decide a trial's numbers.

Computed once per process and carried with the job (sweep.json, config.json,
MLflow tags), so every record of one sweep names the same code.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import finalbn

# The source that decides a trial's numbers, relative to the folder that holds the package: data (which pixels
# reach the network: decoding, scaling, resizing, caching), models, train (loss, optimizer, schedule, loop,
# features) and metrics (the scores recorded). Left out although a trial imports them: config (the resolved
# config is hashed into the trial id already; the module only declares, validates and hashes it), results and
# records (they write and read the folder; a record they no longer read is set aside as damaged), provenance,
# errors, names, registry, lazy and network (messages, look-ups, reachability), presets, experiments and spec
# (they make configs, which are in the id), and everything that plans, runs, tracks or analyses trials.
CODE_PATH = ("finalbn/data", "finalbn/models", "finalbn/train", "finalbn/metrics.py")
# Modules of the trial package that decide no number: ``python -m finalbn.train``'s entry point and its command
# line (they parse flags and print), the presets (they make configs, which are in the id) and the result folder's
# writer (results: see above). Listed by name so that moving them here from the package root marked no finished
# trial stale.
OFF_PATH = frozenset(
    {
        # The dry run's per-backbone cost assumptions: they decide no trial's number.
        "finalbn/models/costs.py",
        "finalbn/train/__main__.py",
        "finalbn/train/cli.py",
        "finalbn/train/presets.py",
        "finalbn/train/results.py",
    }
)
SOURCE_ROOT = Path(finalbn.__file__).resolve().parent.parent
# A git revision as records hold one; anything else never reaches git's command line (a record is anyone's file).
_COMMIT = re.compile(r"[0-9a-f]{7,64}")


@dataclass(frozen=True)
class CodeFingerprint:
    """The source files on a trial's path, hashed from their bytes (a pip install has no git to ask)."""

    # One hash over every file: equal digests, same code.
    digest: str
    # (path, hash of its bytes) per file, sorted by path: what changed, by name.
    files: tuple[tuple[str, str], ...]
    # Uncommitted changes on the path (untracked files too); None outside a git checkout.
    dirty: bool | None

    def record(self) -> dict[str, object]:
        """As config.json keeps it (finalbn.records.CodeRecord)."""
        return {"fingerprint": self.digest, "dirty": self.dirty, "files": dict(self.files)}

    def changed_from(self, files: Mapping[str, str]) -> list[str]:
        """The paths whose bytes differ from an earlier record's ``files``, added and removed ones included."""
        mine = dict(self.files)
        return sorted(path for path in mine.keys() | files.keys() if mine.get(path) != files.get(path))


@functools.cache
def code_fingerprint(root: Path = SOURCE_ROOT) -> CodeFingerprint:
    """The fingerprint of the ``CODE_PATH`` source files under ``root`` (the folder holding ``finalbn/``)."""
    files = tuple((path, hashlib.sha256((root / path).read_bytes()).hexdigest()[:12]) for path in _code_files(root))
    digest = hashlib.sha256("".join(f"{path}\0{sha}\n" for path, sha in files).encode()).hexdigest()[:16]
    status = _git(["status", "--porcelain", "--", *_pathspecs()], root)
    return CodeFingerprint(digest, files, None if status is None else bool(status.strip()))


@functools.cache
def changed_since(commit: str, root: Path = SOURCE_ROOT) -> tuple[str, ...] | None:
    """The source files on a trial's path that differ between ``commit`` and the files under ``root`` now;
    None when git cannot tell (no checkout, a commit it does not hold, "unknown")."""
    if not _COMMIT.fullmatch(commit):
        return None
    names = _git(["diff", "--name-only", "--relative", commit, "--", *_pathspecs()], root)
    if names is None:
        return None
    return tuple(sorted(name for name in names.splitlines() if name.endswith(".py")))


def _code_files(root: Path) -> list[str]:
    found: list[str] = []
    for entry in CODE_PATH:
        path = root / entry
        # Sources only: caches and an editor's swap files decide nothing.
        candidates = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        found += [candidate.relative_to(root).as_posix() for candidate in candidates if candidate.is_file()]
    return sorted(name for name in found if name not in OFF_PATH)


def _pathspecs() -> list[str]:
    return [*CODE_PATH, *(f":(exclude){name}" for name in sorted(OFF_PATH))]


def _git(arguments: list[str], cwd: Path) -> str | None:
    """git's output, run in ``cwd``; None when git is missing, slow, or fails (not a checkout)."""
    try:
        done = subprocess.run(["git", *arguments], capture_output=True, text=True, timeout=5, cwd=cwd, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def git_commit() -> str:
    """The commit of the finalbn source tree itself (not of the working directory,
    which may be another repository or none), "unknown" outside a checkout."""
    head = _git(["rev-parse", "HEAD"], Path(finalbn.__file__).resolve().parent)
    return head.strip() if head else "unknown"


@functools.cache
def code_versions() -> dict[str, str]:
    """finalbn, its git commit and code fingerprint, python and the libraries that decide the numbers."""
    versions = {
        "finalbn": finalbn.__version__,
        "git_commit": git_commit(),
        "code_fingerprint": code_fingerprint().digest,
        "python": platform.python_version(),
    }
    for package in ("torch", "torchvision", "ray", "mlflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions

"""Which code produced a result: the package version, its git commit, the libraries.

Computed once per process and carried with the job (sweep.json, config.json,
MLflow tags), so every record of one sweep names the same commit.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import finalbn


@functools.cache
def git_commit() -> str:
    """The commit of the finalbn source tree itself (not of the working directory,
    which may be another repository or none), "unknown" outside a checkout."""
    source = Path(finalbn.__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=source, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


@functools.cache
def code_versions() -> dict[str, str]:
    """finalbn, its git commit, python and the libraries that decide the numbers."""
    versions = {"finalbn": finalbn.__version__, "git_commit": git_commit(), "python": platform.python_version()}
    for package in ("torch", "torchvision", "ray", "mlflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions

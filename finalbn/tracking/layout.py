"""The MLflow layout of a sweep, shared by the writer and the reader.

One experiment per sweep, one parent run per invocation, one child run per
trial tagged with its trial id. Only finalbn.tracking talks to MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from finalbn.errors import UserError

TRIAL_TAG = "finalbn.trial_id"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "finalbn.sweep"
VERSION_TAG = "finalbn.version"
COMMIT_TAG = "finalbn.git_commit"
FINGERPRINT_TAG = "finalbn.dataset_fingerprint"
ERROR_TAG = "finalbn.error"
HEADLINE_TAG = "finalbn.report_headline"


def default_tracking_uri(directory: Path) -> str:
    return f"sqlite:///{(directory / 'mlruns.db').resolve()}"


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store across processes: MLflow creates and
    migrates a new database on first open, and two sweeps starting together
    would both run the migrations ("duplicate column name")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///")).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def redact(uri: str) -> str:
    """``https://user:secret@host`` -> ``https://***@host``: credentials never reach logs."""
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)


def metric_key(name: str) -> str:
    # MLflow keys allow letters, digits and _ - . space : / only; class names may hold more.
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def check_reachable(uri: str, fallback: str = "pass --no-tracking") -> None:
    """A tracking server that does not answer fails in seconds, before any work,
    instead of after MLflow's minutes of retries; ``fallback`` ends the fix."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(
            f"MLflow tracking server {redact(uri)} is unreachable ({getattr(error, 'reason', error)}): "
            f"start it, fix --tracking-uri, or {fallback}"
        ) from None

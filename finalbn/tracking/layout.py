"""The MLflow layout of a sweep, shared by the writer and the reader.

One experiment per sweep, one parent run per invocation, one child run per
trial tagged with its trial id. Only finalbn.tracking talks to MLflow.
"""

from __future__ import annotations

import contextlib
import errno
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from finalbn.errors import UserError

TRIAL_TAG = "finalbn.trial_id"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "finalbn.sweep"
VERSION_TAG = "finalbn.version"
COMMIT_TAG = "finalbn.git_commit"
FINGERPRINT_TAG = "finalbn.dataset_fingerprint"
ERROR_TAG = "finalbn.error"
HEADLINE_TAG = "finalbn.report_headline"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


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
    with filelock.FileLock(lock_path):
        yield


def check_store(uri: str, thorough: bool = True) -> None:
    """A SQLite store that is not a sound MLflow database (a text file, a truncated copy, another program's
    database) fails here in one line, before any trial, instead of as MLflow's traceback mid-sweep.

    ``thorough`` also reads every page (SQLite's quick_check: about 0.6 s for 280 MB); Slurm tasks skip it,
    the driver that submitted them checked the same file.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    # Absent or empty: MLflow creates a new store there.
    if not path.is_file() or path.stat().st_size == 0:
        return
    problem = _sqlite_problem(path, thorough)
    if problem is not None:
        raise UserError(
            f"MLflow store {path} {problem}: move it aside (mv {path} {path}.bad) to start a new one, "
            "pass --tracking-uri to use another store, or --no-tracking"
        )


def _sqlite_problem(path: Path, thorough: bool) -> str | None:
    with path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        return "is not an SQLite database"
    if len(header) < 100:
        return "is truncated (no complete header)"
    size = int.from_bytes(header[16:18], "big")
    # 1 stands for 65536, which two bytes cannot hold.
    page_size = 65536 if size == 1 else size
    expected = int.from_bytes(header[28:32], "big") * page_size
    # The header's page count holds when its "valid-for" counter matches the change counter.
    if header[24:28] == header[92:96] and path.stat().st_size < expected:
        return f"is truncated ({path.stat().st_size:,} of {expected:,} bytes)"
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
            verdict = db.execute("pragma quick_check(1)").fetchone()[0] if thorough else "ok"
    except sqlite3.OperationalError:
        # Locked past the timeout, or not openable: MLflow says so in its own words.
        return None
    except sqlite3.DatabaseError as error:
        return f"is damaged (SQLite: {error})"
    if verdict != "ok":
        # quick_check reports over several lines; the error is one.
        return f"is damaged (SQLite: {' '.join(verdict.split())})"
    if tables and "experiments" not in tables:
        return "is another program's SQLite database, not an MLflow store"
    return None


def log_artifact(client: Any, run_id: str, path: Path, folder: str | None = None) -> None:
    """``path`` as an artifact of the run (under ``folder``). A copy into a local artifact store that runs out
    of space is removed before the error goes on: MLflow copies in place and would leave it truncated."""
    try:
        client.log_artifact(run_id, str(path), artifact_path=folder)
    except OSError as error:
        location = client.get_run(run_id).info.artifact_uri
        if error.errno in (errno.ENOSPC, errno.EDQUOT) and location.startswith("file:"):
            Path(urllib.parse.urlparse(location).path, folder or "", path.name).unlink(missing_ok=True)
        raise


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

"""Writing: every record and table goes through ``write_atomic`` (a temporary file beside the target, flushed
to disk, renamed over it), so a crash or a full disk leaves the old file or the new one, never a 0-byte or
truncated one; a full disk is one ``UserError`` line naming the folder, its free space and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from finalbn.errors import UserError

# How every disk-full message starts; record_failure finds it again in a worker's traceback.
DISK_FULL = "disk full"
# ENOSPC, and EDQUOT (a cluster's per-user quota): the same fix.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the OS words them, and how polars quotes ENOSPC.
FULL_TEXTS = tuple(os.strerror(code) for code in FULL_ERRNOS) + (f"os error {errno.ENOSPC}",)
# torch.save reports a full disk as a RuntimeError that names no cause; below this much free space, that is the cause.
_NEARLY_FULL = 1 << 20


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(temporary)`` fills a temporary file beside ``path``, which is flushed to disk and renamed over
    it: readers and a crash see the old file or the new one. A full disk raises the one-line disk-full error."""
    # Named, not mkstemp: mkstemp's mode 0600 would keep a shared results folder's files from its group.
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        # Asked before the unlink: the partial file is what fills the disk.
        full = isinstance(error, Exception) and _out_of_space(error, path.parent)
        temporary.unlink(missing_ok=True)
        if full:
            raise disk_full(path) from error
        raise
    _sync_folder(path.parent)
    return path


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def write_parquet(path: Path, frame: pl.DataFrame) -> Path:
    """With page checksums, so that a garbled page fails to read instead of reading as other numbers."""
    table = frame.to_arrow()
    return write_atomic(
        path, lambda temporary: pq.write_table(table, temporary, compression="zstd", write_page_checksum=True)
    )


def disk_full(path: Path) -> UserError:
    """The one line for a write that found no space: the folder, what is free there, the fix."""
    folder = path.parent.absolute()
    usage = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists()))
    return UserError(
        f"{DISK_FULL}: cannot write to {folder} ({_size(usage.free)} free of {_size(usage.total)}): free space "
        "there or pass --out on a disk with room, then rerun the same command to resume"
    )


def _out_of_space(error: Exception, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return True
    # polars (ComputeError) and torch (RuntimeError) wrap the OS error in their own types, without errno.
    if any(text in str(error) for text in FULL_TEXTS):
        return True
    return isinstance(error, RuntimeError) and shutil.disk_usage(folder).free < _NEARLY_FULL


def _sync_folder(folder: Path) -> None:
    """The rename itself reaches the disk; a file system that cannot sync a folder (some network ones) is let be."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _size(count: float) -> str:
    unit = "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            break
        count, unit = count / 1024, larger
    return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"


def check_writable(folder: Path) -> None:
    """Fail in one line when ``folder`` cannot be created and written, creating nothing (the
    sweep command checks --out so before anything, even MLflow's store, is made)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is a file" if existing == folder.absolute() and existing.exists() else f"is under {existing}"
        raise UserError(f"cannot write results to {folder} (it {what}, not a writable folder): pass --out with one")


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

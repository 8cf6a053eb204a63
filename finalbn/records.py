"""The records a sweep keeps, read through one validated schema and written atomically.

Reading: a trial's ``config.json``, ``summary.json``, ``failure.json``,
``metrics.parquet`` and ``predictions.parquet`` (and ``sweep.json``, whose
dataclasses live in finalbn.sweep.record) are validated here; a file that does
not parse, a wrong type (``"0.9"`` for a number), a null or a missing key is a
``RecordError`` naming the file and the field, never a value trusted downstream.

Writing: every record and table goes through ``write_atomic`` (a temporary
file beside the target, flushed to disk, renamed over it), so a crash or a
full disk leaves the old file or the new one, never a 0-byte or truncated
one; a full disk is one ``UserError`` line naming the folder, its free space
and the fix.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from traceback import format_exception_only
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

# pydantic rather than msgspec or a checker of our own: it is installed already (MLflow requires it), its strict
# mode rejects exactly what must not be trusted ("0.9" or null for a number, a missing key), it parses and
# validates JSON in one compiled pass (cheap enough for every finished trial at every sweep start), and it
# validates sweep.json's plain dataclasses as they are declared, so no record is described twice.
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from finalbn.errors import UserError

CONFIG = "config.json"
SUMMARY = "summary.json"
FAILURE = "failure.json"
METRICS = "metrics.parquet"
PREDICTIONS = "predictions.parquet"

# How every disk-full message starts; record_failure finds it again in a worker's traceback.
DISK_FULL = "disk full"
# ENOSPC, and EDQUOT (a cluster's per-user quota): the same fix.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the OS words them, and how polars quotes ENOSPC.
_FULL_TEXTS = tuple(os.strerror(code) for code in _FULL_ERRNOS) + (f"os error {errno.ENOSPC}",)
# torch.save reports a full disk as a RuntimeError that names no cause; below this much free space, that is the cause.
_NEARLY_FULL = 1 << 20

T = TypeVar("T")


class RecordError(ValueError):
    """A record that does not validate; the message names the file and what is wrong with it."""


class _Strict(BaseModel):
    # Unknown keys are kept: a newer finalbn may add fields that this one does not read.
    model_config = ConfigDict(strict=True, extra="allow")


class FinalMetrics(_Strict):
    """A trial's final test metrics; every other key (``f1_<class>``, ``bn_*``, the post-hoc ``la_*``, ``thr_*``
    and ``nobn_*``) must be a number too."""

    __pydantic_extra__: dict[str, float]
    accuracy: float
    brier: float
    ece: float
    f1_majority: float
    f1_minority: float
    # Written since issue 12 (finalbn.metrics.separation_metrics): a record from before has none of them,
    # and reads back without them (values() lists what the file holds), never with a made-up number.
    auc: float = math.nan
    minority_prob_on_majority: float = math.nan
    minority_prob_on_minority: float = math.nan
    # Written since issue 20 (finalbn.metrics.trial_metrics), read back the same way; so are the la_*, thr_*
    # and nobn_* sets of post-hoc variants, among the other keys.
    ap: float = math.nan
    balanced_accuracy: float = math.nan
    precision_minority: float = math.nan
    recall_minority: float = math.nan
    f1_minority_natural: float = math.nan
    precision_minority_natural: float = math.nan
    recall_minority_natural: float = math.nan
    ap_natural: float = math.nan
    ece_natural: float = math.nan
    brier_natural: float = math.nan
    accuracy_natural: float = math.nan

    def values(self) -> dict[str, float]:
        """Every metric the record holds, by name in sorted order (as summary.json stores them)."""
        return dict(sorted(self.model_dump(exclude_unset=True).items()))


class Threads(_Strict):
    """The CPU threads a trial trained with: torch's count then, and the environment variables that set it."""

    torch: int
    # OMP_NUM_THREADS and MKL_NUM_THREADS, those that were set.
    env: dict[str, str]


class Summary(_Strict):
    """``summary.json``: written last, so its presence means the trial finished."""

    trial_id: str
    seconds: float
    device: str
    # The autocast dtype the trial ran in ("float32": none); None in trials finished before it was recorded.
    precision: str | None = None
    # The CPU threads it trained with: the same trial can score otherwise with other threads or precision.
    # None in trials finished before it was recorded.
    threads: Threads | None = None
    test: FinalMetrics
    # Where it ran (backend, node, Slurm job, restarts): shown, never computed with.
    worker: dict[str, Any]


class CodeRecord(_Strict):
    """The source files a trial's numbers came from: planning retrains a trial when they changed since."""

    fingerprint: str
    # Uncommitted changes on that path then; None outside a git checkout.
    dirty: bool | None
    # Path -> hash of its bytes.
    files: dict[str, str]


class TrialRecord(_Strict):
    """``config.json``: the resolved config, written before the first step."""

    trial_id: str
    manifest_fingerprint: str
    classes: list[str]
    config: dict[str, dict[str, Any]]
    versions: dict[str, str]
    # The source on the trial's path (finalbn.provenance.CodeFingerprint); None in trials finished before it
    # was recorded.
    code: CodeRecord | None = None


class Failure(_Strict):
    """``failure.json``: failed attempts so far and the last one's traceback."""

    trial_id: str
    attempts: int
    traceback: str


@dataclass(frozen=True)
class FinishedTrial:
    """A finished trial's folder, every record validated."""

    record: TrialRecord
    summary: Summary
    metrics: pl.DataFrame


def read_finished(folder: Path, trial_id: str, epochs: int) -> FinishedTrial:
    """The records of a finished trial of ``epochs`` epochs; RecordError when any does not validate."""
    record = read_json(folder / CONFIG, TrialRecord)
    if record.trial_id != trial_id:
        raise RecordError(f"{CONFIG}: belongs to trial {record.trial_id!r}, not {trial_id}")
    summary = read_summary(folder / SUMMARY, trial_id)
    metrics = read_metrics(folder / METRICS, trial_id, epochs)
    read_predictions(folder / PREDICTIONS, record.classes)
    return FinishedTrial(record, summary, metrics)


def read_json(path: Path, schema: type[T]) -> T:
    """``path`` parsed and validated as ``schema`` (a pydantic model or a dataclass), strictly."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise RecordError(f"{path.name}: {'missing' if error.errno == errno.ENOENT else error.strerror}") from None
    try:
        return _adapter(schema).validate_json(raw, strict=True)
    except ValidationError as error:
        raise RecordError(f"{path.name}: {_reason(error)}") from None


def read_summary(path: Path, trial_id: str) -> Summary:
    """Trial ``trial_id``'s summary.json (a trial folder's, or its MLflow run's artifact)."""
    summary = read_json(path, Summary)
    if summary.trial_id != trial_id:
        raise RecordError(f"{path.name}: belongs to trial {summary.trial_id!r}, not {trial_id}")
    return summary


def read_failure(path: Path, trial_id: str) -> Failure:
    failure = read_json(path, Failure)
    if failure.trial_id != trial_id or failure.attempts < 1:
        raise RecordError(f"{path.name}: trial {failure.trial_id!r} with {failure.attempts} attempts, not {trial_id}")
    return failure


def read_metrics(path: Path, trial_id: str, epochs: int | None = None) -> pl.DataFrame:
    """One row per epoch 1..n of trial ``trial_id`` (n = ``epochs`` when given), every metric a number."""
    frame = _read_parquet(path)
    problem = _metrics_problem(frame, trial_id, epochs)
    if problem is not None:
        raise RecordError(f"{path.name}: {problem}")
    return frame


def read_predictions(path: Path, classes: list[str]) -> pl.DataFrame:
    """Test-set predictions: path, label, indices and a probability per class (also ``nobn_``), no nulls."""
    frame = _read_parquet(path)
    problem = _predictions_problem(frame, classes)
    if problem is not None:
        raise RecordError(f"{path.name}: {problem}")
    return frame


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


@dataclass(frozen=True)
class Fault:
    """A failure every later trial would repeat: the sweep stops on it with one line (exit 2) instead of
    retrying, and the same command resumes once it is fixed."""

    # How the line starts; a UserError line that starts so is recognised again in a worker's traceback.
    what: str
    # The OS's or a library's own words for it, found in a traceback's text.
    pattern: re.Pattern[str]
    # The fix; ``{store}`` names the MLflow store where it is known.
    fix: str


# Each fault once: what the driver catches (fault_of) and what a worker's traceback says (fault_in) are told
# apart here only. A worker's failure reaches the driver as text (a Ray worker is another process), so the
# matchers read text. Measured causes: a read-only remount of --out; mlruns.db deleted mid-sweep (SQLite then
# says "readonly database", or "no such table" on a new connection); ulimit -v between about 5 and 6.5 GB on
# a smoke sweep ("failed to map segment" when a trial imports scipy; below that nothing starts, above it all fits).
FAULTS = (
    Fault(
        DISK_FULL,
        re.compile("|".join(map(re.escape, _FULL_TEXTS))),
        "free space there or pass --out on a disk with room",
    ),
    Fault(
        "not writable",
        re.compile(r"\[Errno (?:13|30)\] (?:Permission denied|Read-only file system)"),
        "make it writable (chmod u+w, or remount it read-write) or pass --out with a writable folder",
    ),
    Fault(
        "MLflow store lost",
        re.compile(r"(?:no such table|unable to open database file|attempt to write a readonly database)"),
        "{store} was removed or made read-only while the sweep ran (a rerun makes a new one; --no-tracking "
        "turns MLflow off)",
    ),
    Fault(
        "out of memory",
        re.compile(
            r"MemoryError|OutOfMemoryError|CUDA out of memory|std::bad_alloc|Cannot allocate memory"
            r"|failed to map segment from shared object"
        ),
        "run fewer trials at once (--max-concurrent) or smaller ones (--set train.batch_size=N), or raise the "
        "memory limit (ulimit -v)",
    ),
    Fault(
        "cannot start a thread",
        re.compile(r"pthread_create failed|can't start new thread|can't create new thread"),
        "run fewer trials at once (--max-concurrent) or raise the limits on processes and memory (ulimit -u, -v)",
    ),
)
_RESUME = "then rerun the same command to resume"
_OURS = re.compile(r"UserError: ((?:" + "|".join(re.escape(f.what) for f in FAULTS) + r"): [^\n]*)")


def fault_in(traceback: str, store: str = "the MLflow store", where: str = "a trial") -> str | None:
    """The one line for a fault (``FAULTS``) in a failed attempt's traceback (``where`` stopped on it), or
    None: a trial's own bug. Our own line is kept as it is; a library's is quoted with the fix."""
    ours = _OURS.search(traceback)
    if ours is not None:
        return ours.group(1)
    for fault in FAULTS:
        # The last mention: a traceback ends with its exception, after the source lines that raised it.
        found = next(reversed(list(fault.pattern.finditer(traceback))), None)
        if found is not None:
            start = traceback.rfind("\n", 0, found.start()) + 1
            end = traceback.find("\n", found.end())
            quoted = traceback[start : None if end < 0 else end].strip()[:300]
            return f"{fault.what}: {where} stopped on {quoted}: {fault.fix.format(store=store)}, {_RESUME}"
    return None


def fault_of(error: BaseException, store: str = "the MLflow store") -> UserError | None:
    """A caught error as its fault's one-line UserError, or None. The first cause is read first: a read-only
    folder that fails a write fails the cleanup after it too, and the write is the one to name."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in reversed(chain):
        if isinstance(cause, UserError):
            return cause
        line = fault_in("".join(format_exception_only(cause)), store, where="the sweep")
        if line is not None:
            return UserError(line)
    return None


def _out_of_space(error: Exception, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    # polars (ComputeError) and torch (RuntimeError) wrap the OS error in their own types, without errno.
    if any(text in str(error) for text in _FULL_TEXTS):
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


@functools.cache
def _adapter(schema: type[T]) -> TypeAdapter[T]:
    return TypeAdapter(schema)


def _reason(error: ValidationError) -> str:
    """pydantic's first complaint as a short clause: ``test.f1_minority: Input should be a valid number, got '0.9'``."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    text = f"{where}: {first['msg']}" if where else first["msg"]
    if first["type"] not in ("missing", "json_invalid"):
        text += f", got {_short(first['input'])}"
    more = error.error_count() - 1
    return text + (f" (and {more} more)" if more else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_parquet(path: Path) -> pl.DataFrame:
    # Through pyarrow: whatever is wrong with the file, it raises OSError or an ArrowException (polars may panic).
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as handle:
            return pl.from_arrow(handle.read())
    except FileNotFoundError:
        raise RecordError(f"{path.name}: missing") from None
    except (OSError, pa.ArrowException) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecordError(f"{path.name}: does not read as Parquet ({first})") from None


def _metrics_problem(frame: pl.DataFrame, trial_id: str, epochs: int | None) -> str | None:
    schema = frame.schema
    for column in ("trial_id", "epoch", "train_loss", "test_f1_minority", "test_f1_majority", "seconds"):
        if column not in schema:
            return f"no column {column!r}"
    if schema["trial_id"] != pl.String or not schema["epoch"].is_integer():
        return "trial_id must be text and epoch an integer"
    wrong = [name for name, dtype in schema.items() if name not in ("trial_id", "epoch") and not dtype.is_float()]
    if wrong:
        return f"column {wrong[0]!r} is {schema[wrong[0]]}, not a number"
    if any(column.null_count() for column in frame.iter_columns()):
        return "holds nulls"
    if frame["trial_id"].ne(trial_id).any():
        return f"rows of another trial than {trial_id}"
    if frame["epoch"].to_list() != list(range(1, frame.height + 1)):
        return f"epochs {frame['epoch'].to_list()}, expected 1..{frame.height} in order"
    if epochs is not None and frame.height != epochs:
        return f"{frame.height} epochs of {epochs}"
    return None


def _predictions_problem(frame: pl.DataFrame, classes: list[str]) -> str | None:
    schema = frame.schema
    prefixes = ("", "nobn_") if "nobn_predicted_index" in schema else ("",)
    expected: dict[str, Callable[[pl.DataType], bool]] = {
        "path": lambda t: t == pl.String,
        "label": lambda t: t == pl.String,
        "label_index": lambda t: t.is_integer(),
    }
    for prefix in prefixes:
        expected[f"{prefix}predicted_index"] = lambda t: t.is_integer()
        expected |= {f"{prefix}prob_{name}": lambda t: t.is_float() for name in classes}
    for column, check in expected.items():
        if column not in schema:
            return f"no column {column!r}"
        if not check(schema[column]):
            return f"column {column!r} is {schema[column]}"
    if frame.height == 0:
        return "no rows"
    if any(column.null_count() for column in frame.iter_columns()):
        return "holds nulls"
    return None


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

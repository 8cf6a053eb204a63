"""The records of a trial folder, read through one validated schema.

A trial's ``config.json``, ``summary.json``, ``failure.json``, ``metrics.parquet`` and ``predictions.parquet``
(and ``sweep.json``, whose dataclasses live in finalbn.sweep.record) are validated here; a file that does not
parse, a wrong type (``"0.9"`` for a number), a null or a missing key is a ``RecordError`` naming the file and
the field, never a value trusted downstream.
"""

from __future__ import annotations

import errno
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

# pydantic rather than msgspec or a checker of our own: it is installed already (MLflow requires it), its strict
# mode rejects exactly what must not be trusted ("0.9" or null for a number, a missing key), it parses and
# validates JSON in one compiled pass (cheap enough for every finished trial at every sweep start), and it
# validates sweep.json's plain dataclasses as they are declared, so no record is described twice.
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from finalbn.records.folders import CONFIG, METRICS, PREDICTIONS, SUMMARY

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

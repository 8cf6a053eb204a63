"""The MLflow layout of a sweep, shared by the writer and the reader.

One experiment per sweep, one parent run per invocation, one child run per
trial tagged with its trial id. Only finalbn.tracking talks to MLflow.
"""

from __future__ import annotations

import contextlib
import decimal
import errno
import json
import re
import shutil
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.records import write_atomic
from finalbn.records.folders import MLFLOW_STORE
from finalbn.sweep.spec import PlannedTrial, SweepSpec, flatten

TRIAL_TAG = "finalbn.trial_id"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "finalbn.sweep"
VERSION_TAG = "finalbn.version"
COMMIT_TAG = "finalbn.git_commit"
FINGERPRINT_TAG = "finalbn.dataset_fingerprint"
# The fingerprint of the code on the trial's path (finalbn.provenance.code_fingerprint).
CODE_TAG = "finalbn.code_fingerprint"
ERROR_TAG = "finalbn.error"
HEADLINE_TAG = "finalbn.report_headline"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# A child's full name ("train_minority=30 final_norm=bn seed=2"); its run name is the short one.
TRIAL_NAME_TAG = "finalbn.trial_name"
# The run's description in the UI.
NOTE_TAG = "mlflow.note.content"
# A parent run's trial counts, set when it ends: what its invocation did with the trials it set out to run.
COUNT_TAGS = {
    "finished": "finalbn.trials_finished",
    "failed": "finalbn.trials_failed",
    # Not finished nor failed: cut short (Ctrl-C, a fault), or never started.
    "unfinished": "finalbn.trials_unfinished",
}

# Config fields only some data sources read, and which. Elsewhere a field left at its default is not logged:
# an MNIST trial showing data.plant=Apple in the runs table reads as a PlantVillage one.
_MNIST = frozenset({"mnist", "torchvision-mnist"})
_FILES = frozenset({"folder", "plantvillage"})
SOURCE_FIELDS: dict[str, frozenset[str]] = {
    "data.root": _FILES | {"torchvision-mnist"},
    "data.plant": frozenset({"plantvillage"}),
    "data.majority": _MNIST | {"folder"},
    "data.minority": _MNIST | {"folder"},
    "data.pool_minority": frozenset({"folder"}),
    # Leaf ids come from file names; MNIST images have none.
    "data.group_by_leaf": _FILES,
    # MNIST images keep their native 28x28.
    "data.image_size": _FILES,
}
# A config field's value when it was not logged (for the reader).
_DEFAULTS = {key: str(value) for key, value in flatten(TrialConfig()).items()}


def config_params(config: TrialConfig) -> dict[str, str]:
    """A trial's config as MLflow params, without the fields its data source does not read (at their default)."""
    source = config.data.source
    return {
        key: str(value)
        for key, value in flatten(config).items()
        if source in SOURCE_FIELDS.get(key, {source}) or str(value) != _DEFAULTS[key]
    }


def with_unlogged_params(params: dict[str, str]) -> dict[str, str]:
    """A trial's config from its params, with the fields ``config_params`` left out at their default: every
    run, every field. Joint-axis labels (``trial_params``) are no field; analysis reads them from sweep.json."""
    # A field is dotted ("train.lr"), a joint axis is not (finalbn.sweep.spec.Axis.joint).
    fields = {key: value for key, value in params.items() if "." in key}
    return {key: _DEFAULTS[key] for key in SOURCE_FIELDS if key not in fields} | fields


def trial_params(trial: PlannedTrial) -> dict[str, str]:
    """A trial's MLflow params: its config (``config_params``) and the label of each joint axis
    (``variant=WL``), which sets several fields at once and is no field itself."""
    joint = {axis: label for axis, label in trial.point.items() if "." not in axis}
    return config_params(trial.config) | joint


def axis_keys(spec: SweepSpec) -> dict[str, str]:
    """Axis name -> its key in short run names, for the axes with more than one value: the fewest last words
    of its name that no other such axis ends with ("data.train_minority" -> "minority", but "train_minority"
    beside "data.val_minority")."""
    words = {axis.name: re.split(r"[._]", axis.name) for axis in spec.axes if len(axis.values) > 1}

    def key(name: str) -> str:
        for count in range(1, len(words[name])):
            tail = words[name][-count:]
            if all(other[-count:] != tail for axis, other in words.items() if axis != name):
                return "_".join(tail)
        return name

    return {name: key(name) for name in words}


@dataclass(frozen=True)
class RunNames:
    """Child run names: ``minority=003 norm=bn``, the axes that vary with their values written to sort
    as they count (the runs table sorts names as text)."""

    # Axis name -> its key in the names (``axis_keys``).
    keys: dict[str, str] = field(default_factory=dict)
    # Axis name -> {a value's label: how the names write it}, for the numeric axes.
    values: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: SweepSpec) -> RunNames:
        keys = axis_keys(spec)
        values = {}
        for axis in spec.axes:
            written = _sortable(axis.values) if axis.name in keys and not axis.labels else None
            if written is not None:
                values[axis.name] = {axis.label(i): text for i, text in enumerate(written)}
        return cls(keys, values)

    def value(self, axis: str, label: str) -> str:
        return self.values.get(axis, {}).get(label, label)

    def name(self, point: dict[str, str]) -> str:
        return " ".join(f"{key}={self.value(axis, point[axis])}" for axis, key in self.keys.items() if axis in point)


def _sortable(values: tuple[Any, ...]) -> list[str] | None:
    """Numbers written so that text order is number order: integers zero-padded to the widest (3 -> ``003``),
    others rounded to 3 significant digits with one count of decimals (3e-4, 1e-3 -> ``0.0003``, ``0.0010``).
    None when any value is no number."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    if all(isinstance(v, int) for v in values):
        width = max(len(str(abs(v))) for v in values)
        return [f"{'-' if v < 0 else ''}{abs(v):0{width}d}" for v in values]
    rounded = [float(f"{v:.3g}") for v in values]
    decimals = max(max(0, -decimal.Decimal(repr(v)).as_tuple().exponent) for v in rounded)
    width = max(len(f"{abs(v):.{decimals}f}") for v in rounded)
    return [f"{'-' if v < 0 else ''}{abs(v):0{width}.{decimals}f}" for v in rounded]


# MLflow's shared views: the UI opens ``#/experiments/<id>/runs?viewStateShareKey=<key>`` with the columns and
# the order this experiment tag holds (JSON, the UI's own field names).
RUNS_VIEW = "finalbn-runs"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW}"
# A trial's last test numbers (summary.json's, nobn_* too) are logged under this prefix: the runs table's columns.
FINAL = "final_"


def runs_view(spec: SweepSpec) -> str:
    """The runs table of a sweep: the axes' and the headline metrics' columns, the full names as descriptions,
    ordered by run name (MLflow lists the invocations' trials flat then, instead of folded under their parent)."""
    columns = [
        "attributes.`Description`",
        # Joint axes too: a child logs its label (``trial_params``), the parent the labels.
        *(f"params.`{axis.name}`" for axis in spec.axes),
        *(f"metrics.`{name}`" for name in VIEW_METRICS),
        *(f"tags.`{tag}`" for tag in COUNT_TAGS.values()),
    ]
    return json.dumps({"orderByKey": "tags.`mlflow.runName`", "orderByAsc": True, "selectedColumns": columns})


def default_tracking_uri(directory: Path) -> str:
    return f"sqlite:///{(directory / MLFLOW_STORE).resolve()}"


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
    # Reentrant in one thread: a Slurm task's tracker holds it while the store's client opens lazily inside.
    with filelock.FileLock(lock_path, is_singleton=True):
        yield


def seed_store(uri: str) -> None:
    """A new SQLite store starts as a copy of an empty one that finalbn's cache keeps per MLflow version.

    MLflow builds a new store by running every schema migration (1.6 s on this project's 2-core machine, for
    each sweep and each test that opens a store); the copy takes milliseconds. The template holds the
    migrated schema without MLflow's Default experiment, which MLflow then makes on first open as it would
    (its artifact folder under the opener's working directory). Call under ``store_lock``.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.is_file() and path.stat().st_size > 0:
        return
    import mlflow

    # Imported here: finalbn.data loads torch, which a sweep that opens a store has loaded already.
    from finalbn.data.cache import cache_root

    template = cache_root() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(template.with_suffix(".lock")):
            if not template.is_file():
                write_atomic(template, _empty_store)
    except (OSError, UserError):
        # A cache folder that takes no file (read-only, full) only costs the migrations: MLflow builds the store.
        return
    write_atomic(path, lambda temporary: shutil.copyfile(template, temporary))


def _empty_store(path: Path) -> None:
    """A store MLflow migrated at ``path``, its Default experiment taken out again."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", path.parent.as_uri())
    store.engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as database, database:
        database.execute("delete from experiment_tags")
        database.execute("delete from experiments")


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


def final_metric(name: str) -> str:
    """The MLflow key of a trial's last test number ``name`` (a summary.json test key)."""
    return metric_key(FINAL + name)


# The last test numbers worth a column in the runs table.
VIEW_METRICS = tuple(final_metric(name) for name in ("f1_minority", "f1_majority", "nobn_f1_minority", "accuracy"))


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

"""The trial records: one validated schema on every read, atomic writes, a full disk and a bad store in one line.

A real two-trial sweep (serial backend, embedded MNIST) is trained once per
module; each test damages a copy of it the way a crash, a full disk or a
hostile hand would, and checks what the sweep, the tables and the readers do.
The disk-full cases mount a real tmpfs (we run as root; skipped with the reason
where mount is refused).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from backends import serial
from faults import tmpfs

from finalbn.errors import UserError
from finalbn.launch.base import failed_attempts, record_failure
from finalbn.records import (
    CONFIG,
    FAILURE,
    METRICS,
    PREDICTIONS,
    SUMMARY,
    RecordError,
    fault_in,
    read_failure,
    read_finished,
    write_json,
    write_parquet,
)
from finalbn.sweep import SweepOptions, SweepRecord, run_sweep, summary_table
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import plan, set_aside_unusable
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.sweep.tables import write_tables
from finalbn.tracking import MlflowTracker, NullTracker, log_report_files
from finalbn.train.presets import EMBEDDED_MNIST

REPO = Path(__file__).resolve().parents[1]
SPEC = SweepSpec(
    name="records",
    base=EMBEDDED_MNIST.replace(train={"epochs": 2}),
    axes=(Axis("model.final_norm", ("bn", "none")),),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<out>/records/``: a finished two-trial sweep, trained once for the module."""
    out = tmp_path_factory.mktemp("trained")
    report = run_sweep(SPEC, SweepOptions(out=out), serial(), NullTracker())
    assert len(report.finished) == 2
    return out


@pytest.fixture
def sweep(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained sweep's results folder, for one test to damage."""
    shutil.copytree(trained, tmp_path / "out")
    return tmp_path / "out"


def jobs(out: Path) -> list[TrialJob]:
    return plan(SPEC, out / SPEC.name, git_commit="unknown")


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def set_key(*keys: str, value: object) -> Callable[[dict], None]:
    def change(record: dict) -> None:
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value

    return change


def drop_key(*keys: str) -> Callable[[dict], None]:
    def change(record: dict) -> None:
        for key in keys[:-1]:
            record = record[key]
        del record[keys[-1]]

    return change


def rewrite_parquet(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    return lambda path: change(pl.read_parquet(path)).write_parquet(path)


# (case, file, damage, excerpt of the reason)
DAMAGES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("f1 as a string", SUMMARY, lambda p: edit_json(p, set_key("test", "f1_minority", value="0.9")), "valid number"),
    ("f1 null", SUMMARY, lambda p: edit_json(p, set_key("test", "f1_minority", value=None)), "valid number"),
    ("a per-class metric as text", SUMMARY, lambda p: edit_json(p, set_key("test", "f1_3", value="x")), "test.f1_3"),
    ("no seconds", SUMMARY, lambda p: edit_json(p, drop_key("seconds")), "seconds: Field required"),
    ("summary 0 bytes", SUMMARY, lambda p: p.write_bytes(b""), "Invalid JSON"),
    ("summary truncated", SUMMARY, lambda p: p.write_bytes(p.read_bytes()[:40]), "Invalid JSON"),
    ("summary of another trial", SUMMARY, lambda p: edit_json(p, set_key("trial_id", value="0" * 12)), "belongs to"),
    ("config garbled", CONFIG, lambda p: p.write_bytes(b"\x00\xff garbage"), "Invalid JSON"),
    ("classes not a list", CONFIG, lambda p: edit_json(p, set_key("classes", value="8,3")), "classes"),
    ("config missing", CONFIG, lambda p: p.unlink(), "config.json: missing"),
    ("metrics garbled", METRICS, lambda p: p.write_bytes(b"not parquet at all"), "does not read as Parquet"),
    ("metrics truncated", METRICS, lambda p: p.write_bytes(p.read_bytes()[:4096]), "does not read as Parquet"),
    (
        "metric as text",
        METRICS,
        rewrite_parquet(lambda f: f.with_columns(pl.col("test_f1_minority").cast(pl.String))),
        "not a number",
    ),
    (
        "metric null",
        METRICS,
        rewrite_parquet(lambda f: f.with_columns(pl.lit(None, pl.Float64).alias("test_ece"))),
        "holds nulls",
    ),
    ("an epoch lost", METRICS, rewrite_parquet(lambda f: f.head(1)), "1 epochs of 2"),
    ("no seconds column", METRICS, rewrite_parquet(lambda f: f.drop("seconds")), "no column 'seconds'"),
    ("predictions garbled", PREDICTIONS, lambda p: p.write_bytes(b"PAR1" + b"\x07" * 500), "does not read as Parquet"),
    (
        "a flipped byte in predictions",
        PREDICTIONS,
        lambda p: p.write_bytes(_flip(p.read_bytes(), 200)),
        "does not read as Parquet",
    ),
    ("probability missing", PREDICTIONS, rewrite_parquet(lambda f: f.drop("prob_3")), "no column 'prob_3'"),
]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize("case, name, damage, reason", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_record_sets_the_trial_aside_with_its_reason(
    sweep: Path, case: str, name: str, damage: Callable[[Path], None], reason: str
) -> None:
    planned = jobs(sweep)
    victim = planned[0]
    damage(victim.folder / name)
    with pytest.raises(RecordError, match=reason):
        read_finished(victim.folder, victim.trial_id, 2)
    notes = set_aside_unusable(planned)
    assert len(notes) == 1 and victim.trial_id in notes[0] and reason in notes[0] and "\n" not in notes[0]
    assert not victim.folder.exists()
    [moved] = (sweep / SPEC.name / "damaged").glob(f"{victim.trial_id}-*[0-9]")
    assert reason in moved.with_name(moved.name + ".reason.txt").read_text()
    # The other trial validates and stays; the tables hold it alone, with numbers where numbers belong.
    write_tables(sweep / SPEC.name, planned)
    trials = pl.read_parquet(sweep / SPEC.name / "trials.parquet")
    assert trials["trial_id"].to_list() == [planned[1].trial_id]
    assert trials.schema["f1_minority"] == pl.Float64 and trials.schema["seconds"] == pl.Float64


def test_a_table_is_never_built_from_a_record_that_does_not_validate(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = jobs(sweep)
    edit_json(planned[1].folder / SUMMARY, set_key("test", "f1_minority", value="0.9"))
    write_tables(sweep / SPEC.name, planned)
    assert pl.read_parquet(sweep / SPEC.name / "trials.parquet")["trial_id"].to_list() == [planned[0].trial_id]
    assert f"trial {planned[1].trial_id}: left out of the tables" in capsys.readouterr().out


def test_a_wrong_typed_summary_is_retrained_and_the_summary_table_computes(sweep: Path) -> None:
    """The issue's case: f1_minority "0.9" used to make trials.parquet a string column and every later run fail."""
    planned = jobs(sweep)
    edit_json(planned[0].folder / SUMMARY, set_key("test", "f1_minority", value="0.9"))
    report = run_sweep(SPEC, SweepOptions(out=sweep), serial(), NullTracker())
    assert report.finished == [planned[0].trial_id] and report.skipped == 1
    table = summary_table(report.folder, SPEC)
    assert table is not None and table["trials"].sum() == 2
    assert table.schema["minority F1"] == pl.Float64
    epochs = pl.read_parquet(report.folder / "epochs.parquet")
    assert epochs.height == 4 and epochs.select("trial_id", "epoch").is_duplicated().sum() == 0


UNREADABLE = [b"", b'{"trial_id": "abc", "attem', b"\xff\xfe\x00"]


@pytest.mark.parametrize("content", UNREADABLE, ids=["0-byte", "cut", "bytes"])
def test_an_unreadable_failure_record_counts_as_no_attempt(
    sweep: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    job = jobs(sweep)[0]
    (job.folder / FAILURE).write_bytes(content)
    assert failed_attempts(job) == 0
    record_failure(job, "Traceback (most recent call last):\nRuntimeError: boom\n")
    assert read_failure(job.folder / FAILURE, job.trial_id).attempts == 1
    assert "counted again from 0" in capsys.readouterr().out
    record_failure(job, "RuntimeError: again\n")
    assert failed_attempts(job) == 2


def test_a_failed_attempt_on_a_full_disk_stops_the_sweep(sweep: Path) -> None:
    job = jobs(sweep)[0]
    ours = "finalbn.errors.UserError: disk full: cannot write to /x (0 bytes free of 1.0 MiB): free space there"
    with pytest.raises(UserError, match="^disk full: cannot write to /x"):
        record_failure(job, f"Traceback (most recent call last):\n  File x\n{ours}\n")
    # The attempt is still on record; the OS's own message (a write that bypassed finalbn) is recognised too.
    assert failed_attempts(job) == 1
    assert fault_in("OSError: [Errno 28] No space left on device: '/r/x'").startswith("disk full: a trial")
    # Another fault is told apart from a full disk.
    assert fault_in("Traceback\nRuntimeError: CUDA out of memory\n").startswith("out of memory: a trial")


def test_the_records_as_written_validate(trained: Path) -> None:
    for job in jobs(trained):
        trial = read_finished(job.folder, job.trial_id, 2)
        assert trial.summary.test.values()["f1_minority"] == trial.summary.test.f1_minority
        assert trial.record.classes == ["8", "3"] and trial.metrics.height == 2
    record = SweepRecord.read(trained / SPEC.name)
    assert record is not None and record.spec() == SPEC
    # No temporary file of an atomic write is left behind.
    assert not list(trained.rglob("*.tmp"))


def test_a_wrong_typed_sweep_record_is_a_one_line_error(sweep: Path) -> None:
    edit_json(sweep / SPEC.name / "sweep.json", set_key("trials", value=5))
    with pytest.raises(UserError, match=r"does not read as a finalbn sweep record \(sweep.json: trials"):
        SweepRecord.read(sweep / SPEC.name)


def test_validation_is_cheap_enough_for_every_finished_trial(trained: Path, tmp_path: Path) -> None:
    """Every sweep start validates every finished trial: 300 folders must take well under a few seconds."""
    job = jobs(trained)[0]
    copies = [tmp_path / f"{i:03d}" for i in range(300)]
    for copy in copies:
        shutil.copytree(job.folder, copy, ignore=shutil.ignore_patterns("manifest.parquet"))
    started = time.perf_counter()
    for copy in copies:
        read_finished(copy, job.trial_id, 2)
    per_folder = (time.perf_counter() - started) / len(copies)
    print(f"validation: {per_folder * 1000:.2f} ms per trial folder")
    assert per_folder < 0.02


# ------------------------------------------------------------------ atomic writes and a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "256k") as mount:
        yield mount


def test_a_full_disk_leaves_the_old_file_and_says_so_in_one_line(small_disk: Path) -> None:
    path = small_disk / "metrics.parquet"
    write_parquet(path, pl.DataFrame({"x": [1.0, 2.0]}))
    big = pl.DataFrame({"x": np.random.default_rng(0).random(200_000)})
    with pytest.raises(UserError) as caught:
        write_parquet(path, big)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"disk full: cannot write to {small_disk} (")
    assert "free of 256.0 KiB" in message and "pass --out on a disk with room" in message
    assert pl.read_parquet(path)["x"].to_list() == [1.0, 2.0]
    assert sorted(p.name for p in small_disk.iterdir()) == ["metrics.parquet"]
    with pytest.raises(UserError, match="^disk full"):
        write_json(small_disk / "summary.json", {"text": "x" * 400_000})
    assert not (small_disk / "summary.json").exists()


def test_a_report_upload_that_finds_no_space_is_one_line(tmp_path: Path, small_disk: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = MlflowTracker(uri, artifact_root=small_disk)
    # A trial pending: the sweep gets the parent run the report is attached to.
    tracker.start_sweep(SPEC, "unknown", pending=1, skipped=0)
    tracker.end_sweep("FINISHED")
    page = tmp_path / "report.html"
    page.write_bytes(np.random.default_rng(0).bytes(400_000))
    with pytest.raises(UserError) as caught:
        log_report_files(uri, SPEC.name, {"report": [page]}, "headline")
    assert "\n" not in str(caught.value) and "did not take a copy" in str(caught.value)
    # MLflow copies in place; the partial copy is gone.
    assert not [p for p in small_disk.rglob("*") if p.is_file() and p.stat().st_size < 400_000]


# ------------------------------------------------------------------ a corrupt or foreign tracking store


def real_store(path: Path) -> None:
    """A real MLflow SQLite store: one experiment, 20 runs of 20 steps."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.create_experiment("probe")
    for index in range(20):
        run = client.create_run(experiment, run_name=f"run {index}")
        for step in range(20):
            client.log_metric(run.info.run_id, "loss", 1 / (step + 1), step=step)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "mlruns.db"
    real_store(path)
    return path


def truncated(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def text_file(source: Path, target: Path) -> None:
    target.write_text("experiments: none\n")


def foreign(source: Path, target: Path) -> None:
    with sqlite3.connect(target) as db:
        db.execute("create table photos (name text)")


def garbled_page(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    data[8192:12288] = b"\x55" * 4096
    target.write_bytes(bytes(data))


STORES = [
    ("truncated", truncated, "is truncated"),
    ("text file", text_file, "is not an SQLite database"),
    ("foreign SQLite", foreign, "is another program's SQLite database"),
    ("garbled page", garbled_page, "is damaged"),
]


@pytest.mark.parametrize("case, make, reason", STORES, ids=[s[0] for s in STORES])
def test_a_bad_store_is_one_line_naming_the_file_and_the_fixes(
    store: Path, tmp_path: Path, case: str, make: Callable[[Path, Path], None], reason: str
) -> None:
    bad = tmp_path / "mlruns.db"
    make(store, bad)
    with pytest.raises(UserError) as caught:
        MlflowTracker(f"sqlite:///{bad}", artifact_root=tmp_path / "artifacts")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"MLflow store {bad} {reason}")
    for fix in (f"mv {bad} {bad}.bad", "--tracking-uri", "--no-tracking"):
        assert fix in message


def test_a_sound_store_and_a_new_one_pass(store: Path, tmp_path: Path) -> None:
    MlflowTracker(f"sqlite:///{store}", artifact_root=tmp_path / "a")
    (tmp_path / "empty.db").write_bytes(b"")
    MlflowTracker(f"sqlite:///{tmp_path / 'empty.db'}", artifact_root=tmp_path / "a")


# ------------------------------------------------------------------ the documentation


DOCUMENTED = [
    ("disk full", "disk full: cannot write to"),
    ("corrupt or foreign MLflow store", "move it aside"),
    ("damaged trial record", "damaged/"),
]


@pytest.mark.parametrize("case, needle", DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_bad_input_documents_the_case(case: str, needle: str) -> None:
    table = (REPO / "docs" / "bad-input.md").read_text()
    row = next((line for line in table.splitlines() if line.startswith(f"| {case} |")), None)
    assert row is not None, f"docs/bad-input.md has no row for {case!r}"
    assert needle in row

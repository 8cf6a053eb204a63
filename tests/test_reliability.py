"""Real faults: a killed driver, Ctrl-C, dying workers, damaged state, two sweeps at once, a full disk,
a corrupt MLflow store, wrong-typed and garbled trial records.

What does not depend on the backend runs on the serial one: a driver killed for real, two drivers at
once and the sweep commands as their own processes, the rest in this process. Real Ray is kept for
what only Ray shows: a worker process that dies, and a Ctrl-C that must stop Ray's workers too.
Each process runs as its own process group; tests kill only what they started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import sweep_driver
from faults import env as fault_env
from fixtures_sweep import FinishedSweep, copy_sweep, sweep
from mlflow.tracking import MlflowClient
from test_records import real_store, tmpfs, truncated

from finalbn.analysis.report import write_report
from finalbn.sweep.cli import run_script
from finalbn.tracking import TRIAL_TAG

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("sweep_driver.py")
TRIALS = sweep_driver.TRIALS
EPOCHS = sweep_driver.EPOCHS


def start(
    name: str,
    root: Path,
    retries: int = 2,
    backend: str = "serial",
    env: dict[str, str] | None = None,
    minority: str = "3,6",
) -> subprocess.Popen[str]:
    """tests/sweep_driver.py as its own process (group), on ``backend``, its grid's minority counts ``minority``."""
    return subprocess.Popen(
        [sys.executable, str(DRIVER), name, str(root / "results"), uri(root), str(retries), backend, minority],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def here(name: str, root: Path, capsys: pytest.CaptureFixture[str], retries: int = 2, minority: str = "3,6") -> str:
    """tests/sweep_driver.py's sweep on the serial backend in this process; what it printed."""
    capsys.readouterr()
    sweep_driver.main(name, str(root / "results"), uri(root), str(retries), "serial", minority)
    out, err = capsys.readouterr()
    return out + err


def uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns.db'}"


def finish(process: subprocess.Popen[str], timeout: int = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def wait_for_finished_trials(root: Path, name: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list((root / "results" / name / "trials").glob("*/summary.json"))) < count:
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.2)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill what is left of the process group we started (Ray leaves two agents behind a SIGKILLed driver)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=60)


def check_store(root: Path, name: str, trials: int = TRIALS) -> None:
    """Exactly the grid's ``trials``, each finished once, nothing RUNNING, no duplicate rows."""
    client = MlflowClient(uri(root))
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    trial_ids = [r.data.tags[TRIAL_TAG] for r in children]
    assert len(trial_ids) == len(set(trial_ids)) == trials
    assert {r.info.status for r in children} == {"FINISHED"}
    folder = root / "results" / name
    assert len(list(folder.glob("trials/*/summary.json"))) == trials
    epochs = pl.read_parquet(folder / "epochs.parquet")
    assert epochs.height == trials * EPOCHS
    assert epochs.select("trial_id", "epoch").is_duplicated().sum() == 0
    assert set(epochs["trial_id"]) == set(trial_ids)


def test_killed_driver_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Four trials: killed after two, two are left, one of them in flight.
    process = start("killed", tmp_path, minority="6")
    wait_for_finished_trials(tmp_path, "killed", 2)
    os.kill(process.pid, signal.SIGKILL)
    reap(process)
    output = here("killed", tmp_path, capsys, minority="6")
    assert "finished earlier (skipped)" in output
    check_store(tmp_path, "killed", trials=4)
    client = MlflowClient(uri(tmp_path))
    parents = [
        r
        for r in client.search_runs([client.get_experiment_by_name("killed").experiment_id])
        if TRIAL_TAG not in r.data.tags
    ]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]


def test_ctrl_c_stops_quickly_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C to a driver on Ray: it stops Ray's workers too, exits 130, leaves no run RUNNING; the
    rerun (serial here: resuming does not depend on the backend) trains the rest."""
    process = start("interrupted", tmp_path, backend="ray")
    wait_for_finished_trials(tmp_path, "interrupted", 2)
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    stopped_after = time.monotonic() - sent
    reap(process)
    assert process.returncode == 130, output
    assert stopped_after < 30, f"took {stopped_after:.0f} s to stop"
    assert "rerun the same command to resume" in output
    client = MlflowClient(uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert "finished earlier (skipped)" in here("interrupted", tmp_path, capsys)
    check_store(tmp_path, "interrupted")


def test_dying_workers_are_retried_until_every_trial_finishes(tmp_path: Path) -> None:
    # One of the four trials of this grid kills its Ray worker process on the first attempt: each death costs
    # Ray a new worker process (the local backend's own dying workers: tests/test_pool.py).
    finish(start("crashing", tmp_path, backend="ray", env=fault_env("exit:p=0.5:1"), minority="3"))
    check_store(tmp_path, "crashing", trials=4)
    failures = [json.loads(p.read_text()) for p in (tmp_path / "results" / "crashing").glob("trials/*/failure.json")]
    assert 1 <= len(failures) < 4
    assert all(f["attempts"] == 1 for f in failures)
    # The driver wrote down Ray's account of the worker that vanished.
    assert all("died" in f["traceback"].lower() for f in failures), failures[0]["traceback"]


def test_without_retries_failures_are_recorded_and_rerun_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Four trials, three of them hit by the fault.
    with monkeypatch.context() as faulty:
        for key, value in fault_env("raise:p=0.3").items():
            faulty.setenv(key, value)
        here("no-retry", tmp_path, capsys, retries=0, minority="6")
    folder = tmp_path / "results" / "no-retry"
    failed = {p.parent.name for p in folder.glob("trials/*/failure.json")}
    assert 1 <= len(failed) < 4
    assert not any((folder / "trials" / t / "summary.json").exists() for t in failed)
    client = MlflowClient(uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("no-retry").experiment_id])
    failed_runs = [r for r in runs if r.info.status == "FAILED" and TRIAL_TAG in r.data.tags]
    assert {r.data.tags[TRIAL_TAG] for r in failed_runs} == failed
    assert all("fault injected" in r.data.tags["finalbn.error"] for r in failed_runs)
    for trial in failed:
        assert "fault injected" in json.loads((folder / "trials" / trial / "failure.json").read_text())["traceback"]

    output = here("no-retry", tmp_path, capsys, retries=0, minority="6")
    n = len(failed)
    assert f"{4 - n} finished earlier (skipped), {n} failed earlier (retried), {n} to run" in output
    check_store(tmp_path, "no-retry", trials=4)


def test_damaged_state_is_set_aside_and_rebuilt(
    finished_sweep: FinishedSweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's finished sweep (tests/fixtures_sweep.py: sweep_driver's grid, serial), copied and damaged."""
    copy = copy_sweep(finished_sweep, tmp_path)
    folder = copy.folder
    first, second = sorted(folder.glob("trials/*/summary.json"))[:2]
    first.write_text('{"trial_id": "trunc')
    (second.parent / "metrics.parquet").write_bytes(b"not parquet at all")
    (folder / "epochs.parquet").write_bytes(b"garbage")
    capsys.readouterr()
    sweep(copy.spec, copy.root)
    output = "".join(capsys.readouterr())
    assert output.count("result folder unreadable") == 2
    assert f"{TRIALS - 2} finished earlier (skipped), 2 to run" in output
    assert len(list(folder.glob("damaged/*/config.json"))) == 2
    check_store(copy.root, copy.spec.name)


def test_two_sweeps_share_one_store_and_results_folder(tmp_path: Path) -> None:
    # Four trials each: the two drivers make and write one store and one folder at once from their start.
    first, second = start("first", tmp_path, minority="6"), start("second", tmp_path, minority="6")
    outputs = [finish(first), finish(second)]
    assert not any("database is locked" in output for output in outputs)
    check_store(tmp_path, "first", trials=4)
    check_store(tmp_path, "second", trials=4)


# ------------------------------------------------------------------ a full disk, a bad store, bad records

FLAGS = ["--preset", "smoke", "--backend", "serial"]
SMOKE = [sys.executable, str(Path(__file__).resolve().parents[1] / "sweeps" / "imbalance_ratio.py"), *FLAGS]
SMOKE_TRIALS = 8


@pytest.fixture
def smoke(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Path, Path], subprocess.CompletedProcess[str]]:
    """The smoke sweep command (serial backend) run in this process: ``smoke(cwd, out)``, its MLflow store
    the default one in ``cwd``; its exit status and what it printed, as a finished process gives them."""

    def run(cwd: Path, out: Path) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        argv = [*FLAGS, "--out", str(out)]
        status = run_script("imbalance_ratio", None, argv)
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(argv, status, printed.out, printed.err)

    return run


def unreadable(folder: Path) -> list[str]:
    """Files under ``folder`` that are empty, left temporary, or do not parse: what a torn write leaves."""
    found = []
    # filelock's lock files (the sweep's claims lock) are empty by design: not records.
    for path in (p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        try:
            if path.stat().st_size == 0 or path.name.endswith(".tmp"):
                raise ValueError("empty or temporary")
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".parquet":
                pq.read_table(path)
        except (ValueError, OSError) as error:
            found.append(f"{path}: {error}")
    return found


def statuses(cwd: Path) -> dict[str, list[str]]:
    """MLflow run statuses in the default store of ``cwd``: trial runs and parents."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {
        "trials": [r.info.status for r in runs if TRIAL_TAG in r.data.tags],
        "parents": [r.info.status for r in runs if TRIAL_TAG not in r.data.tags],
    }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "512k") as mount:
        yield mount


def test_a_full_disk_stops_the_sweep_in_one_line_and_it_resumes(
    tmp_path: Path, small_disk: Path, smoke: Callable[[Path, Path], subprocess.CompletedProcess[str]]
) -> None:
    """512 KiB of --out holds a few trials: the sweep stops with the one line, exit 2, no torn file; with room
    the same command trains only what did not finish, once each."""
    first = smoke(tmp_path, small_disk)
    assert first.returncode == 2, first.stdout + first.stderr
    [line] = first.stderr.strip().splitlines()
    assert line.startswith(f"finalbn: error: disk full: cannot write to {small_disk}/")
    assert "free of 512.0 KiB" in line and "pass --out on a disk with room" in line
    assert unreadable(small_disk) == []
    folder = small_disk / "imbalance_ratio-smoke"
    finished = len(list(folder.glob("trials/*/summary.json")))
    assert 1 <= finished < SMOKE_TRIALS
    after_first = statuses(tmp_path)
    assert after_first["trials"].count("FINISHED") == finished

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    second = smoke(tmp_path, small_disk)
    assert second.returncode == 0, second.stdout + second.stderr
    todo = SMOKE_TRIALS - finished
    assert f"{finished} finished earlier (skipped)" in second.stdout and f"{todo} trained" in second.stdout
    assert unreadable(small_disk) == []
    epochs = pl.read_parquet(folder / "epochs.parquet")
    assert epochs.height == SMOKE_TRIALS * 2 and epochs.select("trial_id", "epoch").is_duplicated().sum() == 0
    after = statuses(tmp_path)
    assert after["trials"] == ["FINISHED"] * SMOKE_TRIALS and "RUNNING" not in after["parents"]
    print(f"disk full: {finished} finished before it, {todo} after; runs RUNNING after the stop: {after_first}")


def test_a_truncated_store_stops_the_sweep_command_before_any_trial(
    tmp_path: Path, smoke: Callable[[Path, Path], subprocess.CompletedProcess[str]]
) -> None:
    real_store(tmp_path / "whole.db")
    truncated(tmp_path / "whole.db", tmp_path / "mlruns.db")
    done = smoke(tmp_path, tmp_path / "results")
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"MLflow store {tmp_path / 'mlruns.db'} is truncated" in line and "--no-tracking" in line
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("results/*/trials/*"))


def test_wrong_typed_and_garbled_records_are_retrained_once(finished_sweep: FinishedSweep, tmp_path: Path) -> None:
    """The issue's four: f1 as text, f1 null, no seconds, garbled predictions. Each trial is set aside with its
    reason and trained again, the other trials are kept, the tables hold numbers, the report builds, MLflow
    keeps one run per trial."""
    copy = copy_sweep(finished_sweep, tmp_path)
    every = sorted(copy.folder.glob("trials/*"))
    folders = every[:4]
    damages = [
        ("summary.json", lambda r: r["test"].update(f1_minority="0.9")),
        ("summary.json", lambda r: r["test"].update(f1_minority=None)),
        ("summary.json", lambda r: r.pop("seconds")),
    ]
    for folder, (name, change) in zip(folders, damages, strict=False):
        record = json.loads((folder / name).read_text())
        change(record)
        (folder / name).write_text(json.dumps(record))
    (folders[3] / "predictions.parquet").write_bytes(b"garbled" * 100)

    second, client = sweep(copy.spec, copy.root)
    assert sorted(second.finished) == [f.name for f in folders] and second.skipped == len(every) - 4
    reasons = sorted(p.read_text() for p in (copy.folder / "damaged").glob("*.reason.txt"))
    assert len(reasons) == 4 and sum("valid number" in r for r in reasons) == 2
    assert any("seconds: Field required" in r for r in reasons) and any("Parquet" in r for r in reasons)
    trials = pl.read_parquet(second.folder / "trials.parquet")
    assert trials.height == len(every) and trials.schema["f1_minority"] == pl.Float64
    assert trials["seconds"].is_not_null().all()
    assert write_report(second.folder, gradcam=False).html.exists()
    runs = client.search_runs([client.get_experiment_by_name(copy.spec.name).experiment_id])
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    assert sorted(r.data.tags[TRIAL_TAG] for r in children) == [f.name for f in every]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_two_drivers_started_together_train_each_trial_once(tmp_path: Path) -> None:
    """Two smoke-sweep commands at the same moment on one --out and one store share the trials through their
    claims: each trial trains once, both print the full table, each parent run keeps its own children."""
    from mlflow.entities import ViewType
    from test_claims import TRAINING_LOG

    log = tmp_path / "trainings.txt"
    hook = {"FINALBN_TRIAL_HOOK": "test_claims:count_training", TRAINING_LOG: str(log)}
    env = {**os.environ, "PYTHONPATH": fault_env("")["PYTHONPATH"], **hook}
    command = [*SMOKE, "--out", str(tmp_path / "results")]
    drivers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
        for _ in range(2)
    ]
    outputs = [finish(driver, timeout=900) for driver in drivers]
    trained = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(trained) == len(set(trained)) == SMOKE_TRIALS
    assert sum(int(re.search(r"(\d+) trained", output)[1]) for output in outputs) == SMOKE_TRIALS, outputs
    assert all("test F1 (final model) by scientific axis" in output for output in outputs)
    folder = tmp_path / "results" / "imbalance_ratio-smoke"
    epochs = pl.read_parquet(folder / "epochs.parquet")
    assert epochs.height == SMOKE_TRIALS * 2 and epochs.select("trial_id", "epoch").is_duplicated().sum() == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL)
    assert {r.info.lifecycle_stage for r in runs} == {"active"} and {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.info.run_id for r in runs if TRIAL_TAG not in r.data.tags}
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    assert sorted(r.data.tags[TRIAL_TAG] for r in children) == sorted(trained)
    by_parent = {parent: sum(r.data.tags["mlflow.parentRunId"] == parent for r in children) for parent in parents}
    assert len(by_parent) == 2 and all(by_parent.values()), by_parent
    assert not list(folder.glob("claims/*.json"))
    print(f"two drivers: trials per parent run {sorted(by_parent.values())}")

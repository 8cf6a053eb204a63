"""Real faults: a killed driver, Ctrl-C, dying workers, damaged state, two sweeps at once.

Each sweep runs as its own process group; tests kill only what they started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from faults import env as fault_env
from mlflow.tracking import MlflowClient

from finalbn.tracking import TRIAL_TAG

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("sweep_driver.py")
TRIALS = 12
EPOCHS = 3


def start(name: str, root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), name, str(root / "results"), uri(root), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


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
        time.sleep(0.5)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill what is left of the process group we started (Ray leaves two agents behind a SIGKILLed driver)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=60)


def check_store(root: Path, name: str) -> None:
    """Exactly the grid's trials, each finished once, nothing RUNNING, no duplicate rows."""
    client = MlflowClient(uri(root))
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    trial_ids = [r.data.tags[TRIAL_TAG] for r in children]
    assert len(trial_ids) == len(set(trial_ids)) == TRIALS
    assert {r.info.status for r in children} == {"FINISHED"}
    folder = root / "results" / name
    assert len(list(folder.glob("trials/*/summary.json"))) == TRIALS
    epochs = pl.read_parquet(folder / "epochs.parquet")
    assert epochs.height == TRIALS * EPOCHS
    assert epochs.select("trial_id", "epoch").is_duplicated().sum() == 0
    assert set(epochs["trial_id"]) == set(trial_ids)


def test_killed_driver_loses_nothing(tmp_path: Path) -> None:
    process = start("killed", tmp_path)
    wait_for_finished_trials(tmp_path, "killed", 3)
    os.kill(process.pid, signal.SIGKILL)
    reap(process)
    output = finish(start("killed", tmp_path))
    assert "finished earlier (skipped)" in output
    check_store(tmp_path, "killed")
    client = MlflowClient(uri(tmp_path))
    parents = [
        r
        for r in client.search_runs([client.get_experiment_by_name("killed").experiment_id])
        if TRIAL_TAG not in r.data.tags
    ]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]


def test_ctrl_c_stops_quickly_and_resumes(tmp_path: Path) -> None:
    process = start("interrupted", tmp_path)
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
    finish(start("interrupted", tmp_path))
    check_store(tmp_path, "interrupted")


def test_dying_workers_are_retried_until_every_trial_finishes(tmp_path: Path) -> None:
    # Half the trials kill their worker process on the first attempt.
    finish(start("crashing", tmp_path, env=fault_env("exit:p=0.5:1")))
    check_store(tmp_path, "crashing")
    failures = [json.loads(p.read_text()) for p in (tmp_path / "results" / "crashing").glob("trials/*/failure.json")]
    assert 1 <= len(failures) < TRIALS
    assert all(f["attempts"] == 1 for f in failures)
    # The driver wrote down Ray's account of the worker that vanished.
    assert all("died" in f["traceback"].lower() for f in failures), failures[0]["traceback"]


def test_without_retries_failures_are_recorded_and_rerun_alone(tmp_path: Path) -> None:
    finish(start("no-retry", tmp_path, "0", env=fault_env("raise:p=0.3")))
    folder = tmp_path / "results" / "no-retry"
    failed = {p.parent.name for p in folder.glob("trials/*/failure.json")}
    assert 1 <= len(failed) < TRIALS
    assert not any((folder / "trials" / t / "summary.json").exists() for t in failed)
    client = MlflowClient(uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("no-retry").experiment_id])
    failed_runs = [r for r in runs if r.info.status == "FAILED" and TRIAL_TAG in r.data.tags]
    assert {r.data.tags[TRIAL_TAG] for r in failed_runs} == failed
    assert all("fault injected" in r.data.tags["finalbn.error"] for r in failed_runs)
    for trial in failed:
        assert "fault injected" in json.loads((folder / "trials" / trial / "failure.json").read_text())["traceback"]

    output = finish(start("no-retry", tmp_path, "0"))
    assert f"{TRIALS - len(failed)} finished earlier (skipped), {len(failed)} to run" in output
    check_store(tmp_path, "no-retry")


def test_damaged_state_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    finish(start("damaged", tmp_path))
    folder = tmp_path / "results" / "damaged"
    first, second = sorted(folder.glob("trials/*/summary.json"))[:2]
    first.write_text('{"trial_id": "trunc')
    (second.parent / "metrics.parquet").write_bytes(b"not parquet at all")
    (folder / "epochs.parquet").write_bytes(b"garbage")
    output = finish(start("damaged", tmp_path))
    assert output.count("result folder unreadable") == 2
    assert f"{TRIALS - 2} finished earlier (skipped), 2 to run" in output
    assert len(list(folder.glob("damaged/*/config.json"))) == 2
    check_store(tmp_path, "damaged")


def test_two_sweeps_share_one_store_and_results_folder(tmp_path: Path) -> None:
    first, second = start("first", tmp_path), start("second", tmp_path)
    outputs = [finish(first), finish(second)]
    assert not any("database is locked" in output for output in outputs)
    check_store(tmp_path, "first")
    check_store(tmp_path, "second")

"""Faults after start-up, for real, on the serial smoke sweep with its real MLflow store: the results folder
made read-only, mlruns.db deleted, a trial out of memory, a too-small ``ulimit -v``. Each stops the sweep
with exit 2 and one line naming the fix (finalbn.records.FAULTS), leaves no MLflow run RUNNING, and the
same command resumes once the fault is gone. A fault strikes the second trial (``seed=1``), through the
trial hook, after the first has finished.

The sweep command runs in this process (``run_script``, as the script calls it), but for the deleted
store: there the faulted run is its own process, as people run it, since MLflow keeps one engine per store
in a process and a store deleted under a live process is the case to show."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from faults import env, tmpfs
from mlflow.tracking import MlflowClient

from finalbn.records import fault_in, fault_of
from finalbn.sweep.cli import run_script
from finalbn.tracking.layout import TRIAL_TAG

FLAGS = ["--preset", "smoke", "--backend", "serial"]
SMOKE = [sys.executable, str(Path(__file__).resolve().parents[1] / "sweeps" / "imbalance_ratio.py"), *FLAGS]
TRIALS = 8
SECOND = "seed=1"
Smoke = Callable[..., subprocess.CompletedProcess[str]]


def smoke_process(cwd: Path, out: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The smoke sweep as its own process, its MLflow store the default one in ``cwd``."""
    return subprocess.run(
        [*SMOKE, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=500,
        env=os.environ | (extra_env or {}),
    )


@pytest.fixture
def smoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Smoke:
    """``smoke(cwd, out, extra_env)``: the smoke sweep command in this process, with ``extra_env`` set while it
    runs; its exit status and what it printed, as a finished process gives them."""

    def run(cwd: Path, out: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [*FLAGS, "--out", str(out)]
        with monkeypatch.context() as patch:
            patch.chdir(cwd)
            for key, value in (extra_env or {}).items():
                patch.setenv(key, value)
            capsys.readouterr()
            status = run_script("imbalance_ratio", None, argv)
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(argv, status, printed.out, printed.err)

    return run


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("finalbn: error: ") and "Traceback" not in done.stderr
    return line.removeprefix("finalbn: error: ")


def statuses(cwd: Path) -> list[str]:
    """Statuses of every run, parents and trials, in the default store of ``cwd``."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns.db'}")
    return [r.info.status for r in client.search_runs([e.experiment_id for e in client.search_experiments()])]


def resumes(smoke: Smoke, cwd: Path, out: Path, finished_before: int) -> None:
    """The same command, fault gone: trains the rest, once each, and every trial's run FINISHED."""
    done = smoke(cwd, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{finished_before} finished earlier (skipped)" in done.stdout
    assert f"{TRIALS - finished_before} trained" in done.stdout
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trials = [r for r in runs if TRIAL_TAG in r.data.tags]
    assert sorted(r.info.status for r in trials) == ["FINISHED"] * TRIALS
    assert len({r.data.tags[TRIAL_TAG] for r in trials}) == TRIALS and "RUNNING" not in statuses(cwd)


def finished(out: Path) -> int:
    return len(list(out.glob("*/trials/*/summary.json")))


def test_the_results_folder_made_read_only(tmp_path: Path, smoke: Smoke) -> None:
    """A read-only remount: chmod does not stop root, EROFS does."""
    with tmpfs(tmp_path / "out", "64m") as out:
        line = one_line(smoke(tmp_path, out, env(f"readonly:{SECOND}:1", out)))
        assert line.startswith("not writable: ") and "Read-only file system" in line and str(out) in line
        assert "chmod u+w" in line and "--out" in line and "rerun the same command to resume" in line
        assert "RUNNING" not in statuses(tmp_path)
        before = finished(out)
        assert before == 1
        subprocess.run(["mount", "-o", "remount,rw", str(out)], check=True)
        resumes(smoke, tmp_path, out, before)


def test_the_mlflow_store_deleted_while_the_sweep_runs(tmp_path: Path, smoke: Smoke) -> None:
    out = tmp_path / "results"
    store = tmp_path / "mlruns.db"
    line = one_line(smoke_process(tmp_path, out, env(f"remove:{SECOND}:1", store)))
    assert line.startswith("MLflow store lost: ") and f"the MLflow store {store} was removed" in line
    assert "--no-tracking" in line
    assert not store.exists() or "RUNNING" not in statuses(tmp_path)
    before = finished(out)
    assert before == 1
    # A new store: the trial finished before the fault is logged again from its folder. The rerun runs in this
    # process, which never opened the removed store (statuses() opens a store that exists again), so it holds
    # no engine of it: the new store is made as a new process makes it.
    resumes(smoke, tmp_path, out, before)


def test_a_trial_out_of_memory(tmp_path: Path, smoke: Smoke) -> None:
    out = tmp_path / "results"
    line = one_line(smoke(tmp_path, out, env(f"memory:{SECOND}:1")))
    assert line.startswith("out of memory: a trial stopped on MemoryError") and "--max-concurrent" in line
    assert "RUNNING" not in statuses(tmp_path)
    # Not retried: one failed attempt on record, and the trial after it never began.
    assert finished(out) == 1 and len(list(out.glob("*/trials/*/failure.json"))) == 1
    resumes(smoke, tmp_path, out, 1)


def test_the_lines_of_the_faults_that_cannot_be_provoked_here() -> None:
    """Ray's OOM killer, CUDA, a C++ allocation, thread limits: their words as the tracebacks show them."""
    ray_oom = "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n"
    assert fault_in(ray_oom).startswith("out of memory: a trial stopped on ray.exceptions.OutOfMemoryError")
    assert fault_in("RuntimeError: std::bad_alloc\n").startswith("out of memory")
    mapped = "ImportError: /x/_biasedurn.so: failed to map segment from shared object\n"
    assert fault_in(mapped).startswith("out of memory") and "ulimit -v" in fault_in(mapped)
    threads = "OpenBLAS blas_thread_init: pthread_create failed for thread 3 of 4: Resource temporarily unavailable"
    assert fault_in(threads).startswith("cannot start a thread")
    assert fault_in("sqlite3.OperationalError: no such table: experiments", store="S").endswith(
        "S was removed or made read-only while the sweep ran (a rerun makes a new one; --no-tracking turns MLflow "
        "off), then rerun the same command to resume"
    )
    # A trial's own bug is none of them, and stays a failed trial.
    assert fault_in("Traceback\nValueError: shapes (3,) and (4,) not aligned\n") is None
    # The driver names the first cause: the write that failed, not the cleanup that failed after it.
    try:
        try:
            raise OSError(30, "Read-only file system", "/r/out/trials/x/config.json")
        finally:
            raise OSError(30, "Read-only file system", "/r/out/claims/.lock")
    except OSError as error:
        fault = fault_of(error)
    assert fault is not None and "config.json" in str(fault) and str(fault).startswith("not writable: the sweep")

"""``--backend local``: warm worker processes that train trial after trial, replaced when one dies.

Real processes, real trials (embedded MNIST, one epoch), a real kill (the worker exits mid-trial through
the fault hook), and the driver's records as the serial backend writes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from multiprocessing import Pipe
from pathlib import Path

import faults
import pytest

from finalbn.console import interrupts
from finalbn.errors import UserError
from finalbn.launch.base import Recording
from finalbn.launch.pool import PoolBackend, _Pool, _Worker
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import NullTracker
from finalbn.train.presets import EMBEDDED_MNIST

SPEC = SweepSpec(
    name="pool",
    base=EMBEDDED_MNIST.replace(train={"epochs": 1}),
    axes=(Axis("model.final_norm", ("bn", "none")), Axis("train.seed", (0, 1, 2), role="nuisance")),
)


def workers_of(folder: Path) -> dict[str, int]:
    """Trial id -> the pid of the process that trained it (summary.json's worker)."""
    return {
        path.parent.name: json.loads(path.read_text())["worker"]["pid"] for path in folder.glob("trials/*/summary.json")
    }


def stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name: its state, its parent's pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone too: it waits only for its parent to read its exit code.
    return stat(pid)[0] != "Z"


def test_two_warm_workers_train_every_trial_and_leave_nothing_running(tmp_path: Path) -> None:
    report = run_sweep(SPEC, SweepOptions(out=tmp_path, max_concurrent=2), PoolBackend("local"), NullTracker())
    assert sorted(report.finished) == sorted(workers_of(report.folder)) and len(report.finished) == SPEC.size()
    pids = set(workers_of(report.folder).values())
    # Six trials, two workers: each worker trained several, none of them in the driver.
    assert len(pids) == 2 and os.getpid() not in pids
    assert not [pid for pid in pids if alive(pid)]


def descendants(root: int) -> dict[int, int]:
    """The live processes under ``root`` (its children, theirs, and so on), each with its parent's pid."""
    parents = {}
    for folder in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # it exited meanwhile
            state, parent = stat(int(folder.name))[:2]
            if state != "Z":
                parents[int(folder.name)] = int(parent)
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found.keys()
        found |= {pid: parents[pid] for pid in frontier}
    return found


def pool_processes() -> dict[int, int]:
    """This process' live pool processes (``python -m finalbn.launch.pool``: the zygote and the workers it
    forked), each with its parent's pid."""
    found = {}
    for pid, parent in descendants(os.getpid()).items():
        with contextlib.suppress(OSError):  # it exited meanwhile
            if b"finalbn.launch.pool" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found[pid] = parent
    return found


class WatchingTracker(NullTracker):
    """Notes the pool processes alive while the driver sets up MLflow and as each trial is recorded;
    ``fail``: then refuses, as a lost store."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.at_set_up: dict[int, int] = {}
        self.while_training: dict[int, int] = {}

    def start_sweep(self, *args: object, **kwargs: object) -> None:
        self.at_set_up = pool_processes()
        if self.fail:
            raise UserError("the MLflow store went away")

    def finish_trial(self, job: object, failed: bool) -> None:
        self.while_training |= pool_processes()


def test_the_workers_warm_up_while_the_driver_sets_up_and_a_rerun_with_nothing_to_train_forks_none(
    tmp_path: Path,
) -> None:
    options = SweepOptions(out=tmp_path, max_concurrent=2)
    tracker = WatchingTracker()
    report = run_sweep(SPEC, options, PoolBackend("local"), tracker)
    assert len(report.finished) == SPEC.size()
    # One zygote imports torch and finalbn during the set-up; both workers are forked from it.
    [zygote] = tracker.at_set_up
    forked = {pid for pid, parent in tracker.while_training.items() if parent == zygote}
    assert set(workers_of(report.folder).values()) == forked and len(forked) == 2
    assert not pool_processes()
    again = WatchingTracker()
    report = run_sweep(SPEC, options, PoolBackend("local"), again)
    # The zygote warms up before the plan says there is nothing to train; it forks nobody and is gone.
    assert report.skipped == SPEC.size() and len(again.at_set_up) == 1 and again.while_training == {}
    assert not pool_processes()


def test_workers_started_for_a_sweep_that_fails_to_set_up_are_stopped(tmp_path: Path) -> None:
    tracker = WatchingTracker(fail=True)
    with pytest.raises(UserError, match="store went away"):
        run_sweep(SPEC, SweepOptions(out=tmp_path, max_concurrent=2), PoolBackend("local"), tracker)
    assert len(tracker.at_set_up) == 1
    assert not [pid for pid in tracker.at_set_up if alive(pid)] and not pool_processes()


def test_a_worker_killed_mid_trial_is_replaced_and_its_trial_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt of the seed-1 trials exits its worker process (os._exit) as it starts training, while
    # that worker holds the next trial, sent ahead: it goes back in line without spending an attempt.
    for name, value in faults.env("exit:seed=1:1").items():
        monkeypatch.setenv(name, value)
    report = run_sweep(SPEC, SweepOptions(out=tmp_path, max_concurrent=2), PoolBackend("local"), NullTracker())
    assert len(report.finished) == SPEC.size() and not report.failed
    killed = [path for path in report.folder.glob("trials/*/failure.json")]
    assert len(killed) == 2, killed
    for path in killed:
        record = json.loads(path.read_text())
        assert record["attempts"] == 1 and "died (exit code 3" in record["traceback"]
    # The two killed workers were replaced: more than two processes trained the sweep.
    assert len(set(workers_of(report.folder).values())) > 2


def test_each_worker_is_sent_its_next_trial_ahead_while_more_remain_than_workers(tmp_path: Path) -> None:
    """A worker starts its next trial at once, not after the driver has recorded another one; the last few go to
    whichever worker is free first."""
    pool = _Pool("local", SweepOptions(out=tmp_path), size=2)
    ends = [Pipe() for _ in range(2)]
    pool.workers = [_Worker(driver_end, slot, ticket=slot) for slot, (driver_end, _) in enumerate(ends)]

    def received() -> list[list[str]]:
        return [[worker_end.recv() for _ in iter(worker_end.poll, False)] for _, worker_end in ends]

    pending = deque(f"trial-{i}" for i in range(6))
    pool._hand_out(pending)  # type: ignore[arg-type]
    assert received() == [["trial-0", "trial-2"], ["trial-1", "trial-3"]] and list(pending) == ["trial-4", "trial-5"]
    # Worker 0 finished trial-0: no more remain than workers, so nothing is sent ahead of its trial-2.
    pool.workers[0].jobs.popleft()
    pool._hand_out(pending)  # type: ignore[arg-type]
    assert received() == [[], []]
    # Worker 1 finished both of its trials: it gets one, and nothing ahead.
    pool.workers[1].jobs.clear()
    pool._hand_out(pending)  # type: ignore[arg-type]
    assert received() == [[], ["trial-4"]] and list(pending) == ["trial-5"]


def test_a_trial_that_kills_every_worker_it_meets_is_failed_after_its_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in faults.env("exit:seed=2").items():
        monkeypatch.setenv(name, value)
    options = SweepOptions(out=tmp_path, max_concurrent=2, retries=1)
    report = run_sweep(SPEC, options, PoolBackend("local"), NullTracker())
    assert len(report.failed) == 2 and len(report.finished) == SPEC.size() - 2
    for trial_id in report.failed:
        record = json.loads((report.folder / "trials" / trial_id / "failure.json").read_text())
        assert record["attempts"] == 2


class StoppedMidRecord:
    """MLflow's side of a trial that a SIGTERM reaches while its run is being closed."""

    def __init__(self) -> None:
        self.closed: list[object] = []

    def log_epoch(self, job: object, row: dict[str, float]) -> None:
        raise AssertionError("no epoch here")

    def discard_attempt(self, job: object) -> None:
        raise AssertionError("no retry here")

    def finish_trial(self, job: object, failed: bool) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        self.closed.append(job)


class Shown(NullTracker):
    def __init__(self) -> None:
        self.finished_trials: list[object] = []

    def finished(self, job: object) -> None:
        self.finished_trials.append(job)


def test_a_stop_while_a_trial_is_recorded_is_raised_when_the_record_is_whole() -> None:
    """Every driver-bound backend records trial events through ``Recording``: a SIGTERM that lands while MLflow
    closes a trial's run must not leave that run open (and SQLite locked for the driver's last writes)."""
    before = interrupts.install()
    records, shown, job = StoppedMidRecord(), Shown(), "trial 1"
    try:
        with pytest.raises(KeyboardInterrupt):
            Recording(records, shown).finished(job)  # type: ignore[arg-type]
        assert records.closed == [job] and shown.finished_trials == []
    finally:
        interrupts.restore(before)
        interrupts.reset()


def test_a_killed_driver_leaves_no_worker_behind(tmp_path: Path) -> None:
    """SIGKILL to the driver alone: the zygote finds it gone and ends its workers (each mid-trial, or waiting
    for a job) within its grace period, with nobody left to tell."""
    driver = Path(__file__).with_name("sweep_driver.py")
    results = tmp_path / "results"
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    command = [sys.executable, str(driver), "orphans", str(results), store, "2", "local"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(results.glob("orphans/trials/*/summary.json")):
            assert time.monotonic() < deadline and process.poll() is None, "the sweep finished no trial"
            time.sleep(0.2)
        pool = descendants(process.pid)
        # The zygote and the two workers it forked.
        assert len(pool) == 3, pool
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 15
        while [pid for pid in pool if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pool if alive(pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

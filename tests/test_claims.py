"""Per-trial claims (finalbn.sweep.claims): real files, real owner processes, real dead pids.

The last test is a driver that meets a trial claimed by another live process:
it trains the rest, waits on that one, and trains it when its owner dies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import serial

from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.claims import ClaimedElsewhere, Owner, acquire, hold, live_owner, trial_claim
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import plan
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import NullTracker
from finalbn.train.presets import EMBEDDED_MNIST

# The file count_training appends to.
TRAINING_LOG = "FINALBN_TRAINING_LOG"
# A process that takes the claim named on its command line and keeps it until killed.
HOLDER = (
    "import sys, time; from pathlib import Path; from finalbn.sweep.claims import acquire; "
    "acquire(Path(sys.argv[1]), heartbeat=0.2); print('held', flush=True); time.sleep(600)"
)


def count_training(job: TrialJob) -> None:
    """A trial hook (FINALBN_TRIAL_HOOK=test_claims:count_training): one line per attempt that trains."""
    with open(os.environ[TRAINING_LOG], "a") as log:
        log.write(f"{job.trial_id} {os.getpid()}\n")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A claim held by another live process."""
    path = tmp_path / "claims" / "trial.json"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        yield path, process
    finally:
        process.kill()
        process.wait()


def record(path: Path, host: str, pid: int, age: float = 0.0, slurm_task: str = "") -> None:
    """A claim file as another owner left it, its heartbeat ``age`` seconds old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": host, "pid": pid, "slurm_task": slurm_task, "started": time.time() - age, "run": ""}
    path.write_text(json.dumps(owner))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


def test_a_claim_names_its_owner_and_release_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "trial.json"
    claim = acquire(path, run="parent-run")
    owner = json.loads(path.read_text())
    assert (owner["pid"], owner["run"]) == (os.getpid(), "parent-run")
    assert live_owner(path) == claim.owner
    claim.release()
    assert not path.exists() and live_owner(path) is None


def test_a_live_owner_keeps_its_claim(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    path, process = holder
    with pytest.raises(ClaimedElsewhere) as refused:
        acquire(path)
    assert refused.value.owner is not None and refused.value.owner.pid == process.pid
    assert f"pid {process.pid}" in str(refused.value)


def test_a_killed_owners_claim_is_taken_over(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    path, process = holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert path.exists() and live_owner(path) is None
    with hold(path) as claim:
        assert json.loads(path.read_text())["pid"] == os.getpid() == claim.owner.pid
    assert not path.exists()


def test_an_owner_on_another_host_is_trusted_until_its_heartbeat_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "trial.json"
    record(path, "node-7.cluster", pid=1, age=5)
    with pytest.raises(ClaimedElsewhere):
        acquire(path, stale_after=60)
    record(path, "node-7.cluster", pid=1, age=120)
    acquire(path, stale_after=60).release()
    assert not path.exists()


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_a_heartbeats_age_is_read_on_the_file_systems_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    """A node whose clock is ten minutes off the file system's (which stamps every heartbeat) still
    trusts a fresh claim and takes over a stale one."""
    fresh, stale = tmp_path / "claims" / "fresh.json", tmp_path / "claims" / "stale.json"
    record(fresh, "node-7.cluster", pid=1, age=5)
    record(stale, "node-7.cluster", pid=1, age=120)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    assert live_owner(fresh, stale_after=60) is not None
    assert live_owner(stale, stale_after=60) is None


def test_a_requeued_slurm_task_takes_over_its_own_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    path = tmp_path / "claims" / "trial.json"
    record(path, "node-7.cluster", pid=1, slurm_task="4242_2")
    with pytest.raises(ClaimedElsewhere):
        acquire(path)
    record(path, "node-7.cluster", pid=1, slurm_task="4242_3")
    with hold(path) as claim:
        assert claim.owner.slurm_task == "4242_3"


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "trial.json"
    with hold(path, heartbeat=0.05):
        old = time.time() - 300
        os.utime(path, (old, old))
        deadline = time.monotonic() + 30
        while path.stat().st_mtime < old + 200:
            assert time.monotonic() < deadline, "the heartbeat never refreshed the claim"
            time.sleep(0.05)


def test_release_leaves_a_claim_taken_over_meanwhile(tmp_path: Path) -> None:
    """An owner that stalled past the stale time lost its claim: releasing must not remove the new owner's."""
    path = tmp_path / "claims" / "trial.json"
    claim = acquire(path)
    record(path, "node-7.cluster", pid=1)
    claim.release()
    assert Owner(**json.loads(path.read_text())).host == "node-7.cluster"


def test_a_driver_waits_on_a_claimed_trial_and_trains_it_when_its_owner_dies(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = SweepSpec(
        name="claimed",
        base=EMBEDDED_MNIST.replace(train={"epochs": 1}),
        axes=(Axis("model.final_norm", ("bn", "none")),),
    )
    options = SweepOptions(out=tmp_path / "results")
    taken = plan(spec, tmp_path / "results" / "claimed", "unknown")[0]
    owner = subprocess.Popen([sys.executable, "-c", HOLDER, str(trial_claim(taken.folder))], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"held\n"
        # The owner dies without finishing once the driver is waiting on it.
        seen: list[str] = []
        waiting = threading.Thread(target=_kill_when_waiting, args=(capfd, owner, seen), daemon=True)
        waiting.start()
        report = run_sweep(spec, options, serial(), NullTracker())
        waiting.join(timeout=60)
    finally:
        owner.kill()
        owner.wait()
    out = "".join(seen) + capfd.readouterr().out
    assert f"1 trials being trained by another driver ({socket.gethostname()} pid {owner.pid})" in out
    assert sorted(report.finished) == sorted(job.trial_id for job in plan(spec, report.folder, "unknown"))
    assert report.by_others == [] and report.failed == []
    assert not list((report.folder / "claims").glob("*.json"))


def _kill_when_waiting(capfd: pytest.CaptureFixture[str], owner: subprocess.Popen[bytes], seen: list[str]) -> None:
    deadline = time.monotonic() + 300
    while "being trained by another driver" not in "".join(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
        seen.append(capfd.readouterr().out)
    owner.kill()
    # Reaped: an unreaped child is a zombie, whose pid still answers, so its claim would only go stale in a minute.
    owner.wait()

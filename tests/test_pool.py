"""``--backend local``: warm worker processes that train trial after trial, replaced when one dies.

Real processes, real trials (embedded MNIST, one epoch), a real kill (the worker exits mid-trial through
the fault hook), and the driver's records as the serial backend writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faults
import pytest

from finalbn.launch.pool import PoolBackend
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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone too: it waits only for its parent to read its exit code.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_two_warm_workers_train_every_trial_and_leave_nothing_running(tmp_path: Path) -> None:
    report = run_sweep(SPEC, SweepOptions(out=tmp_path, max_concurrent=2), PoolBackend("local"), NullTracker())
    assert sorted(report.finished) == sorted(workers_of(report.folder)) and len(report.finished) == SPEC.size()
    pids = set(workers_of(report.folder).values())
    # Six trials, two workers: each worker trained several, none of them in the driver.
    assert len(pids) == 2 and os.getpid() not in pids
    assert not [pid for pid in pids if alive(pid)]


def test_a_worker_killed_mid_trial_is_replaced_and_its_trial_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt of the seed-1 trials exits its worker process (os._exit) as it starts training.
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


def test_a_stop_inside_a_deferred_block_is_raised_as_the_block_ends() -> None:
    """The pool tells the driver's records each event inside ``interrupts.deferred``: a SIGTERM that lands while
    MLflow creates a trial's run must not leave that run unknown to the tracker (and RUNNING forever)."""
    import signal

    from finalbn import interrupts

    before = interrupts.install()
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("the block's work")
        assert done == ["the block's work"]
    finally:
        interrupts.restore(before)
        interrupts.reset()

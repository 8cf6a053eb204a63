"""`finalbn status` and `finalbn cancel` on real sweep folders (serial backend, embedded MNIST)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from faults import env

from finalbn.launch.serial import SerialBackend
from finalbn.sweep import SweepOptions, SweepRecord, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.sweep.status import render, sweep_status
from finalbn.tracking import NullTracker
from finalbn.train.presets import EMBEDDED_MNIST

REPO = Path(__file__).resolve().parents[1]


def spec(counts: tuple[int, ...]) -> SweepSpec:
    return SweepSpec(
        name="half",
        base=EMBEDDED_MNIST.replace(train={"epochs": 1}),
        axes=(Axis("data.train_minority", counts), Axis("model.final_norm", ("bn", "none"))),
    )


def test_status_of_a_half_finished_sweep_counts_per_axis_value(tmp_path: Path, monkeypatch) -> None:
    for key, value in env("raise:final_norm=none").items():
        monkeypatch.setenv(key, value)
    run_sweep(spec((3, 6)), SweepOptions(out=tmp_path, retries=0), SerialBackend("serial"), NullTracker())
    # The grid grows by one ratio that has not run yet.
    record = SweepRecord.read(tmp_path / "half")
    grown = SweepRecord.of(
        spec((3, 6, 9)),
        {
            **{t: (p, "") for t, p in record.trials.items()},
            "t9bn": ({"data.train_minority": "9", "model.final_norm": "bn"}, ""),
            "t9none": ({"data.train_minority": "9", "model.final_norm": "none"}, ""),
        },
        record.code,
    )
    grown.carry_history(record)
    grown.write(tmp_path / "half")
    status = sweep_status(tmp_path / "half")
    assert status.counts() == {"done": 2, "failed": 2, "pending": 2}
    rows = status.by_axis()
    assert rows["model.final_norm"]["bn"] == {"done": 2, "pending": 1}
    assert rows["model.final_norm"]["none"] == {"failed": 2, "pending": 1}
    assert rows["data.train_minority"]["9"] == {"pending": 2}
    text = render(status)
    assert "half: 6 trials: 2 done, 0 running, 2 failed, 2 pending" in text and "last run: serial, FINISHED" in text
    # Each axis' table: every count ends where its state's heading ends.
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.strip().startswith("model.final_norm")))
    heading, bn, none = lines[header : header + 3]
    assert heading.split()[1:] == ["done", "running", "failed", "pending"]
    assert [bn.split()[0], none.split()[0]] == ["bn", "none"]
    ends = [heading.index(state) + len(state) for state in ("done", "running", "failed", "pending")]
    for row in (bn, none):
        assert [m.end() for m in re.finditer(r"\d+", row)] == ends, row
    done = subprocess.run(
        [sys.executable, "-m", "finalbn.cli", "status", "half", "--results-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "2 done, 0 running, 2 failed, 2 pending" in done.stdout, done.stderr


def test_cancel_stops_a_running_sweep_cleanly(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(REPO / "sweeps" / "imbalance_ratio.py"),
        "--preset",
        "smoke",
        "--backend",
        "serial",
        "--no-tracking",
        "--out",
        str(tmp_path),
    ]
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}, start_new_session=True
    )
    # 200 epochs a trial: a trial runs for seconds, so the sweep is still running when cancelled.
    folder = tmp_path / "imbalance_ratio-smoke"
    try:
        deadline = time.monotonic() + 180
        # Between two trials none is running: wait for a moment with one done and the next under way.
        while not (
            list(folder.glob("trials/*/summary.json"))
            and (running := sweep_status(folder)).counts()["done"] >= 1
            and running.counts()["running"] >= 1
        ):
            assert time.monotonic() < deadline and driver.poll() is None, "the sweep never finished a trial"
            time.sleep(0.2)
        assert running.driver is not None and running.driver.pid == driver.pid
        cancelled = subprocess.run(
            [sys.executable, "-m", "finalbn.cli", "cancel", str(folder)], capture_output=True, text=True, timeout=60
        )
        assert f"sent SIGTERM to the sweep's driver, pid {driver.pid}" in cancelled.stdout, cancelled.stderr
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output
    assert "interrupted:" in output
    last = json.loads((folder / "sweep.json").read_text())["invocations"][-1]
    assert last["status"] == "KILLED"
    assert sweep_status(folder).driver is None

"""The cost model: calibration, scaling to other trials, scheduling, GPU packing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finalbn.sweep.costs import Calibration, calibrate, epoch_work, makespan, trials_per_gpu
from finalbn.sweep.experiments import EXPERIMENTS, PRESETS, build_sweeps
from finalbn.train.presets import EMBEDDED_MNIST

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def test_makespan_fills_the_first_free_worker_in_order() -> None:
    assert makespan([3, 3, 3], 2) == 6
    assert makespan([5, 1, 1, 1, 1, 1], 2) == 5
    assert makespan([2] * 8, 8) == 2
    assert makespan([4, 4], 1) == 8


def test_gpu_packing_by_peak_memory() -> None:
    assert trials_per_gpu(30 * GIB, 80 * GIB) == 2
    assert trials_per_gpu(100 * GIB, 80 * GIB) == 1  # too big for one: still one, never zero
    assert trials_per_gpu(2 * GIB, 80 * GIB) == 8  # capped: more would contend for compute
    assert trials_per_gpu(0, 0) == 1  # CPU: nothing to pack


def test_a_calibration_scales_by_epochs_and_work() -> None:
    base = EMBEDDED_MNIST
    calibration = Calibration(base, setup_seconds=2.0, epoch_seconds=0.5, device="cpu")
    assert calibration.trial_seconds(base) == pytest.approx(2.0 + base.train.epochs * 0.5)
    longer = base.replace(train={"epochs": base.train.epochs * 2})
    assert calibration.trial_seconds(longer) == pytest.approx(2.0 + 2 * base.train.epochs * 0.5)
    bigger = base.replace(data={"train_majority": base.data.train_majority * 2})
    ratio = epoch_work(bigger) / epoch_work(base)
    assert ratio > 1
    assert calibration.trial_seconds(bigger) == pytest.approx(2.0 + base.train.epochs * 0.5 * ratio)


def test_calibrating_a_real_trial_on_cpu() -> None:
    calibration = calibrate(EMBEDDED_MNIST)
    assert calibration.device == "cpu" and calibration.peak_gpu_bytes == 0
    assert calibration.epoch_seconds > 0 and calibration.setup_seconds >= 0
    # Two epochs were run, so a 20-epoch trial is predicted well above the measured two.
    assert calibration.trial_seconds(EMBEDDED_MNIST) > 2 * calibration.epoch_seconds


def _sweep(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "sweeps" / "imbalance_ratio.py"), "--preset", "smoke", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_dry_run_calibrate_predicts_the_wall_time() -> None:
    done = _sweep("--dry-run", "--calibrate", "--max-concurrent", "2")
    assert done.returncode == 0, done.stderr
    assert "calibrated on this machine (cpu" in done.stdout
    assert "on 2 workers =" in done.stdout


def test_gpu_auto_packing_degrades_to_cpu_without_a_gpu() -> None:
    done = _sweep("--dry-run", "--gpus-per-trial", "auto")
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU here, trials run on CPU" in done.stdout


def test_cached_frozen_trials_cost_one_extraction_per_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from finalbn.sweep.costs import TRIAL_SETUP_SECONDS, assumed_sweep_seconds, assumed_trial_seconds

    frozen = EMBEDDED_MNIST.replace(model={"backbone": "resnet18", "unfreeze": "none", "weights": "none"})
    seeds = [frozen.replace(train={"seed": seed}) for seed in range(5)]
    head = TRIAL_SETUP_SECONDS["gpu"]
    # A head-only trial is not free: its set-up, head and scoring are its whole cost.
    assert assumed_trial_seconds(frozen, "gpu") == head > 0
    extraction = assumed_sweep_seconds(seeds[:1], "gpu") - head
    assert extraction > 0
    # Five seeds on one split: one extraction and five heads.
    assert assumed_sweep_seconds(seeds, "gpu") == pytest.approx(extraction + 5 * head)
    monkeypatch.setenv("FINALBN_FEATURE_CACHE", "0")
    assert assumed_sweep_seconds(seeds, "gpu") == pytest.approx(5 * (frozen.train.epochs * extraction + head))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_presets_dry_run_costs_something(preset: str) -> None:
    from finalbn.sweep.cli import dry_run
    from finalbn.sweep.costs import TRIAL_SETUP_SECONDS, assumed_sweep_seconds

    data = None if preset == "smoke" else "/data"
    for experiment in EXPERIMENTS.names():
        if (experiment, preset) == ("mnist", "cpu"):
            continue  # refused: no frozen trunk to cache
        for spec in build_sweeps(experiment, preset, data):
            for device in ("cpu", "gpu"):
                seconds = assumed_sweep_seconds([trial.config for trial in spec.trials()], device)
                assert seconds >= spec.size() * TRIAL_SETUP_SECONDS[device]
            text = dry_run(spec)
            assert "0.00 hours" not in text and " 0.0 min" not in text and "(0 trial-seconds" not in text
            assert "for set-up, head and scoring" in text

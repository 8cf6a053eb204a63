"""No silent phase: a trial that computes its frozen backbone's features first says so, through every
layer (train_trial, the worker, the driver's progress), and "running N" counts only running trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_sweep import sweep

from finalbn.data import build_manifest
from finalbn.sweep.progress import Outcome, Progress
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.train import train_trial
from finalbn.train.presets import EMBEDDED_MNIST

FROZEN = EMBEDDED_MNIST.replace(model={"unfreeze": "none", "head": "thesis"}, train={"epochs": 1, "device": "cpu"})


def test_a_trial_says_how_far_its_feature_extraction_is_and_nothing_once_cached(tmp_path: Path) -> None:
    manifest = build_manifest(FROZEN.data)
    images = manifest.table.height
    said: list[str] = []
    train_trial(FROZEN, manifest, cache_dir=tmp_path, on_phase=said.append)
    assert said[0] == f"backbone features: 0 of {images:,} new images"
    said.clear()
    train_trial(FROZEN, manifest, cache_dir=tmp_path, on_phase=said.append)
    assert said == []


def test_a_serial_sweep_log_shows_the_phase_of_its_running_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FINALBN_CACHE_DIR", str(tmp_path / "cache"))
    frozen = SweepSpec(name="frozen", base=FROZEN, axes=(Axis("model.final_norm", ("bn", "none")),))
    report, _ = sweep(frozen, tmp_path)
    assert len(report.finished) == 2
    lines = capsys.readouterr().out.splitlines()
    phases = [line for line in lines if "backbone features: 0 of" in line]
    # The first trial extracts every image; the second finds them cached and has no phase to show.
    assert len(phases) == 1 and phases[0].startswith("  final_norm=bn: backbone features: 0 of")


def test_running_counts_only_trials_that_run_now(tmp_path: Path) -> None:
    [first, second] = _jobs(2, tmp_path)
    progress = Progress(Outcome())
    progress.begin(total=2, skipped=0, todo=2)
    progress.started(first)
    progress.started(second)
    progress.failed(first)
    # A late epoch event of the ended trial (Tune delivers results and completions apart).
    progress.epoch(first, 1)
    progress.phase(first, "backbone features: 0 of 10 new images")
    assert list(progress.running) == [second.trial_id]
    assert "running 1 " in progress.summary()


def _jobs(count: int, root: Path) -> list:
    from finalbn.sweep.plan import plan

    spec = SweepSpec(name="two", base=EMBEDDED_MNIST, axes=(Axis("train.seed", tuple(range(count))),))
    return plan(spec, root / "two", "unknown")

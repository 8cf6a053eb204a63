"""A sweep's folder holds what the plan says: an overridden grid gets its own folder (reusing
finished trials of the same id), and a trial folder deleted while the sweep runs is found at the
end, named, and trained again by the same command. Serial backend, real MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from fixtures_sweep import FinishedSweep, copy_sweep, runs, spec, sweep

from finalbn.launch.base import TRIAL_HOOK_ENV
from finalbn.sweep.cli import dry_run
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.spec import own_name

# The trial whose start deletes the folder of a trial finished before it (the third of four).
_DELETE_WHEN = "train_minority=3 final_norm=none seed=0"


def delete_a_finished_folder(job: TrialJob) -> None:
    """FINALBN_TRIAL_HOOK: as someone cleaning up while the sweep runs."""
    if job.name == _DELETE_WHEN:
        finished = sorted(job.folder.parent.glob("*/summary.json"))
        shutil.rmtree(finished[0].parent)
        os.environ["DELETED_TRIAL"] = finished[0].parent.name


def test_a_folder_deleted_while_the_sweep_runs_is_named_and_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "deleted"
    monkeypatch.setenv(TRIAL_HOOK_ENV, f"{__name__}:delete_a_finished_folder")
    monkeypatch.delenv("DELETED_TRIAL", raising=False)
    report, client = sweep(spec(name, minority_counts=(3,)), tmp_path)
    deleted = os.environ["DELETED_TRIAL"]
    assert report.lost == [deleted] and deleted not in report.finished
    assert "1 finished trials have no readable result folder now" in capsys.readouterr().out
    trials = pl.read_parquet(report.folder / "trials.parquet")
    assert trials.height == 3 and deleted not in trials["trial_id"].to_list()
    assert not [r for r in runs(client, name) if r.info.status == "RUNNING"]

    monkeypatch.delenv(TRIAL_HOOK_ENV)
    again, client = sweep(spec(name, minority_counts=(3,)), tmp_path)
    assert again.finished == [deleted] and again.skipped == 3 and again.lost == []
    assert pl.read_parquet(report.folder / "trials.parquet").height == 4
    children = [r for r in runs(client, name) if r.data.tags.get("finalbn.trial_id") == deleted]
    assert [r.info.status for r in children] == ["FINISHED"]


def test_an_overridden_grid_has_its_own_folder_and_reuses_finished_trials(
    finished_sweep: FinishedSweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_sweep(finished_sweep, tmp_path)
    preset, first = copy.spec, copy.report
    before = (first.folder / "trials.parquet").read_bytes()
    wider = own_name(apply(preset, Overrides(axes=("data.train_minority=3,6,9",))))
    assert wider.name == "smoke+data.train_minority=3,6,9"
    assert f"results: {tmp_path / 'results' / wider.name}" in dry_run(wider, tmp_path / "results")

    report, client = sweep(wider, tmp_path)
    out = capsys.readouterr().out
    assert "8 finished trials reused from smoke (same config and data: same trial id)" in out
    assert report.skipped == 8 and len(report.finished) == 4
    assert pl.read_parquet(report.folder / "trials.parquet").height == 12
    # The preset's folder is untouched: its tables, and its MLflow experiment.
    assert (first.folder / "trials.parquet").read_bytes() == before
    assert len([r for r in runs(client, "smoke") if r.data.tags.get("finalbn.trial_id")]) == 8
    # The overridden sweep's experiment has one finished run per trial, reused ones included.
    children = [r for r in runs(client, wider.name) if r.data.tags.get("finalbn.trial_id")]
    assert len(children) == 12 and {r.info.status for r in children} == {"FINISHED"}


def test_own_names_are_deterministic_and_bounded() -> None:
    preset = spec("grid")
    assert own_name(preset) is preset
    one = own_name(apply(preset, Overrides(sets=("train.lr=0.01",), seeds=3)))
    other = own_name(apply(preset, Overrides(seeds=3, sets=("train.lr=0.01",))))
    assert one.name == other.name == "grid+seeds=3+train.lr=0.01"
    assert own_name(apply(preset, Overrides(seeds=3)), "mine").name == "mine"
    long = own_name(apply(preset, Overrides(axes=("data.train_minority=" + ",".join(map(str, range(1, 60))),))))
    assert len(long.name) == 100 and "/" not in long.name


def test_the_mlflow_client_sees_the_reused_runs_as_logged_from_folders(
    finished_sweep: FinishedSweep, tmp_path: Path
) -> None:
    """Reused trials are logged into the new experiment from their folders, with their metrics."""
    seeded = own_name(apply(copy_sweep(finished_sweep, tmp_path).spec, Overrides(seeds=1)))
    report, client = sweep(seeded, tmp_path)
    assert report.skipped == 4 and report.finished == []
    children = [r for r in runs(client, seeded.name) if r.data.tags.get("finalbn.trial_id")]
    assert len(children) == 4 and all("test_f1_minority" in r.data.metrics for r in children)


def test_strict_refuses_a_data_set_with_unreadable_files_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    from finalbn.sweep.cli import run_script

    tree = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for label in ("calm", "storm"):
        (tree / label).mkdir(parents=True)
        for i in range(60):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tree / label / f"{i}.png")
    (tree / "storm" / "empty.png").write_bytes(b"")
    flags = ["--preset", "smoke", "--source", "folder", "--data", str(tree), "--majority", "calm"]
    flags += ["--minority", "storm", "--out", str(tmp_path / "results"), "--dry-run"]
    assert run_script("imbalance_ratio", None, flags) == 0
    capsys.readouterr()
    assert run_script("imbalance_ratio", None, [*flags, "--strict"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"finalbn: error: --strict: {tree} has unreadable files (zero-byte: 1): remove them, or drop --strict "
        "to skip and count them"
    )
    assert not (tmp_path / "results").exists()

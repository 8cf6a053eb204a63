"""Sweeps on a real single-node Slurm cluster (tests/fixtures_slurm.py starts it).

Skipped where Slurm is not installed; mandatory in CI (FINALBN_REQUIRE_SLURM=1).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import polars as pl
import polars.testing
import pytest
import torch
from backends import slurm
from fixtures_slurm import slurm_cluster  # noqa: F401  (the fixture)
from fixtures_sweep import FinishedSweep

from finalbn.config import TrialConfig
from finalbn.data import Manifest
from finalbn.launch.slurm import SlurmOptions, SlurmState
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import MlflowTracker
from finalbn.train import checkpoint_epoch
from finalbn.train.presets import EMBEDDED_MNIST

REPO = Path(__file__).resolve().parents[1]
SCRIPT = [sys.executable, str(REPO / "sweeps" / "imbalance_ratio.py"), "--preset", "smoke"]

pytestmark = pytest.mark.slow


def sweep(
    *args: str, cwd: Path, timeout: float = 300, terminal: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The sweep script with its output piped, or (``terminal``) on a pseudo-terminal as a person runs it,
    rich's live display included; stdout then holds everything the terminal showed."""
    started = time.perf_counter()
    if terminal:
        shown, status = pexpect.run(
            " ".join(map(shlex.quote, [*SCRIPT, *args])),
            cwd=str(cwd),
            timeout=timeout,
            withexitstatus=True,
            encoding="utf-8",
            dimensions=(40, 120),
        )
        done = subprocess.CompletedProcess(SCRIPT, status, shown, "")
    else:
        done = subprocess.run([*SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, time.perf_counter() - started


def finished_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return [
        run
        for run in client.search_runs([experiment_id], max_results=1000)
        if "finalbn.trial_id" in run.data.tags and run.info.status == "FINISHED"
    ]


def test_submit_returns_at_once_reattach_then_wait_equals_local(
    slurm_cluster,  # noqa: F811
    imbalance_smoke: FinishedSweep,
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    common = ["--out", str(tmp_path / "slurm"), "--tracking-uri", uri]
    on_slurm = ["--backend", "slurm", "--partition", "debug", "--trials-per-task", "3", "--time", "10"]

    submitted, submit_seconds = sweep(*on_slurm, *common, cwd=tmp_path, terminal=True)
    assert "submitted Slurm array" in submitted.stdout and "8 to run" in submitted.stdout
    state_path = tmp_path / "slurm" / "imbalance_ratio-smoke" / "slurm" / "state.json"
    state = SlurmState.load(state_path, "imbalance_ratio-smoke")
    [submission] = state.submissions
    assert sorted(len(task) for task in submission.tasks) == [2, 3, 3]

    # Re-attaching while the array runs submits nothing that is queued or running.
    again, _ = sweep(*on_slurm, *common, cwd=tmp_path)
    assert "submitted Slurm array" not in again.stdout, again.stdout
    assert len(SlurmState.load(state_path, "imbalance_ratio-smoke").submissions) == 1

    waited, wait_seconds = sweep(*on_slurm, *common, "--wait", cwd=tmp_path, terminal=True)
    assert "8 trained" in waited.stdout or "skipped (finished earlier)" in waited.stdout, waited.stdout
    slurm_trials = pl.read_parquet(tmp_path / "slurm" / "imbalance_ratio-smoke" / "trials.parquet")
    assert slurm_trials.height == 8
    workers = [
        json.loads((tmp_path / "slurm" / "imbalance_ratio-smoke" / "trials" / t / "summary.json").read_text())["worker"]
        for t in slurm_trials["trial_id"]
    ]
    assert {w["backend"] for w in workers} == {"slurm"}
    assert {w["job_id"] for w in workers} == {submission.job_id}
    assert len(finished_runs(uri, "imbalance_ratio-smoke")) == 8

    # The same trials trained here (the session's smoke sweep, tests/fixtures_sweep.py) give the same numbers.
    local_trials = pl.read_parquet(imbalance_smoke.folder / "trials.parquet")
    columns = ["trial_id", "f1_minority", "f1_majority", "brier", "accuracy"]
    polars.testing.assert_frame_equal(
        slurm_trials.select(columns).sort("trial_id"), local_trials.select(columns).sort("trial_id"), abs_tol=1e-6
    )
    print(f"\nsmoke sweep (8 trials) wall: slurm submit {submit_seconds:.1f} s + --wait {wait_seconds:.1f} s")


def _long_spec() -> SweepSpec:
    # Trials long enough (many epochs) that a preemption lands inside one. Three, two per task: an array
    # (submitit submits a single task as a plain job) whose preempted task has a trial after the one it resumes.
    return SweepSpec(
        name="preempt",
        base=EMBEDDED_MNIST.replace(train={"epochs": 12}),
        axes=(Axis("data.train_minority", (3, 6, 9)),),
    )


def test_a_preempted_task_is_requeued_and_resumes_at_an_epoch_boundary(
    slurm_cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    spec = _long_spec()
    sweep_options = SweepOptions(out=tmp_path / "results", retries=0)
    options = SlurmOptions(partition="debug", time_minutes=10, trials_per_task=2, array_parallelism=1, poll_seconds=1)

    def tracker() -> MlflowTracker:
        return MlflowTracker(uri, artifact_root=tmp_path / "artifacts")

    submitted = run_sweep(spec, sweep_options, slurm(options), tracker())
    assert submitted.detached and submitted.finished == []
    state = SlurmState.load(tmp_path / "results" / "preempt" / "slurm" / "state.json", "preempt")
    [submission] = state.submissions
    first_folder = tmp_path / "results" / "preempt" / "trials" / submission.tasks[0][0]

    # Preempt task 0 once its first trial has checkpointed a few epochs.
    deadline = time.monotonic() + 240
    while checkpoint_epoch(first_folder / "checkpoint.pt") < 3:
        assert time.monotonic() < deadline, "the first trial never reached epoch 3"
        time.sleep(0.05)
    import submitit

    submitit.SlurmJob(folder=tmp_path / "results" / "preempt" / "slurm", job_id=f"{submission.job_id}_0")._interrupt()

    # The same sweep again with --wait re-attaches to the live array and follows it.
    report = run_sweep(spec, sweep_options, slurm(SlurmOptions(**{**options.__dict__, "wait": True})), tracker())
    assert report.failed == [] and report.total == 3 and not report.detached
    assert sorted(report.finished) == sorted(t for task in submission.tasks for t in task)
    assert len(SlurmState.load(tmp_path / "results" / "preempt" / "slurm" / "state.json", "preempt").submissions) == 1

    summary = json.loads((first_folder / "summary.json").read_text())
    assert summary["worker"]["restarts"] == 1
    assert summary["worker"]["resumed_from_epoch"] >= 3
    epochs = pl.read_parquet(first_folder / "metrics.parquet")["epoch"].to_list()
    assert epochs == list(range(1, 13))
    assert not (first_folder / "checkpoint.pt").exists()

    # The same MLflow run carried on: one finished run per trial, each epoch logged once.
    from mlflow.tracking import MlflowClient

    runs = finished_runs(uri, "preempt")
    assert len(runs) == 3
    [run] = [r for r in runs if r.data.tags["finalbn.trial_id"] == submission.tasks[0][0]]
    steps = [m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "test_f1_minority")]
    assert sorted(steps) == list(range(1, 13))

    # Resuming is exact: the preempted trial ends where an uninterrupted one does.
    from finalbn.train import train_trial

    torch.set_num_threads(1)  # as in the task: reductions, hence results, depend on the thread count
    record = json.loads((first_folder / "config.json").read_text())
    uninterrupted = train_trial(
        TrialConfig.from_dict(record["config"]), Manifest.read(first_folder / "manifest.parquet")
    )
    for key in ("f1_minority", "f1_majority", "brier"):
        assert summary["test"][key] == pytest.approx(uninterrupted.final[key], abs=1e-6), key

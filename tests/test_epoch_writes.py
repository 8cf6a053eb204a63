"""How the driver writes a trial's epochs to MLflow: at most every LIVE_SECONDS while the trial trains (the
UI follows long trials live), the rest in one write when it ends, and every epoch at once from a Slurm task.

Real MLflow store (SQLite), real trial folders (the session's finished sweep, copied); the clock is the only
thing faked, so the test does not wait ten seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_sweep import FinishedSweep, copy_sweep

from finalbn.provenance import code_versions
from finalbn.records import read_metrics
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import plan
from finalbn.tracking import TRIAL_TAG, MlflowTracker
from finalbn.tracking import writer as writer_module
from finalbn.tracking.layout import PARENT_TAG


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setting(
    finished_sweep: FinishedSweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[FinishedSweep, TrialJob, list[dict[str, float]], Clock]:
    """A copy of the finished sweep, one of its trials, that trial's epoch rows, and the writer's clock."""
    copied = copy_sweep(finished_sweep, tmp_path / "copy")
    [job, *_] = plan(copied.spec, copied.folder, code_versions()["git_commit"])
    rows = read_metrics(job.folder / "metrics.parquet", job.trial_id).drop("trial_id").to_dicts()
    clock = Clock()
    monkeypatch.setattr(writer_module.time, "monotonic", clock)
    return copied, job, rows, clock


def steps(copied: FinishedSweep, tracker: MlflowTracker, job: TrialJob) -> list[int]:
    """The epochs of the trial's run that MLflow holds now."""
    history = copied.client().get_metric_history(tracker.children[job.trial_id], "test_f1_minority")
    return sorted(metric.step for metric in history)


def test_a_short_trial_gets_its_epochs_in_one_write_when_it_ends(setting: tuple) -> None:
    copied, job, rows, clock = setting
    tracker = MlflowTracker(copied.uri, artifact_root=copied.root / "artifacts")
    tracker.start_sweep(copied.spec, "x", pending=1, skipped=0)
    for row in rows:
        clock.now += 1.0
        tracker.log_epoch(job, row)
    assert len(rows) == 2 and steps(copied, tracker, job) == []
    run_id = tracker.children[job.trial_id]
    tracker.finish_trial(job, failed=False)
    history = copied.client().get_metric_history(run_id, "test_f1_minority")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [row["test_f1_minority"] for row in rows]
    tracker.end_sweep("FINISHED")


def test_a_long_trial_is_written_while_it_trains(setting: tuple) -> None:
    copied, job, rows, clock = setting
    tracker = MlflowTracker(copied.uri, artifact_root=copied.root / "artifacts")
    tracker.start_sweep(copied.spec, "x", pending=1, skipped=0)
    clock.now += 1.0
    tracker.log_epoch(job, rows[0])
    assert steps(copied, tracker, job) == []
    # LIVE_SECONDS after the run began: this epoch and the one held back are written now.
    clock.now += writer_module.LIVE_SECONDS
    tracker.log_epoch(job, rows[1])
    assert steps(copied, tracker, job) == [1, 2]
    # Within LIVE_SECONDS of that write: held back until the trial ends or, here, the sweep stops.
    clock.now += 1.0
    tracker.log_epoch(job, {**rows[1], "epoch": 3})
    assert steps(copied, tracker, job) == [1, 2]
    run_id = tracker.children[job.trial_id]
    tracker.end_sweep("KILLED")
    assert sorted(m.step for m in copied.client().get_metric_history(run_id, "test_f1_minority")) == [1, 2, 3]
    assert copied.client().get_run(run_id).info.status == "KILLED"


def test_a_slurm_task_writes_each_epoch_at_once(setting: tuple) -> None:
    copied, job, rows, _ = setting
    tracker = MlflowTracker(copied.uri, artifact_root=copied.root / "artifacts", live_seconds=0)
    tracker.start_sweep(copied.spec, "x", pending=1, skipped=0)
    for count, row in enumerate(rows, start=1):
        tracker.log_epoch(job, row)
        assert steps(copied, tracker, job) == list(range(1, count + 1))
    tracker.end_sweep("FINISHED")


def test_a_retried_attempt_drops_its_held_back_epochs(setting: tuple) -> None:
    copied, job, rows, _ = setting
    tracker = MlflowTracker(copied.uri, artifact_root=copied.root / "artifacts")
    tracker.start_sweep(copied.spec, "x", pending=1, skipped=0)
    tracker.log_epoch(job, rows[0])
    tracker.discard_attempt(job)
    tracker.log_epoch(job, rows[1])
    tracker.finish_trial(job, failed=False)
    client = copied.client()
    [run] = [
        r
        for r in client.search_runs([tracker.experiment_id])
        if r.data.tags.get(TRIAL_TAG) == job.trial_id and r.data.tags.get(PARENT_TAG) == tracker.parent_id
    ]
    # Only the retry's epoch: the failed attempt's row went with its run.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_f1_minority")] == [2]
    tracker.end_sweep("FINISHED")

"""The Slurm task's side of tracking: ``TaskTracker`` logs a task's trials under its driver's parent run."""

from __future__ import annotations

from finalbn.sweep.jobs import TrialJob
from finalbn.tracking.layout import store_lock
from finalbn.tracking.tracker import TaskTracking
from finalbn.tracking.writer import MlflowTracker


class TaskTracker:
    """MLflow writes from inside a Slurm task, each under the store's file lock:
    many tasks share one store (a SQLite file on the shared file system), and
    SQLite's own locking gives up with "database is locked" under that load."""

    def __init__(self, tracking: TaskTracking) -> None:
        self.tracking = tracking
        # The driver that submitted this task checked every page of the store; each of many tasks need not.
        # Each epoch is written at once: a requeued task resumes its run, and cannot know what a preempted
        # one held back.
        self.inner = MlflowTracker(tracking.uri, tracking.artifact_root, thorough_check=False, live_seconds=0)
        self.inner.experiment_id = tracking.experiment_id
        self.inner.parent_id = tracking.parent_id
        self.inner.names = tracking.names

    def resume_trial(self, job: TrialJob) -> None:
        with store_lock(self.tracking.uri):
            self.inner.adopt_running(job.trial_id)

    def log_epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        with store_lock(self.tracking.uri):
            self.inner.log_epoch(job, row)

    def discard_attempt(self, job: TrialJob) -> None:
        with store_lock(self.tracking.uri):
            self.inner.discard_attempt(job)

    def finish_trial(self, job: TrialJob, failed: bool) -> None:
        with store_lock(self.tracking.uri):
            self.inner.finish_trial(job, failed)


def task_tracker(tracking: TaskTracking | None) -> TaskTracker | None:
    return None if tracking is None else TaskTracker(tracking)

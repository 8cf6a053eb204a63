"""One Slurm array task: its trials in turn, through the same per-trial
function as a Ray worker, logging to MLflow itself (a task outlives the driver)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import submitit

from finalbn.launch.base import Recording, run_attempts
from finalbn.records.folders import SUMMARY
from finalbn.sweep.claims import Owner
from finalbn.sweep.jobs import TrialJob
from finalbn.tracking import NullTracker, TaskTracker, TaskTracking, task_tracker


@dataclass
class TaskOutcome:
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class SweepTask(submitit.helpers.Checkpointable):
    """One array task: its trials in order, resumable.

    submitit calls ``checkpoint`` on preemption or time-out and requeues the
    task with the same arguments; the trial folders (summary.json, the epoch
    checkpoint) say what is done, so the same call simply carries on.
    """

    def __call__(
        self, jobs: list[TrialJob], backend: str, threads: int, retries: int, tracking: TaskTracking | None
    ) -> TaskOutcome:
        worker = _slurm_worker(backend)
        tracker = task_tracker(tracking)
        events = Recording(tracker or NullTracker(), _TaskLog(tracker))
        outcome = TaskOutcome()
        for job in jobs:
            if (job.folder / SUMMARY).exists():
                outcome.skipped.append(job.trial_id)
                continue
            done = run_attempts(job, events, retries, threads, worker=worker, resume=True)
            # None: another driver's task or worker trains it (its claim); not this task's to report.
            (outcome.skipped if done is None else outcome.finished if done else outcome.failed).append(job.trial_id)
        return outcome


class _TaskLog:
    """What a task shows of its trial events, once ``Recording`` wrote their failure records and MLflow runs:
    its own log (submitit's stdout file, which the driver does not follow); the driver follows the folders."""

    def __init__(self, tracker: TaskTracker | None) -> None:
        self.tracker = tracker

    def started(self, job: TrialJob) -> None:
        if self.tracker is not None:
            # A requeued task continues the trial's RUNNING run.
            self.tracker.resume_trial(job)

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        pass

    def phase(self, job: TrialJob, text: str) -> None:
        print(f"trial {job.trial_id}: {text}", flush=True)

    def retrying(self, job: TrialJob, error: str) -> None:
        pass

    def finished(self, job: TrialJob) -> None:
        pass

    def failed(self, job: TrialJob, error: str) -> None:
        pass

    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None:
        pass  # its owner keeps its records and its MLflow run


def _slurm_worker(backend: str) -> dict[str, object]:
    env = os.environ
    return {
        "backend": backend,
        "job_id": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
        "array_task": env.get("SLURM_ARRAY_TASK_ID", ""),
        "node": env.get("SLURMD_NODENAME", ""),
        "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
    }

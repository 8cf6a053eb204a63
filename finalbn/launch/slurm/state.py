"""``<out>/<sweep>/slurm/state.json``: the arrays a sweep submitted, and what Slurm says of them.

The state file lists each submission's array job id and the trial ids of each
of its tasks; sacct says which tasks are still queued or running. Trials of a
live task are in flight: the driver neither sets their folders aside nor
submits them again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import submitit

from finalbn.records import write_json

# sacct states after which a task will not run again.
_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")
# How long a submitted task may be missing from sacct before it counts as gone.
_UNKNOWN_GRACE = timedelta(minutes=10)


@dataclass
class Submission:
    job_id: str
    # Trial ids of each array task, in task order.
    tasks: list[list[str]]
    submitted: str


@dataclass
class SlurmState:
    sweep: str
    submissions: list[Submission] = field(default_factory=list)

    @staticmethod
    def load(path: Path, sweep: str) -> SlurmState:
        if not path.exists():
            return SlurmState(sweep)
        raw = json.loads(path.read_text())
        return SlurmState(
            raw["sweep"], [Submission(s["job_id"], s["tasks"], s["submitted"]) for s in raw["submissions"]]
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, asdict(self))


def task_states(state: SlurmState, folder: Path) -> dict[str, str]:
    """sacct's state of every recorded array task, by "JOBID_TASK"."""
    jobs = {
        f"{s.job_id}_{index}": submitit.SlurmJob(folder=folder, job_id=_slurm_id(s, index))
        for s in state.submissions
        for index in range(len(s.tasks))
    }
    if not jobs:
        return {}
    # One sacct call for all of them, then read from the watcher's cache.
    next(iter(jobs.values())).get_info(mode="force")
    return {task: job.get_info(mode="cache").get("State", "UNKNOWN").split()[0] for task, job in jobs.items()}


def _slurm_id(submission: Submission, index: int) -> str:
    # submitit submits a single task as a plain job, not an array of one: sacct knows it as JOBID alone.
    return submission.job_id if len(submission.tasks) == 1 else f"{submission.job_id}_{index}"


def live_trials(state: SlurmState, states: dict[str, str], now: datetime | None = None) -> dict[str, str]:
    """Trial id -> "JOBID_TASK" for trials whose task is still queued or running.

    A task sacct does not know (UNKNOWN) is live while its submission is
    recent, as sacct may not list a new job yet; later it is gone (purged from
    accounting, or a cluster that forgot it), and its trials may be resubmitted.
    """
    now = now or datetime.now()
    live = {}
    for submission in state.submissions:
        recent = now - datetime.fromisoformat(submission.submitted) < _UNKNOWN_GRACE
        for index, trial_ids in enumerate(submission.tasks):
            task = f"{submission.job_id}_{index}"
            known = states.get(task, "UNKNOWN")
            if known not in _ENDED and (known != "UNKNOWN" or recent):
                live.update(dict.fromkeys(trial_ids, task))
    return live

"""``--backend slurm``: a sweep's pending trials packed into job arrays through submitit.

Submitting returns at once (a detached handle) with the array's job id and a
state file (``<out>/<sweep>/slurm/state.json``). Running the same command
again re-attaches: the driver asks ``in_flight`` which trials sit in tasks
still queued or running (sacct), leaves those alone and hands the rest over
for submission; ``--wait`` follows the arrays until no task is live.

Each array task runs K trials one after another (so 430 trials do not become
430 tiny jobs) and is a submitit ``Checkpointable``: on preemption or time
limit submitit requeues it, and the requeued task skips its finished trials and
resumes the interrupted one from its last finished epoch, in the same trial
folder and the same MLflow run. Tasks log to MLflow themselves (a server, or a
SQLite file on the shared file system, written under a file lock).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from finalbn.console import interrupts
from finalbn.launch.base import Launch, RunHandle, TrialEvents, trial_threads
from finalbn.launch.slurm.state import SlurmState, Submission, live_trials, task_states
from finalbn.launch.slurm.submit import (
    SlurmOptions,
    check_path,
    check_results,
    check_value,
    executor_parameters,
    max_array_size,
    pack,
    parse_extra,
    parse_time,
    sbatch_text,
    scancel,
    trials_per_task,
)
from finalbn.launch.slurm.task import SweepTask
from finalbn.records import RecordError, read_failure
from finalbn.records.folders import FAILURE, SLURM_STATE, SUMMARY
from finalbn.sweep.claims import live_owner, trial_claim
from finalbn.sweep.jobs import TrialJob


class SlurmBackend:
    """Submits, re-attaches to and (with --wait) follows a sweep's Slurm arrays."""

    runs_here = False

    def __init__(self, name: str, options: SlurmOptions) -> None:
        self.name = name
        self.options = options

    def slots(self, max_concurrent: int | None, cpus_per_trial: float) -> int:
        return max_concurrent or self.options.array_parallelism

    def preflight(self) -> None:
        """No Slurm client, or no controller answering: refused (scontrol's UserError) before planning, in a
        dry run too, and before the driver opens an MLflow run."""
        _ = self.array_limit

    @functools.cached_property
    def array_limit(self) -> int:
        """The cluster's MaxArraySize, asked once per backend: the driver's preflight after the sweep command's
        is free."""
        return max_array_size()

    def in_flight(self, folder: Path, jobs: list[TrialJob]) -> dict[str, str]:
        slurm_dir = folder.resolve() / self.name
        state = SlurmState.load(slurm_dir / SLURM_STATE, folder.name)
        return live_trials(state, task_states(state, slurm_dir))

    def cancel(self, folder: Path) -> list[str]:
        slurm_dir = folder.resolve() / self.name
        state = SlurmState.load(slurm_dir / SLURM_STATE, folder.name)
        arrays = sorted({task.split("_")[0] for task in live_trials(state, task_states(state, slurm_dir)).values()})
        if not arrays:
            return []
        scancel(arrays)
        return [f"scancel {' '.join(arrays)}: the sweep's live Slurm arrays"]

    def executor(self, launch: Launch) -> ArrayExecutor:
        return ArrayExecutor(self, launch)


@dataclass(frozen=True)
class ArrayExecutor:
    """Submits one invocation's trials as arrays. The tasks outlive the driver, so they write their
    trials' failure records and MLflow runs themselves (under the invocation's parent run); the driver's
    events only show progress."""

    backend: SlurmBackend
    launch: Launch

    def submit(self, jobs: list[TrialJob], running: Sequence[TrialJob] = ()) -> RunHandle:
        spec, options = self.launch.spec, self.launch.options
        # Before anything is written: the folder and the name go into the sbatch script.
        check_results(options.out)
        check_path("sweep name", spec.name)
        slurm_dir = options.out.resolve() / spec.name / self.backend.name
        state = SlurmState.load(slurm_dir / SLURM_STATE, spec.name)
        if jobs:
            state.submissions.append(self._submit(jobs, slurm_dir))
            state.write(slurm_dir / SLURM_STATE)
        return SlurmHandle(self.backend.options, state, slurm_dir, [*running, *jobs], self.launch.progress)

    def close(self) -> None:
        # The submitted arrays are Slurm's now; the driver holds nothing of them.
        return None

    def _submit(self, jobs: list[TrialJob], slurm_dir: Path) -> Submission:
        from finalbn.sweep.costs import assumed_trial_seconds

        spec, options, slurm = self.launch.spec, self.launch.options, self.backend.options
        device = "gpu" if options.gpus_per_trial > 0 else "cpu"
        trial_seconds = max(assumed_trial_seconds(job.trial.config, device) for job in jobs)
        k = slurm.trials_per_task or trials_per_task(len(jobs), trial_seconds, slurm.time_minutes, max_array_size())
        tasks = pack(jobs, k)
        executor = submitit.SlurmExecutor(folder=slurm_dir)
        executor.update_parameters(**executor_parameters(slurm, options, spec.name))
        threads = trial_threads(options.cpus_per_trial)
        tracking = self.launch.tracker.task_tracking()
        n = len(tasks)
        submitted = executor.map_array(
            SweepTask(), tasks, [self.backend.name] * n, [threads] * n, [options.retries] * n, [tracking] * n
        )
        job_id = submitted[0].job_id.split("_")[0]
        print(
            f"submitted Slurm array {job_id}: {n} tasks of up to {k} trials ({len(jobs)} trials, "
            f"~{k * trial_seconds / 60:.0f} min per task by the cost estimate, "
            f"time limit {slurm.time_minutes} min)"
        )
        return Submission(
            job_id=job_id,
            tasks=[[job.trial_id for job in task] for task in tasks],
            submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )


@dataclass
class SlurmHandle:
    """The arrays of one sweep: detached unless --wait, then followed until no task is live."""

    options: SlurmOptions
    state: SlurmState
    slurm_dir: Path
    # Trials to follow: those just submitted and those still live from earlier submissions.
    watched: list[TrialJob]
    events: TrialEvents
    _reported: set[str] = field(default_factory=set)

    @property
    def detached(self) -> bool:
        return not self.options.wait

    def wait(self) -> None:
        """With --wait: poll sacct and the trial folders, telling the driver what ended."""
        if self.detached:
            return
        while True:
            states = task_states(self.state, self.slurm_dir)
            live = live_trials(self.state, states)
            for job in self.watched:
                if job.trial_id in self._reported:
                    continue
                if (job.folder / SUMMARY).exists():
                    self._reported.add(job.trial_id)
                    self.events.finished(job)
                elif job.trial_id not in live:
                    self._reported.add(job.trial_id)
                    # Its task found another driver training it: the driver waits for that one.
                    owner = live_owner(trial_claim(job.folder))
                    if owner is not None:
                        self.events.elsewhere(job, owner)
                    else:
                        self.events.failed(job, _failure_text(job))
                elif states.get(live[job.trial_id]) == "RUNNING":
                    self.events.started(job)
            if not live:
                return
            interrupts.sleep(self.options.poll_seconds)

    def notes(self) -> list[str]:
        if not self.detached:
            return []
        last = " ".join(s.job_id for s in self.state.submissions[-1:])
        return [
            f"Slurm state: {self.slurm_dir / SLURM_STATE}",
            "  follow: the same command with --wait; re-attach (report, resubmit what failed): the same command; "
            f"queue: squeue --me; cancel: scancel {last}",
        ]


def _failure_text(job: TrialJob) -> str:
    path = job.folder / FAILURE
    try:
        return read_failure(path, job.trial_id).traceback
    except (OSError, RecordError):
        pass
    return "its Slurm task ended before the trial finished (cancelled, timed out or the node failed)"


__all__ = [
    "SlurmBackend",
    "SlurmHandle",
    "SlurmOptions",
    "SlurmState",
    "Submission",
    "check_path",
    "check_results",
    "check_value",
    "executor_parameters",
    "live_trials",
    "pack",
    "parse_extra",
    "parse_time",
    "sbatch_text",
    "task_states",
    "trials_per_task",
]

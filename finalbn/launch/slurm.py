"""Slurm through submitit: a sweep's pending trials packed into one job array.

Submitting returns at once with the array's job id and a state file
(``<out>/<sweep>/slurm/state.json``). Running the same command again
re-attaches: it reads the state file, asks Slurm (sacct) which tasks are still
queued or running, reports what finished, and submits only trials that are
neither finished nor in a live task. ``--wait`` follows the array until it is
done.

Each array task runs K trials one after another (so 430 trials do not become
430 tiny jobs) and is a submitit ``Checkpointable``: on preemption or time
limit submitit requeues it, and the requeued task skips its finished trials and
resumes the interrupted one from its last finished epoch, in the same trial
folder and the same MLflow run. Tasks log to MLflow themselves (a server, or a
SQLite file on the shared file system, written under a file lock).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import submitit

from finalbn.errors import UserError
from finalbn.results import writable_folder
from finalbn.spec import SweepSpec
from finalbn.sweep import (
    SweepOptions,
    SweepReport,
    TrialJob,
    execute,
    is_finished,
    plan,
    record_failure,
    set_aside_damaged,
    sweep_folder,
    write_tables,
)
from finalbn.tracking import TaskTracking, Tracker, task_tracker

# sacct states after which a task will not run again.
_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")
# A value that goes into an #SBATCH line: no spaces, quotes or newlines, so
# nothing from the command line can add a line or a shell word to the script.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=/@+%-]+$")
# Leave a task time for the trial in progress to reach an epoch boundary.
_TASK_TIME_FILL = 0.5
_STATE_FILE = "state.json"
# How long a submitted task may be missing from sacct before it counts as gone.
_UNKNOWN_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_minutes: int = 60
    account: str | None = None
    qos: str | None = None
    # Array tasks Slurm may run at once (the %N of --array).
    array_parallelism: int = 64
    # None: chosen from the cost estimate, the time limit and MaxArraySize.
    trials_per_task: int | None = None
    # Extra sbatch flags, e.g. {"mem": "16G", "constraint": "a100"}.
    extra: dict[str, str] = field(default_factory=dict)
    wait: bool = False
    # Seconds between two looks at the array while waiting.
    poll_seconds: float = 10.0


def parse_time(text: str) -> int:
    """Slurm's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    days, dash, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not (days.isdigit() or not dash) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise UserError(f"--time {text!r} is not a Slurm time: use minutes (90), HH:MM:SS or D-HH:MM:SS")
    numbers = [int(p) for p in parts]
    if days:
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    else:
        hours, (minutes, seconds) = 0, (numbers + [0])[:2]
    total = math.ceil((((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds) / 60)
    if total < 1:
        raise UserError(f"--time {text!r} is under a minute: give the time limit of one array task")
    return total


def parse_extra(pairs: list[str]) -> dict[str, str]:
    """``--sbatch mem=16G`` pass-through pairs -> {"mem": "16G"}, each value checked."""
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise UserError(f"--sbatch {pair!r}: use KEY=VALUE with an sbatch long option, e.g. --sbatch mem=16G")
        extra[key] = check_value(f"--sbatch {key}", value)
    return extra


def check_value(flag: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise UserError(f"{flag} {value!r}: only letters, digits and _ . , : = / @ + % - are allowed in sbatch values")
    return value


def executor_parameters(options: SlurmOptions, sweep: SweepOptions, name: str) -> dict[str, object]:
    """submitit's Slurm parameters for a sweep's array (pure: the golden sbatch test renders them)."""
    params: dict[str, object] = {
        "job_name": f"finalbn-{name}",
        "time": options.time_minutes,
        "cpus_per_task": max(1, math.ceil(sweep.cpus_per_trial)),
        "array_parallelism": options.array_parallelism,
        # Slurm's own --requeue: a preempted task goes back into the queue.
        "additional_parameters": {"requeue": True, **options.extra},
    }
    # Trials of a task run one after another, each on the whole allocation.
    gpus = math.ceil(sweep.gpus_per_trial)
    if gpus:
        params["gpus_per_task"] = gpus
    for key, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos)):
        if value is not None:
            params[key] = check_value(f"--{key}", value)
    return params


def sbatch_text(params: dict[str, object], folder: Path, tasks: int, python: str) -> str:
    """The sbatch script submitit writes for these parameters and an array of ``tasks``."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{python} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=tasks, **params)


def trials_per_task(pending: int, trial_seconds: float, time_minutes: int, max_array_size: int) -> int:
    """K trials per array task: as many as fill half the time limit by the cost
    estimate, and never so few that the array exceeds MaxArraySize."""
    by_time = max(1, int(_TASK_TIME_FILL * time_minutes * 60 // max(trial_seconds, 1e-9)))
    by_array = math.ceil(pending / max(1, max_array_size - 1))
    return max(1, min(pending, max(by_time, by_array)))


def pack(jobs: list[TrialJob], k: int) -> list[list[TrialJob]]:
    """Consecutive grid points share data, so each task reuses its decoded images."""
    return [jobs[i : i + k] for i in range(0, len(jobs), k)]


def max_array_size() -> int:
    text = _slurm_client(["scontrol", "show", "config"])
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else 1001


def _slurm_client(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise UserError(
            f"{command[0]} not found: --backend slurm runs on a Slurm login node; use --backend local or ray elsewhere"
        )
    try:
        done = subprocess.run(["timeout", "30", *command], capture_output=True, text=True, check=False)
    except OSError as error:
        raise UserError(f"cannot run {command[0]} ({error}): check the Slurm client installation") from None
    if done.returncode != 0:
        raise UserError(f"{' '.join(command)} failed ({done.stderr.strip()[:200]}): is slurmctld reachable?")
    return done.stdout


# ------------------------------------------------------------------ the task


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

    def __call__(self, jobs: list[TrialJob], threads: int, retries: int, tracking: TaskTracking | None) -> TaskOutcome:
        worker = _slurm_worker()
        tracker = task_tracker(tracking)
        outcome = TaskOutcome()
        for job in jobs:
            if is_finished(job):
                outcome.skipped.append(job.trial_id)
                continue
            tracker.resume_trial(job)
            for attempt in range(retries + 1):
                try:
                    execute(job, threads, lambda row, job=job: tracker.log_epoch(job, row), worker=worker, resume=True)
                except Exception:  # a trial's failure must not end the task's other trials
                    error = traceback.format_exc()
                    record_failure(job, error)
                    if attempt < retries:
                        tracker.discard_attempt(job)
                        continue
                    tracker.finish_trial(job, failed=True)
                    outcome.failed.append(job.trial_id)
                else:
                    tracker.finish_trial(job, failed=False)
                    outcome.finished.append(job.trial_id)
                break
        return outcome


def _slurm_worker() -> dict[str, object]:
    env = os.environ
    return {
        "backend": "slurm",
        "job_id": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
        "array_task": env.get("SLURM_ARRAY_TASK_ID", ""),
        "node": env.get("SLURMD_NODENAME", ""),
        "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
    }


# ---------------------------------------------------------- the state file


@dataclass
class Submission:
    job_id: str
    # Trial ids of each array task, in task order.
    tasks: list[list[str]]
    submitted: str
    parent_run_id: str = ""


@dataclass
class SlurmState:
    sweep: str
    submissions: list[Submission] = field(default_factory=list)

    @staticmethod
    def load(path: Path, sweep: str) -> SlurmState:
        if not path.exists():
            return SlurmState(sweep)
        raw = json.loads(path.read_text())
        return SlurmState(raw["sweep"], [Submission(**s) for s in raw["submissions"]])

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(temporary, path)


def task_states(state: SlurmState, folder: Path) -> dict[str, str]:
    """sacct's state of every recorded array task, by "JOBID_TASK"."""
    jobs = [
        submitit.SlurmJob(folder=folder, job_id=f"{s.job_id}_{index}")
        for s in state.submissions
        for index in range(len(s.tasks))
    ]
    if not jobs:
        return {}
    # One sacct call for all of them, then read from the watcher's cache.
    jobs[0].get_info(mode="force")
    return {job.job_id: job.get_info(mode="cache").get("State", "UNKNOWN").split()[0] for job in jobs}


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


# ------------------------------------------------------------- the driver


class SlurmBackend:
    """Submits, re-attaches to and (with --wait) follows a sweep's Slurm array."""

    def __init__(self, options: SlurmOptions) -> None:
        self.options = options

    def launch(self, spec: SweepSpec, sweep: SweepOptions, tracker: Tracker, trial_seconds: float) -> SweepReport:
        started = time.perf_counter()
        folder = sweep_folder(spec, sweep)
        writable_folder(folder)
        slurm_dir = folder.resolve() / "slurm"
        state_path = slurm_dir / _STATE_FILE
        jobs = plan(spec, sweep)
        state = SlurmState.load(state_path, spec.name)
        live = live_trials(state, task_states(state, slurm_dir))
        # A live task may be writing its trial's folder right now: leave those alone.
        for note in set_aside_damaged([job for job in jobs if job.trial_id not in live]):
            print(note)
        done = {job.trial_id for job in jobs if is_finished(job)}
        in_flight = [job for job in jobs if job.trial_id in live and job.trial_id not in done]
        missing = [job for job in jobs if job.trial_id not in done and job.trial_id not in live]
        failed_before = [job for job in missing if (job.folder / "failure.json").exists()]
        report = SweepReport(spec=spec, folder=folder, total=len(jobs), skipped=len(done))
        print(
            f"{spec.name}: {len(jobs)} trials: {len(done)} finished, {len(in_flight)} queued or running in Slurm, "
            f"{len(failed_before)} failed earlier (resubmitted), {len(missing)} to submit"
        )
        tracker.start_sweep(spec, pending=len(missing), skipped=len(done), live=frozenset(live))
        tracker.sync_finished([job for job in jobs if job.trial_id in done and job.trial_id not in live])
        if missing:
            self._submit(spec, sweep, missing, trial_seconds, state, state_path, tracker)
        if self.options.wait:
            self._follow(state, slurm_dir, jobs, report.total)
        else:
            print(
                f"Slurm state: {state_path}\n"
                "  follow: the same command with --wait; re-attach (report, resubmit what failed): the same command; "
                f"queue: squeue --me; cancel: scancel {' '.join(s.job_id for s in state.submissions[-1:])}"
            )
        tracker.end_sweep("FINISHED")
        report.finished = [job.trial_id for job in jobs if is_finished(job) and job.trial_id not in done]
        if self.options.wait:
            report.failed = [job.trial_id for job in jobs if not is_finished(job)]
        write_tables(folder, jobs)
        report.seconds = time.perf_counter() - started
        return report

    def _submit(
        self,
        spec: SweepSpec,
        sweep: SweepOptions,
        missing: list[TrialJob],
        trial_seconds: float,
        state: SlurmState,
        state_path: Path,
        tracker: Tracker,
    ) -> None:
        k = self.options.trials_per_task or trials_per_task(
            len(missing), trial_seconds, self.options.time_minutes, max_array_size()
        )
        tasks = pack(missing, k)
        executor = submitit.SlurmExecutor(folder=state_path.parent)
        executor.update_parameters(**executor_parameters(self.options, sweep, spec.name))
        threads = max(1, int(sweep.cpus_per_trial))
        n = len(tasks)
        tracking = tracker.task_tracking()
        submitted = executor.map_array(SweepTask(), tasks, [threads] * n, [sweep.retries] * n, [tracking] * n)
        job_id = submitted[0].job_id.split("_")[0]
        state.submissions.append(
            Submission(
                job_id=job_id,
                tasks=[[job.trial_id for job in task] for task in tasks],
                submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
                parent_run_id=tracking.parent_id if tracking else "",
            )
        )
        state.write(state_path)
        estimate = k * trial_seconds / 60
        print(
            f"submitted Slurm array {job_id}: {n} tasks of up to {k} trials ({len(missing)} trials, "
            f"~{estimate:.0f} min per task by the cost estimate, time limit {self.options.time_minutes} min)"
        )

    def _follow(self, state: SlurmState, slurm_dir: Path, jobs: list[TrialJob], total: int) -> None:
        """Poll sacct and the trial folders until no task is queued or running."""
        t0 = time.perf_counter()
        last = ""
        while True:
            states = task_states(state, slurm_dir)
            live = live_trials(state, states)
            finished = sum(is_finished(job) for job in jobs)
            running = sum(1 for value in states.values() if value == "RUNNING")
            line = (
                f"[{finished:>{len(str(total))}}/{total}] finished  "
                f"tasks: {running} running, {len(set(live.values())) - running} queued  "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            if line.split("(")[0] != last:
                print(line, flush=True)
                last = line.split("(")[0]
            if not live:
                break
            time.sleep(self.options.poll_seconds)

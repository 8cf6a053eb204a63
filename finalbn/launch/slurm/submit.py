"""Slurm submission, the pure parts: options, checked sbatch values, the
executor parameters (and the sbatch script they make), and packing trials
into array tasks. Nothing here submits; the golden-file test renders them.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from finalbn.errors import UserError
from finalbn.jobs import TrialJob
from finalbn.launch.base import SweepOptions

# A value that goes into an #SBATCH line: no spaces, quotes or newlines, so
# nothing from the command line can add a line or a shell word to the script.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:=/@+%-]+")
# Leave a task time for the trial in progress to reach an epoch boundary.
_TASK_TIME_FILL = 0.5


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


def _ascii_digits(text: str) -> bool:
    # isascii(): "²".isdigit() holds, but int() rejects it.
    return text.isascii() and text.isdigit()


def parse_time(text: str) -> int:
    """Slurm's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    days, dash, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not (_ascii_digits(days) or not dash) or not all(_ascii_digits(p) for p in parts) or len(parts) > 3:
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
    # fullmatch: "$" would also match before a final newline.
    if not _SAFE_VALUE.fullmatch(value):
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


def scancel(job_ids: list[str]) -> None:
    _slurm_client(["scancel", *job_ids])


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

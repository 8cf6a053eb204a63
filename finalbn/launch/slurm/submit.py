"""Slurm submission, the pure parts: options, checked sbatch values, the
executor parameters (and the sbatch script they make), and packing trials
into array tasks. Nothing here submits; the golden-file test renders them.

What reaches the script, and how it is kept literal: submitit writes each
sbatch option as ``#SBATCH --key=<shlex-quoted value>`` and the command as
``srun --output <quoted> --error <quoted> <python> -u -m submitit.core._submit
<quoted folder>``. sbatch reads the ``#SBATCH`` lines itself, not through a
shell: quotes group words (so a quoted path with spaces, ``$``, backticks,
``;`` or quotes stays one literal value), but a newline ends the directive
and a backslash escapes the next character even inside quotes. So the values
are checked here (:func:`check_value` for names, :func:`check_path` for the
results folder and the sweep name) and the shell words are quoted.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from finalbn.errors import UserError
from finalbn.names import is_utf8, shown_path
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.options import SweepOptions

# A name that goes into an #SBATCH line (partition, account, qos, a --sbatch
# value): no spaces, quotes or control characters, so it needs no quoting at all.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:=/@+%-]+")
# An sbatch long option, as --sbatch names it.
_OPTION = re.compile(r"[a-z][a-z0-9-]*")
# sbatch takes an #SBATCH line holding either word (any case) as the start of a
# heterogeneous job's next component, wherever on the line it stands.
_HETJOB = re.compile(r"hetjob|packjob", re.IGNORECASE)
# sbatch options finalbn and submitit set themselves: a --sbatch override would
# break the array's bookkeeping (its size, logs, requeue signal) or silently
# replace one of finalbn's own flags. Option -> the flag to use instead.
_SET_HERE = {
    "array": "--array-parallelism or --trials-per-task",
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "time": "--time",
    "cpus-per-task": "--cpus-per-trial",
    "gpus-per-task": "--gpus-per-trial",
    "job-name": "",
    "output": "",
    "error": "",
    "open-mode": "",
    "signal": "",
    "requeue": "",
    "no-requeue": "",
    # A command, not an option.
    "wrap": "",
}
# Leave a task time for the trial in progress to reach an epoch boundary.
_TASK_TIME_FILL = 0.5


@dataclass(frozen=True)
class SlurmOptions:
    """The Slurm side of a sweep; its sbatch values are checked when it is made.

    The comments are the help of the sweep command's flags, generated from these fields (finalbn.sweep.cli).
    """

    # partition (default: the cluster's default)
    partition: str | None = None
    # time limit per array task, in Slurm's forms: minutes, HH:MM:SS or D-HH:MM:SS (default 60 min)
    time_minutes: int = 60
    # account to charge
    account: str | None = None
    # quality of service
    qos: str | None = None
    # array tasks at once, the %N of --array (default 64)
    array_parallelism: int = 64
    # trials per array task (default: fill half the time limit by the cost estimate, within MaxArraySize)
    trials_per_task: int | None = None
    # extra sbatch option, repeatable (e.g. --sbatch mem=16G --sbatch constraint=a100)
    extra: dict[str, str] = field(default_factory=dict)
    # follow the array until it is done, then tabulate
    wait: bool = False
    # Seconds between two looks at the array while waiting.
    poll_seconds: float = 10.0

    def __post_init__(self) -> None:
        for flag, number in (
            ("--array-parallelism", self.array_parallelism),
            ("--trials-per-task", self.trials_per_task),
        ):
            if number is not None and number < 1:
                raise UserError(f"{flag} {number}: use 1 or more")
        for flag, value in (("--partition", self.partition), ("--account", self.account), ("--qos", self.qos)):
            if value is not None:
                check_value(flag, value)
        for key, value in self.extra.items():
            _check_extra(key, value)


def _ascii_digits(text: str) -> bool:
    # isascii(): "²".isdigit() holds, but int() rejects it.
    return text.isascii() and text.isdigit()


def parse_time(text: str) -> int:
    """Slurm's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    # Spaces only: "90\n" is not a time.
    days, dash, clock = text.strip(" ").rpartition("-")
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
    """``--sbatch mem=16G`` pass-through pairs -> {"mem": "16G"}, each checked."""
    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.removeprefix("--")
        if not sep or not _OPTION.fullmatch(key):
            raise UserError(
                f"--sbatch {pair!r}: use KEY=VALUE with an sbatch long option (lower-case letters, digits, dashes), "
                "e.g. --sbatch mem=16G"
            )
        if key in extra:
            raise UserError(f"--sbatch {key} is given twice ({extra[key]!r}, {value!r}): give each sbatch option once")
        extra[key] = _check_extra(key, value)
    return extra


def _check_extra(key: str, value: str) -> str:
    if not _OPTION.fullmatch(key):
        raise UserError(f"--sbatch {key!r}: an sbatch long option is lower-case letters, digits and dashes, e.g. mem")
    if key in _SET_HERE:
        instead = _SET_HERE[key]
        fix = f"use {instead}" if instead else "drop it (submitit's logs, requeueing and result files rely on it)"
        raise UserError(f"--sbatch {key}={value!r}: finalbn sets --{key} itself; {fix}")
    return check_value(f"--sbatch {key}", value)


def check_value(flag: str, value: str) -> str:
    """A value written unquoted into an #SBATCH line: a name or a size, never a path or free text."""
    # fullmatch: "$" would also match before a final newline.
    if not _SAFE_VALUE.fullmatch(value):
        raise UserError(
            f"{flag} {value!r}: only letters, digits and _ . , : = / @ + % - are allowed in sbatch values; "
            "give it without spaces, quotes or control characters"
        )
    _refuse_hetjob(flag, value)
    return value


def check_path(flag: str, text: str) -> str:
    """A path (or the sweep name in it) that the script holds in ``#SBATCH --output/--error`` and on the srun line.

    submitit shell-quotes it in both places, and sbatch reads those quotes
    in its own #SBATCH parser, so spaces, quotes, ``$``, backticks and ``;``
    stay literal. What neither can carry is refused.
    """
    if not is_utf8(text):
        raise UserError(f"{flag} {shown_path(text)} is not UTF-8 text, as the sbatch script is: rename it")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise UserError(
            f"{flag} {text!r}: a control character cannot go into the sbatch script (a newline ends an #SBATCH "
            "line and starts a command); use a folder and name without one"
        )
    if "%" in text:
        raise UserError(
            f"{flag} {text!r}: Slurm reads % in output paths as a pattern (%j, %A); use a folder and name without %"
        )
    if "\\" in text:
        raise UserError(
            f"{flag} {text!r}: sbatch reads a backslash in an #SBATCH line as an escape, even in quotes; "
            "use a folder and name without \\"
        )
    _refuse_hetjob(flag, text)
    return text


def _refuse_hetjob(flag: str, text: str) -> None:
    """sbatch starts a heterogeneous job's next component at an #SBATCH line holding these words."""
    if (word := _HETJOB.search(text)) is not None:
        raise UserError(
            f"{flag} {text!r}: sbatch starts a heterogeneous job's next component at an #SBATCH line holding "
            f"{word.group()!r}; give it without that word"
        )


def check_results(out: Path) -> None:
    """``--out`` as the sbatch script will hold it (absolute), checked: before a dry run, a plan or a submission."""
    check_path("--out", str(out.resolve()))


def executor_parameters(options: SlurmOptions, sweep: SweepOptions, name: str) -> dict[str, object]:
    """submitit's Slurm parameters for a sweep's array (pure: the golden sbatch test renders them).

    ``options`` checked its values when it was made; ``SlurmBackend.launch`` checks the name.
    """
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
            params[key] = value
    return params


def sbatch_text(params: dict[str, object], folder: Path, tasks: int, python: str) -> str:
    """The sbatch script submitit writes for these parameters and an array of ``tasks``.

    The command is built as ``SlurmExecutor._submitit_command_str`` builds it
    (the executor itself needs srun on PATH), with ``python`` quoted as
    submitit quotes ``sys.executable``.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{shlex.quote(python)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
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

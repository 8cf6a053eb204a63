"""The Slurm backend's pure parts: time limits, pass-through flags, packing and
the sbatch script, the last checked against a committed golden file.

Regenerate the golden file after an intended change with
``FINALBN_UPDATE_GOLDEN=1 pytest tests/test_slurm_backend.py``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from finalbn.errors import UserError
from finalbn.launch.slurm import (
    SlurmOptions,
    SlurmState,
    Submission,
    check_value,
    executor_parameters,
    live_trials,
    pack,
    parse_extra,
    parse_time,
    sbatch_text,
    submit,
    task_states,
    trials_per_task,
)
from finalbn.sweep import SweepOptions

GOLDEN = Path(__file__).parent / "golden" / "slurm_paper.sbatch"


@pytest.mark.parametrize(
    "text, minutes",
    [("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-0", 1440), ("1-02:30", 1590), ("0-00:00:30", 1)],
)
def test_slurm_time_forms(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["soon", "0", "1:2:3:4", "-5", "1h"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(UserError, match="--time"):
        parse_time(text)


def test_sbatch_pass_through() -> None:
    assert parse_extra(["mem=16G", "--constraint=a100", "exclusive=user"]) == {
        "mem": "16G",
        "constraint": "a100",
        "exclusive": "user",
    }
    for bad in ("mem", "=4", "Mem=4", "mem=4 --wrap=x", "mail-user=a'b"):
        with pytest.raises(UserError):
            parse_extra([bad])


@pytest.mark.parametrize("value", ["gpu;rm -rf ~", "a b", "x\n#SBATCH --wrap=id", "$(id)", "`id`", "'q'"])
def test_values_that_could_reach_a_shell_are_refused(value: str) -> None:
    with pytest.raises(UserError, match="only letters, digits"):
        check_value("--partition", value)


def test_k_fills_half_the_time_limit_and_respects_max_array_size() -> None:
    # 430 trials of 2 min with 60-min tasks: 15 per task -> 29 tasks.
    assert trials_per_task(430, 120.0, 60, 1001) == 15
    # Tiny trials: one task could hold them all, so it does.
    assert trials_per_task(430, 1.0, 60, 1001) == 430
    # Long trials, small MaxArraySize: K grows so the array fits (tasks <= MaxArraySize - 1).
    assert trials_per_task(430, 4000.0, 60, 101) == 5
    assert len(pack(list(range(430)), 5)) == 86


def test_packing_keeps_grid_order() -> None:
    assert pack(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_the_sbatch_script_matches_the_golden_file() -> None:
    options = SlurmOptions(
        partition="gpu",
        time_minutes=parse_time("02:00:00"),
        account="lab-ml",
        qos="normal",
        array_parallelism=16,
        extra=parse_extra(["mem=32G", "constraint=h100"]),
    )
    sweep = SweepOptions(cpus_per_trial=4, gpus_per_trial=1)
    params = executor_parameters(options, sweep, "imbalance_ratio-paper")
    text = sbatch_text(params, Path("/shared/results/imbalance_ratio-paper/slurm"), 29, "/opt/venv/bin/python")
    if os.environ.get("FINALBN_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    # What the golden file says, in words: one array of 29 tasks, 16 at once, requeued on preemption.
    assert "#SBATCH --array=0-28%16" in text and "#SBATCH --requeue" in text
    assert "#SBATCH --gpus-per-task=1" in text and "#SBATCH --cpus-per-task=4" in text


def test_fractional_gpus_round_up_to_whole_gpus_per_task() -> None:
    params = executor_parameters(SlurmOptions(), SweepOptions(gpus_per_trial=0.25), "x")
    assert params["gpus_per_task"] == 1
    assert "gpus_per_task" not in executor_parameters(SlurmOptions(), SweepOptions(), "x")


def test_live_trials_are_those_of_unfinished_tasks() -> None:
    submitted = datetime(2026, 1, 1, 12, 0, 0)
    state = SlurmState("s", [Submission("7", [["a", "b"], ["c"], ["d"]], submitted.isoformat())])
    states = {"7_0": "COMPLETED", "7_1": "RUNNING", "7_2": "UNKNOWN"}
    # Just submitted: a task sacct does not list yet is live, never submitted twice.
    assert live_trials(state, states, now=submitted + timedelta(seconds=5)) == {"c": "7_1", "d": "7_2"}
    # A day later a task sacct still does not know is gone; its trial may be resubmitted.
    assert live_trials(state, states, now=submitted + timedelta(days=1)) == {"c": "7_1"}


def test_a_single_task_submission_is_looked_up_as_the_plain_job_submitit_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # submitit submits one task without --array, so sacct lists it as JOBID, not JOBID_0; read as
    # JOBID_0 it stayed UNKNOWN, hence "live" for 10 minutes and then "gone" while it still ran.
    sacct = tmp_path / "bin" / "sacct"
    sacct.parent.mkdir()
    rows = ["JobID|State|NodeList", "910001|RUNNING|n1", "910001.batch|RUNNING|n1", "910002_0|COMPLETED|n1"]
    sacct.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(f"'{row}'" for row in rows) + "\n")
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{sacct.parent}:{os.environ['PATH']}")
    now = datetime.now().isoformat()
    state = SlurmState("s", [Submission("910001", [["a"]], now), Submission("910002", [["b"], ["c"]], now)])
    assert task_states(state, tmp_path) == {"910001_0": "RUNNING", "910002_0": "COMPLETED", "910002_1": "UNKNOWN"}


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = SlurmState("s", [Submission("7", [["a"], ["b"]], "2026-01-01T00:00:00")])
    state.write(tmp_path / "state.json")
    assert SlurmState.load(tmp_path / "state.json", "s") == state
    assert SlurmState.load(tmp_path / "absent.json", "s") == SlurmState("s")


def test_no_slurm_client_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="scontrol not found: --backend slurm runs on a Slurm login node"):
        submit.max_array_size()

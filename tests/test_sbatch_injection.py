"""What reaches a Slurm batch script stays literal, or is refused in one line before anything is written.

No Slurm daemons: the Slurm executor's ``submit`` runs for real through submitit, with
stand-ins for the Slurm client on PATH. ``sbatch`` keeps the script submitit
wrote and answers a job id; ``srun``, when the script's body then runs under
bash as slurmd would run it, records the arguments it was given. The
``#SBATCH`` lines are read by the rules of sbatch's own parser
(:func:`sbatch_arguments`), since sbatch, not a shell, reads them.
"""

from __future__ import annotations

import pickle
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from backends import slurm

from finalbn.errors import UserError
from finalbn.launch.base import Launch
from finalbn.launch.slurm import SlurmOptions, executor_parameters, sbatch_text
from finalbn.sweep import SweepOptions
from finalbn.sweep.cli import run_script
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.plan import plan
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import NullTracker
from finalbn.train.presets import EMBEDDED_MNIST

JOB_ID = "4242"
# Each would run a command if the script let a shell read it unquoted; PWNED* files show it.
HOSTILE = (
    "two  spaces",
    "$HOME",
    "`touch PWNED1`",
    "$(touch PWNED2)",
    "x; touch PWNED3",
    "x && touch PWNED4 | cat",
    "it's",
    '"double"',
    "#hash",
    "*?[a]~!{b,c}",
    "caf\u00e9 \u4e2d",
)
PWNED = ("PWNED1", "PWNED2", "PWNED3", "PWNED4")


def sbatch_arguments(script: str) -> list[str]:
    """The arguments sbatch reads from a script's #SBATCH lines, by the rules of its parser (Slurm's
    src/sbatch/opt.c, _opt_batch_script and _get_argument): lines up to the first command; on each,
    words split at white space, quotes (' or ") group, a backslash escapes the next character even
    inside quotes, and an unquoted # ends the line. A line holding hetjob or packjob would start a
    heterogeneous job's next component, which no finalbn script may do."""
    arguments = []
    for line in script.split("\n"):
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.lstrip().startswith("#"):
                break
            continue
        assert "hetjob" not in line.lower() and "packjob" not in line.lower(), line
        word, quote, escaped, started = "", "", False, False
        for char in line.removeprefix("#SBATCH") + " ":
            if escaped:
                word, escaped = word + char, False
            elif char == "\\":
                escaped = started = True
            elif quote:
                if char == quote:
                    quote = ""
                else:
                    word += char
            elif char in "'\"":
                quote, started = char, True
            elif char == "#":
                break
            elif char.isspace():
                if started or word:
                    arguments.append(word)
                word, started = "", False
            else:
                word, started = word + char, True
        assert not quote, f"sbatch stops at an unmatched {quote} in {line!r}"
    return arguments


@pytest.fixture
def slurm_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for scontrol, sbatch and srun on PATH; what they keep lands in the returned folder."""
    kept = tmp_path / "client"
    bin_dir = kept / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "scontrol": "echo 'MaxArraySize            = 1001'",
        "sbatch": f'cp -- "$1" {shlex.quote(str(kept / "submitted.sh"))}\necho "Submitted batch job {JOB_ID}"',
        # NUL-separated: any argument, newlines included, comes back as it was given.
        "srun": f"printf '%s\\0' \"$@\" > {shlex.quote(str(kept / 'srun.argv'))}",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return kept


def run_body(script: Path, client: Path, cwd: Path) -> list[str]:
    """Run the batch script as slurmd does (bash; the #SBATCH lines are comments to it): srun's arguments."""
    cwd.mkdir(exist_ok=True)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=cwd, timeout=30)
    assert done.returncode == 0, done.stderr
    return (client / "srun.argv").read_bytes().decode().split("\0")[:-1]


def one_trial_spec(name: str) -> SweepSpec:
    return SweepSpec(name=name, base=EMBEDDED_MNIST, axes=(Axis("train.seed", (0,), role="nuisance"),))


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> TrialJob:
    """A job as the planner makes it; submission reads none of it but what it pickles for the task."""
    [job] = plan(one_trial_spec("planned"), tmp_path_factory.mktemp("plan") / "planned", "0" * 40)
    return job


def test_a_hostile_results_path_and_sweep_name_stay_literal_in_the_script(
    slurm_client: Path, tmp_path: Path, planned: TrialJob
) -> None:
    out = tmp_path / "out" / " ".join(HOSTILE)
    name = "sweep $(touch PWNED2); touch PWNED3"
    spec = one_trial_spec(name)
    folder = out.resolve() / name
    # --data never reaches the script (it travels in submitit's pickle), so it may hold anything a folder can.
    data_root = str(tmp_path / "data\ntouch PWNED1 $(touch PWNED2)")
    trial = replace(planned.trial, config=planned.trial.config.replace(data={"root": data_root}))
    # Two tasks: submitit submits one task as a plain job, two or more as an array (as sweeps are).
    jobs = [replace(planned, trial=trial, trial_id=t, folder=folder / "trials" / t) for t in ("t0", "t1")]

    # Detached (no --wait): the handle never reports an event.
    launch = Launch(spec, SweepOptions(out=out), progress=None, tracker=NullTracker())
    handle = slurm(SlurmOptions(partition="debug", trials_per_task=1)).executor(launch).submit(jobs)

    assert handle.detached
    slurm_dir = folder / "slurm"
    script = slurm_client / "submitted.sh"
    text = script.read_text()
    arguments = sbatch_arguments(text)
    assert f"--output={slurm_dir}/%A_%a_0_log.out" in arguments
    assert f"--error={slurm_dir}/%A_%a_0_log.err" in arguments
    assert f"--job-name=finalbn-{name}" in arguments
    # One option per #SBATCH line, and no line the values added.
    assert len(arguments) == text.count("#SBATCH") == len(set(arguments))
    assert data_root not in text and "data\n" not in text

    cwd = tmp_path / "cwd"
    argv = run_body(script, slurm_client, cwd)
    assert argv == [
        "--unbuffered",
        "--output",
        f"{slurm_dir}/%A_%a_%t_log.out",
        "--error",
        f"{slurm_dir}/%A_%a_%t_log.err",
        sys.executable,
        "-u",
        "-m",
        "submitit.core._submit",
        str(slurm_dir),
    ]
    assert not [marker for marker in PWNED if (cwd / marker).exists() or (tmp_path / marker).exists()]
    # The task gets the data root as it was given.
    [pickled] = slurm_dir.glob(f"{JOB_ID}_0_submitted.pkl")
    submission = pickle.loads(pickled.read_bytes())
    assert submission.args[0][0].trial.config.data.root == data_root


@pytest.mark.parametrize("component", HOSTILE)
def test_each_hostile_path_and_python_reach_srun_as_one_literal_argument(
    slurm_client: Path, tmp_path: Path, component: str
) -> None:
    folder = tmp_path / component / "slurm"
    python = str(tmp_path / component / "bin" / "python")
    params = executor_parameters(SlurmOptions(), SweepOptions(), "s")
    script = tmp_path / "script.sh"
    script.write_text(sbatch_text(params, folder, 3, python))
    assert f"--output={folder}/%A_%a_0_log.out" in sbatch_arguments(script.read_text())

    cwd = tmp_path / "cwd"
    argv = run_body(script, slurm_client, cwd)
    assert argv[2] == f"{folder}/%A_%a_%t_log.out" and argv[5] == python and argv[-1] == str(folder)
    assert not [marker for marker in PWNED if (cwd / marker).exists()]


def test_unchecked_a_newline_in_the_path_runs_a_command_and_breaks_the_directives(tmp_path: Path) -> None:
    """What the checks close, and proof that the harness above sees it: sbatch_text takes any folder."""
    folder = tmp_path / "results\ntouch PWNED1\n#" / "slurm"
    script = tmp_path / "script.sh"
    script.write_text(sbatch_text(executor_parameters(SlurmOptions(), SweepOptions(), "s"), folder, 3, "true"))
    with pytest.raises(AssertionError, match="unmatched '"):
        sbatch_arguments(script.read_text())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # srun is absent here: the line after the directives fails, the injected one before it has run.
    subprocess.run(["bash", str(script)], capture_output=True, cwd=cwd, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert (cwd / "PWNED1").exists()


SWEEP = ["--preset", "smoke", "--backend", "slurm", "--dry-run"]
# (flag and value, what the one line says). Each is refused by the dry run, before Slurm is asked anything.
REFUSED = [
    (["--out", "results\ntouch PWNED"], "results\\ntouch PWNED': a control character cannot go into"),
    (["--out", "results\rx"], "a control character cannot go into the sbatch script"),
    (["--out", "res%jults"], "Slurm reads % in output paths as a pattern"),
    (["--out", "back\\slash"], "sbatch reads a backslash in an #SBATCH line as an escape"),
    (["--out", "my-hetjob-results"], "heterogeneous job"),
    (["--partition", "gpu\n#SBATCH --wrap=id"], "--partition 'gpu\\n#SBATCH --wrap=id': only letters, digits"),
    (["--account", "lab\x00"], "--account 'lab\\x00': only letters, digits"),
    (["--qos", "normal\x1b[2J"], "--qos 'normal\\x1b[2J': only letters, digits"),
    (["--sbatch", "mem=16G\ntouch PWNED"], "--sbatch mem '16G\\ntouch PWNED': only letters, digits"),
    (["--sbatch", "comment=packjob"], "holding 'packjob'"),
    (["--sbatch", "mem\n=16G"], "use KEY=VALUE with an sbatch long option"),
    (["--sbatch", "Mem=16G"], "use KEY=VALUE with an sbatch long option"),
    (["--sbatch", "mem=1G", "--sbatch", "mem=2G"], "--sbatch mem is given twice ('1G', '2G')"),
    (["--sbatch", "output=/tmp/x"], "finalbn sets --output itself; drop it"),
    (["--sbatch", "wrap=id"], "finalbn sets --wrap itself; drop it"),
    (["--sbatch", "time=5"], "finalbn sets --time itself; use --time"),
    (["--time", "90\n"], "--time '90\\n' is not a Slurm time"),
]


@pytest.mark.parametrize("flags, needle", REFUSED, ids=[repr(flags[1]) for flags, _ in REFUSED])
def test_a_value_the_script_cannot_hold_is_refused_by_the_dry_run(
    flags: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = run_script("imbalance_ratio", None, [*SWEEP, *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert needle in line and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a\nb", "a%jb", "a\\b", "x-HetJob", "caf\udce9"])
def test_a_sweep_name_the_script_cannot_hold_is_refused_before_anything_is_written(
    slurm_client: Path, tmp_path: Path, planned: TrialJob, name: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="^sweep name ") as refused:
        launch = Launch(one_trial_spec(name), SweepOptions(out=out), progress=None, tracker=NullTracker())
        slurm(SlurmOptions()).executor(launch).submit([planned])
    assert "\n" not in str(refused.value)
    assert not out.exists() and not (slurm_client / "submitted.sh").exists()

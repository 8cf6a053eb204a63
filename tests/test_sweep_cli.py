"""The sweep scripts as a user runs them: dry runs, errors, one smoke sweep end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def script(name: str, *args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
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
def test_paper_dry_run_states_the_grid(name: str, counts: list[str], tmp_path: Path) -> None:
    done = script(name, "--preset", "paper", "--data", str(tmp_path), "--dry-run")
    assert done.returncode == 0, done.stderr
    for text in counts:
        assert text in done.stdout
    assert "estimated cost on gpu" in done.stdout and "estimated cost on cpu" in done.stdout
    assert not (REPO / "results").exists() or not any((REPO / "results").glob(f"{name}-paper*"))


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

"""docs/reproduction.md's generator on real (smoke-sized) sweeps: findings recomputed, verdicts by their rule."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from finalbn.analysis.reproduction import PARTS, Interval, write_reproduction
from finalbn.analysis.stats import paired_differences
from finalbn.sweep_cli import run_script

SMOKE = ["--preset", "smoke", "--backend", "serial", "--no-tracking"]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The headline and bn_removal sweeps at the smoke preset (embedded MNIST): real trials, seconds each."""
    results = tmp_path_factory.mktemp("results")
    for experiment in ("headline", "bn_removal"):
        assert run_script(experiment, None, [*SMOKE, "--out", str(results)]) == 0
    return results


def test_interval_verdicts_follow_the_sign_of_the_interval() -> None:
    assert Interval(0.2, 0.1, 0.3, 5).direction() == "confirmed"
    assert Interval(-0.2, -0.3, -0.1, 5).direction() == "contradicted"
    assert Interval(0.05, -0.1, 0.2, 5).direction() == "inconclusive"
    assert Interval(float("nan"), float("nan"), float("nan"), 1).direction() == "inconclusive"
    assert Interval.of([0.1, 0.3]).mean == pytest.approx(0.2)
    assert Interval(0.5, 0.4, 0.6, 3).contains(0.45) == "yes"
    assert Interval(0.5, 0.4, 0.6, 3).contains(0.95) == "no"


def test_document_recomputes_each_finding_and_marks_missing_sweeps_not_run(smoke_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "reproduction.md"
    write_reproduction(smoke_results, out, preset="smoke")
    text = out.read_text()
    assert "Table 4.2, Apple" in text and "Table 4.6, Apple" in text
    # Sweeps that did not run are said so, never filled in.
    for experiment in set(PARTS) - {"headline", "bn_removal"}:
        assert f"{experiment}: not run" in text
    assert text.count("| not run |") >= 3

    # The Table 4.2 gain row is the paired final BN - plain difference of the sweep's own trials.
    trials = pl.read_parquet(smoke_results / "headline-smoke" / "trials.parquet")
    pairs = paired_differences(trials, "f1_minority", "axis.variant", "final_BN", "plain", pair_on=["train.seed"])
    gain = Interval.of(pairs["difference"])
    row = next(line for line in text.splitlines() if "raises minority F1 over the plain network" in line)
    assert gain.text(signed=True) in row
    assert f"| {gain.direction()} |" in row

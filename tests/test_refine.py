"""--refine: bisecting the threshold's bracket in rounds of ordinary trials, resumed from sweep.json."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from backends import serial

from finalbn.errors import UserError
from finalbn.sweep.cli import run_script
from finalbn.sweep.experiments import build_sweeps
from finalbn.sweep.options import SweepOptions
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.refine import MINORITY, Refinement, check, next_values, refine_sweep, widened
from finalbn.sweep.spec import SweepSpec, own_name
from finalbn.tracking import NullTracker


def smoke(seeds: int = 1) -> SweepSpec:
    """The imbalance smoke sweep (minority 1 and 4), one seed: 4 trials, 2 per minority value, in the folder
    the command line gives it (``--seeds 1``: its own)."""
    return own_name(apply(build_sweeps("imbalance_ratio", "smoke", None)[0], Overrides(seeds=seeds)))


def minority_values(spec: SweepSpec) -> tuple[int, ...]:
    return next(a for a in spec.axes if a.name == MINORITY).values


def upper_bracket(folder: Path, spec: SweepSpec) -> list[tuple[int, int]]:
    """A threshold always between the two largest minority counts the finished trials hold."""
    counts = sorted(set(pl.read_parquet(folder / "trials.parquet")[MINORITY].to_list()))
    return [(counts[-2], counts[-1])]


def test_next_values_bisect_on_log_ratio_within_factor_and_budget() -> None:
    spec = smoke()
    wide = Refinement(factor=1.5, budget=100)
    # Geometric midpoint of 1 and 16: 4 is taken, of 4 and 16: 8.
    assert next_values(widened(spec, [16]), [(4, 16)], wide) == ([8], "")
    assert next_values(spec, [(1, 4)], wide) == ([2], "")
    # Narrower than the factor, adjacent integers, no bracket, no budget left: nothing added, and why.
    assert next_values(spec, [(4, 5)], wide)[1] == "every bracket is narrower than a factor 1.5"
    assert "no whole number" in next_values(spec, [(1, 2)], Refinement(factor=1.1, budget=100))[1]
    assert "no threshold lies within" in next_values(spec, [], wide)[1]
    spent = widened(spec, [2])
    assert next_values(spent, [(2, 4)], Refinement(factor=1.5, budget=2)) == (
        [],
        "the next point would pass the budget of 2 trials (2 spent)",
    )


def test_refine_applies_to_the_imbalance_sweep_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="applies to sweeps/imbalance_ratio.py only"):
        check(build_sweeps("batch_size", "smoke", None)[0], Refinement(factor=1.5, budget=8))
    with pytest.raises(UserError, match="--refine-factor 1"):
        check(smoke(), Refinement(factor=1.0, budget=8))
    assert run_script("batch_size", None, ["--preset", "smoke", "--refine", "--dry-run"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--refine bisects the imbalance threshold" in error


@pytest.mark.slow
def test_a_refined_sweep_adds_trials_and_a_rerun_trains_nothing_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = SweepOptions(out=tmp_path)
    refinement = Refinement(factor=1.5, budget=100)
    report = refine_sweep(smoke(), options, serial(), NullTracker(), refinement, upper_bracket)
    # Bracket 1-4 -> midpoint 2; 2-4 -> 3 (round(sqrt 8)); 3-4 is narrower than 1.5: stop.
    assert minority_values(report.spec) == (1, 2, 3, 4) and report.spec.refined == (2, 3)
    assert len(report.finished) == 8 and report.failed == [] and report.total == 8
    assert report.notes[-1] == "--refine stopped: every bracket is narrower than a factor 1.5"
    # Refined points are trials like any other: in the record's grid and the tables, one folder each.
    record = SweepRecord.read(report.folder)
    assert record is not None and record.refined == [2, 3] and len(record.trials) == 8
    assert record.spec().refined == (2, 3) and minority_values(record.spec()) == (1, 2, 3, 4)
    assert pl.read_parquet(report.folder / "trials.parquet").height == 8
    assert len(list((report.folder / "trials").iterdir())) == 8
    # The same command again: the recorded points are reused, everything is skipped, nothing new is added.
    again = refine_sweep(smoke(), options, serial(), NullTracker(), refinement, upper_bracket)
    assert again.finished == [] and again.skipped == 8 and again.spec.refined == (2, 3)
    # From the command line, with the analysis' own brackets: resumes, trains nothing within the spent budget.
    capsys.readouterr()
    argv = ["--preset", "smoke", "--seeds", "1", "--backend", "serial", "--no-tracking", "--out", str(tmp_path)]
    assert run_script("imbalance_ratio", None, [*argv, "--refine", "--refine-budget", "4"]) == 0
    out = capsys.readouterr().out
    assert "8 trials, 8 finished earlier (skipped), 0 to run" in out and "0 trained, 8 skipped" in out
    assert "--refine stopped: " in out and "Imbalance threshold: f1_minority" in out

"""Analysis by declared contrast: the sweep's declaration, not the analysis code, says what is compared."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl
import pytest

from finalbn.analysis import tables as tb
from finalbn.analysis.contrasts import NO_CONTRAST, PREFIX, derive, paired
from finalbn.analysis.grid import Plan
from finalbn.analysis.report import build_report
from finalbn.analysis.sweep_data import SweepData
from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.sweep.spec import REMOVED, Axis, Contrast, Derived, SweepSpec

ANALYSIS = Path(__file__).resolve().parents[1] / "finalbn" / "analysis"
LABELS = ("plain", "WL", "final_BN", "focal")
LEVEL = {"plain": 0.3, "WL": 0.8, "final_BN": 0.95, "focal": 0.6}


def variant_table(seeds: int = 3) -> pl.DataFrame:
    rows = []
    for plant, variant, seed in itertools.product(("Apple", "Pepper"), LABELS, range(seeds)):
        value = LEVEL[variant] + 0.01 * seed
        rows.append(
            {
                "trial_id": f"{plant}{variant}{seed}",
                "data.source": "plantvillage",
                "data.plant": plant,
                "axis.data.plant": plant,
                "axis.variant": variant,
                "train.seed": seed,
                "f1_minority": value,
                "f1_majority": value,
            }
        )
    return pl.DataFrame(rows)


def variant_spec(contrasts: tuple[Contrast, ...]) -> SweepSpec:
    variants = Axis("variant", tuple({} for _ in LABELS), labels=LABELS)
    return SweepSpec("headline-test", TrialConfig(), (variants,), analysis="headline", contrasts=contrasts)


def test_every_declared_contrast_and_a_fourth_arm_get_their_rows() -> None:
    contrasts = (Contrast("variant", "final_BN", "plain"), Contrast("variant", "focal", "WL"))
    table = tb.table_4_2(variant_table(), variant_spec(contrasts))
    apple = table.filter((pl.col("plant") == "Apple") & pl.col("class").str.contains("minority"))
    # The arms in declared order, the fourth one too, then one row per declared contrast.
    assert apple["column"].to_list() == [*LABELS, "final_BN - plain", "focal - WL"]
    focal_over_wl = apple.filter(pl.col("column") == "focal - WL").row(0, named=True)
    assert focal_over_wl["measured"] == pytest.approx(0.6 - 0.8) and focal_over_wl["runs"] == 3
    # The thesis has no focal column: no thesis number is made up for it.
    assert focal_over_wl["thesis"] is None
    gain = apple.filter(pl.col("column") == "final_BN - plain").row(0, named=True)
    assert gain["measured"] == pytest.approx(0.65) and gain["thesis"] == pytest.approx(0.9562 - 0.2942)


def test_pairs_are_made_within_every_other_axis_and_seed() -> None:
    frame = variant_table()
    pairs = paired(frame, "f1_minority", Contrast("variant", "final_BN", "plain"))
    # Two plants x three seeds: never a pair across plants.
    assert pairs.height == 6 and set(pairs["axis.data.plant"]) == {"Apple", "Pepper"}
    assert pairs["difference"].to_list() == pytest.approx([0.65] * 6)


def test_a_derived_arm_reads_its_prefixed_metrics_and_says_what_it_left_out() -> None:
    frame = pl.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "axis.model.final_norm": ["bn", "bn", "bn", "none"],
            "model.final_norm": ["bn", "bn", "bn", "none"],
            "train.seed": [0, 1, 2, 0],
            "f1_minority": [0.9, 0.8, 0.85, 0.3],
            "nobn_f1_minority": [0.7, 0.6, None, None],
            "thr_f1_minority": [0.95, 0.9, 0.9, 0.5],
        }
    )
    threshold = Derived("model.final_norm", "bn+threshold", "bn", "thr_")
    arms = derive(frame, (REMOVED, threshold))
    removed = arms.trials.filter(pl.col("axis.model.final_norm") == "removed").sort("trial_id")
    assert removed["trial_id"].to_list() == ["a", "b"]
    assert removed["f1_minority"].to_list() == [0.7, 0.6]
    # The field axis' config column carries the arm too; another arm's metrics are not this arm's.
    assert removed["model.final_norm"].to_list() == ["removed", "removed"]
    assert removed["thr_f1_minority"].null_count() == 2 and removed[PREFIX].to_list() == ["nobn_", "nobn_"]
    assert arms.dropped == {"removed": 1, "bn+threshold": 0}
    assert arms.notes() == ["derived arm removed: 1 trial(s) left out, they have no f1_minority under its prefix"]
    # The trained rows are unchanged and paired with the derived ones trial by trial.
    pairs = paired(arms.trials, "f1_minority", Contrast("model.final_norm", "bn", "removed"))
    assert pairs["difference"].to_list() == pytest.approx([0.2, 0.2])


def test_a_derived_label_that_is_also_trained_is_a_user_error() -> None:
    frame = pl.DataFrame({"trial_id": ["a"], "axis.m": ["bn"], "f1_minority": [0.9], "x_f1_minority": [0.1]})
    with pytest.raises(UserError, match="also a trained label"):
        derive(frame, (Derived("m", "bn", "bn", "x_"),))


def test_without_a_declared_contrast_nothing_is_guessed(tmp_path: Path) -> None:
    spec = variant_spec(())
    with pytest.raises(UserError, match="no contrast declared"):
        tb.table_4_2(variant_table(), spec)
    data = SweepData("headline-test", variant_table(), None, "synthetic table", plan=Plan(spec, "headline"))
    result = build_report(data, tmp_path, gradcam=False, progress=False)
    assert result.headline == f"Table 4.2: {NO_CONTRAST}."
    for what in ("Table 4.2", "Paired contrasts", "Figures 4.3, 4.4, 4.8, 4.9"):
        assert f"{what} skipped: {NO_CONTRAST}" in result.notes
    assert "final_BN - plain" not in result.html.read_text()


def test_the_report_pairs_every_declared_contrast(tmp_path: Path) -> None:
    contrasts = (Contrast("variant", "final_BN", "plain"), Contrast("variant", "focal", "WL"))
    data = SweepData("headline-test", variant_table(), None, "synthetic table", plan=Plan(variant_spec(contrasts)))
    result = build_report(data, tmp_path, gradcam=False, progress=False)
    pairs = pl.read_csv(tmp_path / "tables" / "paired_differences.csv")
    assert sorted(set(pairs["contrast"])) == ["final_BN vs plain", "focal vs WL"]
    assert "Declared contrasts, paired by seed" in result.html.read_text()


def test_no_analysis_module_names_the_final_norm_axis() -> None:
    # The axis a comparison is on comes from the sweep's declaration, never from the analysis code.
    naming = [path.name for path in ANALYSIS.glob("*.py") if "model.final_norm" in path.read_text()]
    assert naming == []

"""The headline a person reads: one short sentence per finding, the seed caveat first, never self-contradictory;
and a report on the user's own class folders names their classes and data, not the thesis'.

Reports here are built from synthetic tables with the columns a real sweep writes (test_analysis.py's
builders), through ``build_report``: the same code path as the end of a sweep.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_analysis import TRUE_EFFECTS, batch_trials, factorial_trials, imbalance_trials

from finalbn.analysis.grid import Plan
from finalbn.analysis.headline import FEW_SEEDS, MAX_CHARS
from finalbn.analysis.imbalance import imbalance_headline
from finalbn.analysis.report import ReportResult, build_report
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.threshold import thresholds
from finalbn.config import TrialConfig
from finalbn.sweep.spec import REMOVED, Contrast, SweepSpec

FOLDER = {"data.source": "folder", "data.root": "/home/me/digits", "data.minority": "three", "data.majority": "eight"}


BN = Contrast("model.final_norm", "bn", "none")
# The contrasts and derived arms each kind of sweep declares (finalbn.sweep.experiments); the others declare none.
DECLARED = {
    "imbalance_ratio": ((BN,), (REMOVED,)),
    "learning_rate": ((BN,), (REMOVED,)),
    "bn_removal": ((BN, Contrast(BN.axis, "bn", "removed"), Contrast(BN.axis, "removed", "none")), (REMOVED,)),
    "headline": ((Contrast("variant", "final_BN", "plain"), Contrast("variant", "final_BN", "WL")), ()),
}


def report(trials: pl.DataFrame, analysis: str, out: Path, progress: bool = False) -> ReportResult:
    """The report of a sweep whose record declares ``analysis`` (and its contrasts), from its table alone."""
    contrasts, derived = DECLARED.get(analysis, ((), ()))
    spec = SweepSpec(f"{analysis}-test", TrialConfig(), (), analysis=analysis, contrasts=contrasts, derived=derived)
    data = SweepData(f"{analysis}-test", trials, None, "synthetic table", plan=Plan(spec, analysis))
    return build_report(data, out, gradcam=False, progress=progress)


def sentences(result: ReportResult) -> list[str]:
    lines = result.headline.split("\n")
    too_long = [line for line in lines if len(line) > MAX_CHARS]
    assert not too_long, f"headline sentences over {MAX_CHARS} characters: {too_long}"
    return lines


# ------------------------------------------------------------------ imbalance: the contradiction


def test_two_seeds_lead_with_the_caveat_and_claim_no_resolved_gain() -> None:
    # A small gain at every ratio, two seeds of little noise: every 2-seed CI excludes zero (a 50% interval).
    found = thresholds(imbalance_trials(lambda r: 0.03, seeds=2, noise=0.004), BN)
    assert found[0].status == "beyond" and found[0].seeds == 2
    lines = imbalance_headline(found).sentences()
    needed = max(FEW_SEEDS, found[0].seeds_needed)
    assert lines[0] == f"Imbalance threshold: 2 seeds per ratio: too few to locate a threshold; {needed} needed."
    assert not any("resolved" in line or "level-off" in line for line in lines)
    assert lines[1].startswith("Imbalance threshold: f1_minority: mean gain +0.0")
    assert all(len(line) <= MAX_CHARS for line in lines)
    # The long form leads with the same caveat and reads the intervals as the seeds' spread.
    text = found[0].describe()
    assert text.startswith("f1_minority: 2 seed(s) per ratio (< 5): the intervals are unreliable")
    assert "resolved at every" not in text and "as measured, the 95% CIs lie above 0 at every swept ratio" in text


def test_enough_seeds_state_the_threshold_without_a_caveat() -> None:
    found = thresholds(imbalance_trials(lambda r: 0.4 if r <= 0.04 else 0.0, seeds=6), BN)
    lines = imbalance_headline(found).sentences()
    assert lines[0].startswith("Imbalance threshold: f1_minority: threshold between swept ratios 0.04 and 0.045")
    assert lines[0].endswith("; thesis: ~0.1.") and "resolved up to 0.04" in lines[0]
    assert not any("too few" in line or "needed" in line for line in lines)
    assert all(len(line) <= MAX_CHARS for line in lines)


def test_the_report_prints_one_sentence_a_line_and_the_html_shows_each(tmp_path: Path) -> None:
    trials = imbalance_trials(lambda r: 0.03, seeds=2, noise=0.004)
    result = report(trials.with_columns(pl.lit("mnist").alias("data.source")), "imbalance_ratio", tmp_path)
    lines = sentences(result)
    assert lines[0].startswith("Imbalance threshold: 2 seeds per ratio: too few") and len(lines) == 3
    html = result.html.read_text()
    assert '<p class="headline">' + lines[0] + "<br>" in html
    assert f"**{lines[1]}**" in result.markdown.read_text()


# ------------------------------------------------------------------ every analysis, both seed counts


def with_axes(trials: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """The ``axis.*`` label columns the driver writes beside the config columns."""
    return trials.with_columns(pl.col(c).cast(pl.String).alias(f"axis.{c}") for c in columns)


def variant_trials(seeds: int, **data: str) -> pl.DataFrame:
    """The headline sweep: plain, WL, final BN per seed (one data set), minority F1 with a known order."""
    rng = np.random.default_rng(7)
    rows = []
    for variant, seed in itertools.product(("plain", "WL", "final_BN"), range(seeds)):
        value = {"plain": 0.3, "WL": 0.8, "final_BN": 0.95}[variant] + rng.normal(0, 0.01)
        rows.append(
            {
                "trial_id": f"{variant}{seed}",
                "data.source": "mnist",
                **data,
                "variant": variant,
                "train.seed": seed,
                "f1_minority": value,
                "f1_majority": value,
            }
        )
    return with_axes(pl.DataFrame(rows), "variant", "train.seed")


def removal_trials(seeds: int, **data: str) -> pl.DataFrame:
    rows = [
        {
            "trial_id": f"{norm}{seed}",
            "data.source": "mnist",
            **data,
            "model.final_norm": norm,
            "train.seed": seed,
            "f1_minority": 0.9 if norm == "bn" else 0.3,
            "f1_majority": 0.95,
            "nobn_f1_minority": 0.7 if norm == "bn" else None,
            "nobn_f1_majority": 0.9 if norm == "bn" else None,
        }
        for norm in ("none", "bn")
        for seed in range(seeds)
    ]
    return with_axes(pl.DataFrame(rows), "model.final_norm", "train.seed")


def rate_trials(seeds: int) -> pl.DataFrame:
    rng = np.random.default_rng(8)
    rows = [
        {
            "trial_id": f"{lr}{norm}{seed}",
            "train.lr": lr,
            "model.final_norm": norm,
            "train.seed": seed,
            "f1_minority": 0.5 + (0.3 if norm == "bn" else 0.0) * lr / 3e-3 + rng.normal(0, 0.01),
            "f1_majority": 0.9,
        }
        for lr, norm, seed in itertools.product((1e-4, 3e-4, 3e-3), ("bn", "none"), range(seeds))
    ]
    return with_axes(pl.DataFrame(rows), "train.lr", "model.final_norm", "train.seed")


def steps_batch_trials(seeds: int) -> pl.DataFrame:
    trials = batch_trials(seeds).with_columns(
        pl.lit(1000).alias("data.train_majority"),
        pl.lit(10).alias("data.train_minority"),
        pl.lit(10).alias("train.epochs"),
        pl.lit(0.9).alias("f1_majority"),
    )
    return with_axes(trials, "train.batch_size", "train.seed")


CASES = {
    "imbalance_ratio": lambda seeds: with_axes(
        imbalance_trials(lambda r: 0.05, seeds=seeds, noise=0.02), "data.train_minority", "model.final_norm"
    ),
    "batch_size": steps_batch_trials,
    "headline": variant_trials,
    "bn_removal": removal_trials,
    "learning_rate": rate_trials,
}


@pytest.mark.parametrize("seeds", [2, FEW_SEEDS])
@pytest.mark.parametrize("analysis", list(CASES))
def test_every_headline_is_short_sentences_with_the_caveat_first_only_when_seeds_are_few(
    analysis: str, seeds: int, tmp_path: Path
) -> None:
    lines = sentences(report(CASES[analysis](seeds), analysis, tmp_path))
    caveats = [line for line in lines if "too few" in line]
    if seeds < FEW_SEEDS:
        assert caveats == [lines[0]] and f"{seeds} seeds per " in lines[0] and lines[0].endswith(" needed.")
        # No claim that the caveat takes back: findings are means as measured.
        assert not any("resolved" in line or "distinguishable" in line or "[" in line for line in lines[1:])
    else:
        assert caveats == []


def test_the_factorial_headline_is_one_sentence_per_finding(tmp_path: Path) -> None:
    lines = sentences(report(factorial_trials(TRUE_EFFECTS), "factorial", tmp_path))
    assert lines[0].startswith("Factorial: largest effect on minority F1 (pooled): BN +0.3")
    assert lines[1].startswith("Factorial: best configuration BN+") and "averaged over plants" in lines[1]
    assert len(lines) == 2


def test_the_batch_headline_states_the_step_count_confound_on_its_own(tmp_path: Path) -> None:
    lines = sentences(report(steps_batch_trials(FEW_SEEDS), "batch_size", tmp_path))
    assert lines[0].startswith("Batch optimum: f1_minority: best of 16-512 is 64 (")
    assert "optimum between 32 and 128; worse at 32 and 128 (p < 0.05); thesis: 64." in lines[0]
    assert lines[1] == (
        "Batch optimum: step count confounded: batch 16 makes 630 optimizer steps, 512 makes 10 "
        "(set train.steps to hold them equal)."
    )


# ------------------------------------------------------------------ the user's own class folders


def test_a_folder_sweep_names_the_users_classes_and_data(tmp_path: Path) -> None:
    trials = variant_trials(FEW_SEEDS, **FOLDER).with_columns(
        pl.col("f1_minority").alias("f1_three"), pl.col("f1_majority").alias("f1_eight")
    )
    result = report(trials, "headline", tmp_path)
    [line] = sentences(result)
    assert line.startswith("Table 4.2: minority F1 on digits: three vs eight, mean over seeds: plain 0.")
    text = result.html.read_text() + result.markdown.read_text()
    assert "three (minority)" in text and "eight (majority)" in text
    for thesis_words in ("Unhealthy", "Healthy", "thesis Apple", "vs thesis", "plants", "(thesis)", "Δ"):
        assert thesis_words not in text and thesis_words not in line


def test_a_folder_imbalance_sweep_leaves_the_thesis_out_of_its_headline(tmp_path: Path) -> None:
    trials = CASES["imbalance_ratio"](FEW_SEEDS).with_columns(*[pl.lit(v).alias(k) for k, v in FOLDER.items()])
    lines = sentences(report(trials, "imbalance_ratio", tmp_path))
    assert not any("thesis" in line for line in lines)
    plantvillage = trials.with_columns(pl.lit("plantvillage").alias("data.source"))
    assert "; thesis: ~0.1" in sentences(report(plantvillage, "imbalance_ratio", tmp_path / "pv"))[0]


def test_a_plantvillage_table_keeps_the_thesis_names(tmp_path: Path) -> None:
    trials = variant_trials(FEW_SEEDS).with_columns(pl.lit("plantvillage").alias("data.source"))
    [line] = sentences(report(trials, "headline", tmp_path))
    assert line.startswith("Table 4.2: minority F1 (Unhealthy), mean over seeds: ")
    assert line.endswith("(thesis, Apple: plain 0.294, WL 0.795, final BN 0.956).")
    assert "Unhealthy (minority)" in result_text(tmp_path)


def result_text(folder: Path) -> str:
    return (folder / "report.md").read_text()


# ------------------------------------------------------------------ progress


def test_report_steps_are_named_as_they_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trials = CASES["bn_removal"](2)
    report(trials, "bn_removal", tmp_path, progress=True)
    shown = capsys.readouterr()
    # On stderr: stdout is the report's answer, for a reader or a pipe.
    lines = shown.err.splitlines()
    assert shown.out == ""
    assert lines[0] == "report bn_removal-test [1/6] provenance"
    assert lines[-1] == "report bn_removal-test [6/6] writing report.html and report.md"
    report(trials, "bn_removal", tmp_path / "quiet")
    assert capsys.readouterr().err == ""

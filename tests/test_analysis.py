"""The analysis on synthetic sweeps whose answer is known: change points, a batch optimum, factorial effects.

Synthetic tables have the columns a real sweep writes (config columns,
``axis.*`` labels, final metrics), so the same code paths run; the real
sweep end to end is in test_analysis_e2e.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from finalbn.analysis import factorial as fx
from finalbn.analysis import tables as tb
from finalbn.analysis.batch import batch_optimum
from finalbn.analysis.cli import report_main
from finalbn.analysis.load import from_folder, load_sweep
from finalbn.analysis.mlflow_source import from_mlflow
from finalbn.analysis.report import build_report, write_report
from finalbn.analysis.stats import (
    Bootstrap,
    aggregate,
    mean_ci,
    paired_differences,
    permutation_p,
    sign_flip_p,
    summarise_differences,
)
from finalbn.analysis.thesis import TABLE_4_2, TABLE_4_6, TABLE_4_7, TABLE_4_8
from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.sweep.experiments import FACTORS, TABLE_4_8_ROWS, _row_label
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.spec import REMOVED, Axis, Contrast, SweepSpec, flatten
from finalbn.tracking import TRIAL_TAG, log_report_files
from finalbn.tracking.layout import ERROR_TAG, HEADLINE_TAG, PARENT_TAG

MAJORITY = 1000
RATIOS = tuple(round(0.005 * k, 3) for k in range(1, 21))


# ------------------------------------------------------------------ builders


def imbalance_trials(gain, seeds: int = 5, noise: float = 0.01, rng_seed: int = 0, **extra: str) -> pl.DataFrame:
    """Minority F1 = base + gain(ratio) with final BN, base without; majority gains half as much."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for ratio, norm, seed in itertools.product(RATIOS, ("bn", "none"), range(seeds)):
        minority = round(ratio * MAJORITY)
        base = 0.3 + 6 * ratio
        lift = gain(ratio) if norm == "bn" else 0.0
        rows.append(
            {
                "trial_id": f"{minority}-{norm}-{seed}-{'-'.join(extra.values())}",
                "data.train_minority": minority,
                "data.train_majority": MAJORITY,
                "model.final_norm": norm,
                "train.seed": seed,
                "axis.data.train_minority": str(minority),
                "axis.model.final_norm": norm,
                "axis.train.seed": str(seed),
                **{f"axis.{k}": v for k, v in extra.items()},
                **dict(extra),
                "f1_minority": base + lift + rng.normal(0, noise),
                "f1_majority": 0.7 + lift / 2 + rng.normal(0, noise),
            }
        )
    return pl.DataFrame(rows)


def hinge(end: float, peak: float = 0.6):
    """Gain falling linearly from ``peak`` at the smallest ratio to 0 at ``end``, flat 0 beyond."""
    first = RATIOS[0]
    return lambda r: peak * max(0.0, (end - r) / (end - first))


def factorial_trials(effects: dict[tuple[str, ...], float], noise: float = 0.01, plants=("Apple", "Pepper", "Tomato")):
    """One run per configuration of the 2^6 grid per plant; F1 = 0.6 + plant offset + sum effect/2 * codes."""
    rng = np.random.default_rng(3)
    offsets = dict(zip(plants, (0.0, 0.05, -0.05), strict=False))
    rows = []
    for plant in plants:
        for bits in itertools.product((1, -1), repeat=len(FACTORS)):
            code = dict(zip(FACTORS, bits, strict=True))
            row = {"data.source": "plantvillage", "data.plant": plant, "train.seed": 0}
            for name, (column, on, off) in FACTORS.items():
                row[column] = on if code[name] == 1 else off
            value = 0.6 + offsets[plant] + sum(e / 2 * math.prod(code[n] for n in t) for t, e in effects.items())
            row["f1_minority"] = value + rng.normal(0, noise)
            row["f1_majority"] = 0.8 + rng.normal(0, noise)
            row["trial_id"] = f"{plant}-{''.join('1' if b == 1 else '0' for b in bits)}"
            rows.append(row)
    return pl.DataFrame(rows)


# --------------------------------------------------------------- statistics


def test_bootstrap_interval_is_seeded_and_ignores_row_order() -> None:
    values = np.random.default_rng(1).normal(0.8, 0.05, size=12)
    first = mean_ci(values)
    assert first == mean_ci(values[::-1]) == mean_ci(values.tolist())
    assert first != mean_ci(values, Bootstrap(seed=7))
    assert first[0] < values.mean() < first[1]


def test_bootstrap_interval_has_the_normal_width_on_a_large_sample() -> None:
    values = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    low, high = mean_ci(values)
    # 95% normal interval of a mean: 2 x 1.96 x sd / sqrt(n).
    expected = 2 * 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert abs((high - low) - expected) / expected < 0.15


def test_aggregate_gives_mean_std_and_n_per_configuration() -> None:
    frame = pl.DataFrame({"cfg": ["a", "a", "a", "b"], "f1": [0.1, 0.2, 0.3, 0.9]})
    table = aggregate(frame, ["cfg"], ["f1"]).sort("cfg")
    assert table["n"].to_list() == [3, 1]
    assert table["f1_mean"].to_list() == pytest.approx([0.2, 0.9])
    assert table["f1_std"][0] == pytest.approx(0.1)
    # One run has no interval.
    assert math.isnan(table["f1_lo"][1]) and math.isnan(table["f1_std"][1])


def test_paired_differences_pair_by_seed_and_drop_the_unpaired() -> None:
    frame = pl.DataFrame(
        {
            "norm": ["bn", "none", "bn", "none", "bn"],
            "train.seed": [0, 0, 1, 1, 2],
            "f1": [0.9, 0.4, 0.8, 0.5, 0.7],
        }
    )
    pairs = paired_differences(frame, "f1", "norm", "bn", "none", pair_on=["train.seed"])
    assert pairs["train.seed"].to_list() == [0, 1]
    assert pairs["difference"].to_list() == pytest.approx([0.5, 0.3])
    summary = summarise_differences(pairs)
    assert summary["pairs"][0] == 2 and summary["difference_mean"][0] == pytest.approx(0.4)
    # Two pairs: the exact sign-flip test can never go below 2/4.
    assert summary["p_sign_flip"][0] == pytest.approx(0.5)


def test_permutation_tests_are_exact_at_small_n() -> None:
    # 2 vs 2 runs: 6 relabellings, the observed split and its mirror are the most extreme -> 2/6.
    assert permutation_p(np.array([1.0, 1.1]), np.array([0.0, 0.1])) == pytest.approx(1 / 3)
    assert permutation_p(np.arange(5.0) + 10, np.arange(5.0)) == pytest.approx(2 / 252)
    assert sign_flip_p(np.array([0.3, 0.2, 0.4, 0.25, 0.35])) == pytest.approx(2 / 32)


# ------------------------------------------------------------------- batch


def batch_trials(seeds: int, peak: int = 64, noise: float = 0.005) -> pl.DataFrame:
    rng = np.random.default_rng(4)
    rows = []
    for size, seed in itertools.product((16, 32, 64, 128, 256, 512), range(seeds)):
        value = 0.9 - 0.1 * (math.log2(size) - math.log2(peak)) ** 2
        rows.append(
            {
                "trial_id": f"{size}-{seed}",
                "train.batch_size": size,
                "train.seed": seed,
                "f1_minority": value + rng.normal(0, noise),
            }
        )
    return pl.DataFrame(rows)


def test_batch_optimum_recovers_a_known_peak_and_its_distinguishable_neighbours() -> None:
    optimum = batch_optimum(batch_trials(seeds=5))
    assert optimum.best == 64
    assert optimum.low < 0.9 < optimum.high + 0.01
    assert optimum.best_share[64] > 0.95 and optimum.range_low == optimum.range_high == 64
    assert [n.batch_size for n in optimum.neighbours] == [32, 128]
    # 0.1 apart with noise 0.005 and five seeds each: the exact permutation p is 2/252.
    assert all(n.distinguishable and n.difference == pytest.approx(0.1, abs=0.02) for n in optimum.neighbours)


def test_two_seeds_never_make_neighbours_distinguishable() -> None:
    # The same large difference with two seeds: the bootstrap CI excludes zero, the exact test cannot.
    optimum = batch_optimum(batch_trials(seeds=2))
    assert optimum.best == 64
    for neighbour in optimum.neighbours:
        assert neighbour.low > 0 and not neighbour.distinguishable and neighbour.p_value >= 1 / 3


def test_batch_optimum_at_the_edge_has_one_neighbour() -> None:
    optimum = batch_optimum(batch_trials(seeds=3, peak=16))
    assert optimum.best == 16 and [n.batch_size for n in optimum.neighbours] == [32]
    assert "at the edge of the grid: the optimum may lie beyond 16" in optimum.describe()


def test_batch_optimum_is_stated_no_finer_than_the_grid_and_the_seeds() -> None:
    trials = batch_trials(seeds=2).with_columns(
        pl.lit(1000).alias("data.train_majority"),
        pl.lit(10).alias("data.train_minority"),
        pl.lit(10).alias("train.epochs"),
    )
    optimum = batch_optimum(trials)
    # However sure the seeds are, the grid only places the optimum between the best's neighbours.
    low, high = optimum.interval
    assert low <= 32 and high >= 128 and optimum.best_share[64] > 0.9
    text = optimum.describe()
    assert "optimum between 32 and 128" in text
    # 1,010 images, 10 epochs, whole batches only: 630 steps at 16, 10 at 512.
    assert optimum.steps[16] == 630 and optimum.steps[512] == 10
    assert "confounded with step count: at a fixed number of epochs batch 16 makes 630 optimizer steps" in text
    assert "2 seed(s) per batch size (< 5): the intervals are unreliable" in text
    assert f"takes {optimum.seeds_needed} seeds per batch size" in text and optimum.seeds_needed >= 2
    assert "the exact permutation test reaches p < 0.05 from 4 seeds" in text


def test_fixed_steps_state_no_step_count_confound() -> None:
    trials = batch_trials(seeds=5).with_columns(pl.lit(300).alias("train.steps"))
    optimum = batch_optimum(trials)
    assert optimum.steps == {} and "train.steps 300 at every batch size: no step-count confound" in optimum.describe()
    assert "unreliable" not in optimum.describe()


# --------------------------------------------------------------- factorial


TRUE_EFFECTS = {("BN",): 0.30, ("WL",): 0.10, ("MX",): -0.06, ("BN", "WL"): -0.08, ("DA", "UF"): 0.04}


def test_factorial_effects_are_recovered_per_plant_and_pooled() -> None:
    table = fx.effects(factorial_trials(TRUE_EFFECTS))
    assert set(table["scope"].to_list()) == {"Apple", "Pepper", "Tomato", "pooled"}
    for scope in ("Apple", "pooled"):
        rows = {r["term"]: r for r in table.filter(pl.col("scope") == scope).iter_rows(named=True)}
        assert len(rows) == 6 + 15
        for term, effect in TRUE_EFFECTS.items():
            row = rows[" x ".join(term)]
            assert row["estimate"] == pytest.approx(effect, abs=0.02)
            assert row["ci_low"] <= effect <= row["ci_high"]
        # A factor with no effect: its interval holds zero.
        assert rows["WD"]["ci_low"] <= 0 <= rows["WD"]["ci_high"]
    pooled = table.filter(pl.col("scope") == "pooled")
    assert pooled["runs"][0] == 192 and pooled["df"][0] == 192 - 1 - 2 - 21


def test_config_ids_are_the_thesis_ids() -> None:
    trials = factorial_trials(TRUE_EFFECTS, plants=("Apple",))
    coded = fx.factor_codes(trials)
    ids = dict(zip(coded["config"].to_list(), coded["config_id"].to_list(), strict=True))
    assert ids["BN"] == 31 and ids["BN+UF"] == 29 and ids["BN+UF+WD"] == 28
    assert ids["DA+MX+UF"] == 49 and ids["DA+MX+UF+WD"] == 48 and ids["none"] == 63
    # A held factor at a value that is neither level (UF "all" on a CNN from scratch) has no thesis id.
    held = fx.factor_codes(trials.with_columns(pl.lit("all").alias("model.unfreeze")))
    assert held["config_id"].null_count() == held.height
    # And back: the thesis' Table 4.3 ids spell the options its check marks show.
    assert [fx.config_label(i) for i in (31, 23, 20, 49, 63)] == ["BN", "BN+DA", "BN+DA+UF+WD", "DA+MX+UF", "none"]


def test_best_worst_and_gain_factor() -> None:
    trials = factorial_trials(TRUE_EFFECTS, noise=0.0)
    ranking = fx.best_and_worst(trials)
    assert ranking["rank"].to_list() == ["best"] * 3 + ["worst"] * 3
    assert all(ranking.filter(pl.col("rank") == "best")["BN"] == "✓")
    assert not any(ranking.filter(pl.col("rank") == "worst")["BN"] == "✓")
    assert {"Apple", "Pepper", "Tomato", "Average", "thesis Average"} <= set(ranking.columns)
    gains = fx.gain_factors(trials).filter((pl.col("option") == "BN") & (pl.col("metric") == "f1_minority"))
    row = gains.row(0, named=True)
    assert row["gain_factor"] == pytest.approx((row["with_option"] - row["baseline"]) / row["baseline"])
    # BN alone vs nothing: the BN main effect plus its interactions with everything off.
    assert row["with_option"] - row["baseline"] == pytest.approx(0.30 + 0.08, abs=1e-9)


# ------------------------------------------------------------------ tables


def test_table_4_2_carries_the_thesis_numbers_and_the_difference() -> None:
    rows = []
    for plant, variant, seed in itertools.product(("Apple", "Pepper", "Tomato"), ("plain", "WL", "final_BN"), range(3)):
        value = {"plain": 0.3, "WL": 0.8, "final_BN": 0.95}[variant] + 0.01 * seed
        rows.append(
            {
                "trial_id": f"{plant}{variant}{seed}",
                "data.source": "plantvillage",
                "data.plant": plant,
                "axis.variant": variant,
                "train.seed": seed,
                "f1_minority": value,
                "f1_majority": value,
            }
        )
    variants = Axis("variant", ({}, {}, {}), labels=("plain", "WL", "final_BN"))
    contrasts = (Contrast("variant", "final_BN", "plain"), Contrast("variant", "final_BN", "WL"))
    spec = SweepSpec("headline-test", TrialConfig(), (variants,), analysis="headline", contrasts=contrasts)
    table = tb.table_4_2(pl.DataFrame(rows), spec)
    cell = table.filter(
        (pl.col("plant") == "Pepper") & (pl.col("column") == "WL") & pl.col("class").str.contains("minority")
    ).row(0, named=True)
    assert cell["thesis"] == TABLE_4_2["Pepper"]["minority"][1] == 0.8939
    assert cell["measured"] == pytest.approx(0.81) and cell["difference"] == pytest.approx(0.81 - 0.8939)
    # The thesis' "BN total improvement" is the declared contrast final_BN - WL, paired by seed.
    improvement = table.filter((pl.col("plant") == "Apple") & (pl.col("column") == "final_BN - WL")).row(0, named=True)
    assert improvement["measured"] == pytest.approx(0.15) and improvement["thesis"] == 0.1615
    assert improvement["runs"] == 3
    wide = tb.wide(table, ["plant", "class"])
    assert wide.height == 6 and "final_BN (thesis)" in wide.columns and "final_BN - WL (Δ)" in wide.columns
    assert "final_BN - plain (Δ)" in wide.columns


def test_tables_4_6_4_7_4_8_line_up_with_the_thesis_rows() -> None:
    removal = pl.DataFrame(
        [
            {
                "trial_id": f"{n}{s}",
                "data.source": "mnist",
                "model.final_norm": n,
                "train.seed": s,
                "f1_minority": 0.9,
                "f1_majority": 0.8,
                "nobn_f1_minority": 0.7 if n == "bn" else None,
                "nobn_f1_majority": 0.6 if n == "bn" else None,
            }
            for n in ("none", "bn")
            for s in range(2)
        ]
    )
    norm = Axis("model.final_norm", ("none", "bn"))
    removal_contrasts = (
        Contrast("model.final_norm", "bn", "none"),
        Contrast("model.final_norm", "bn", "removed"),
        Contrast("model.final_norm", "removed", "none"),
    )
    removal_spec = SweepSpec("bn_removal-test", TrialConfig(), (norm,), contrasts=removal_contrasts, derived=(REMOVED,))
    t46 = tb.table_4_6(removal, removal_spec)
    removed = t46.filter((pl.col("column") == "final BN removed at test") & pl.col("class").str.contains("minority"))
    assert removed["measured"][0] == pytest.approx(0.7)
    # MNIST laptop runs are compared with the thesis' Apple row, and say so.
    assert removed["thesis"][0] == TABLE_4_6["final BN removed at test"]["Apple"][1]
    assert "vs thesis Apple" in removed["plant"][0]

    cnn = pl.DataFrame(
        [
            {
                "trial_id": f"{n}",
                "axis.setting": "3v5+8",
                "data.minority": "3",
                "data.majority": "5,8",
                "model.final_norm": n,
                "f1_3": 0.1,
                "f1_5": 0.7,
                "f1_8": 0.75,
                "f1_minority": 0.1,
                "f1_majority": 0.7,
            }
            for n in ("none", "bn")
        ]
    )
    cnn_spec = SweepSpec("mnist_cnn-test", TrialConfig(), (norm,), contrasts=removal_contrasts[:1])
    t47 = tb.table_4_7(cnn, cnn_spec)
    assert t47.height == 6
    eight = t47.filter(pl.col("class") == "8")
    assert eight["thesis"].to_list() == list(TABLE_4_7["3v5+8"]["8"])

    fc = pl.DataFrame(
        [
            {
                "trial_id": str(i),
                "axis.row": _row_label(*row),
                "data.minority": "3",
                "data.majority": "8",
                "f1_3": 0.5,
                "f1_8": 0.8,
                "f1_minority": 0.5,
                "f1_majority": 0.8,
            }
            for i, row in enumerate(TABLE_4_8_ROWS)
        ]
    )
    t48 = tb.table_4_8(fc)
    assert t48.height == 18 and t48["thesis"].null_count() == 0
    best = t48.filter((pl.col("row") == "softmax-cce-finalbn") & pl.col("class").str.contains("minority"))
    assert best["thesis"][0] == TABLE_4_8["softmax-cce-finalbn"][0] == 0.88


# -------------------------------------------------------------- bad inputs


def one_line(error: UserError) -> str:
    text = str(error)
    assert "\n" not in text and text
    return text


def test_a_table_without_a_metric_column_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "imbalance_ratio-laptop"
    folder.mkdir()
    imbalance_trials(hinge(0.05)).drop("f1_minority").write_parquet(folder / "trials.parquet")
    with pytest.raises(UserError) as caught:
        from_folder(folder)
    assert "'f1_minority'" in one_line(caught.value)


def test_a_sweep_whose_trials_all_failed_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "batch_size-smoke"
    for trial in ("aaa111", "bbb222"):
        (folder / "trials" / trial).mkdir(parents=True)
        trace = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n"
        failure = {"trial_id": trial, "attempts": 3, "traceback": trace}
        (folder / "trials" / trial / "failure.json").write_text(json.dumps(failure))
    with pytest.raises(UserError) as caught:
        from_folder(folder)
    text = one_line(caught.value)
    assert "all 2 trials" in text and "CUDA out of memory" in text and "failure.json" in text


@pytest.mark.parametrize("make", ["missing", "empty", "not_parquet"])
def test_missing_or_empty_input_is_a_one_line_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "results" / "x-laptop"
    if make == "empty":
        path.mkdir(parents=True)
    if make == "not_parquet":
        path.mkdir(parents=True)
        path = path / "trials.parquet"
        path.write_text("not parquet")
    with pytest.raises(UserError) as caught:
        load_sweep(path)
    one_line(caught.value)


def test_unknown_and_empty_mlflow_experiments_are_one_line_errors(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    MlflowClient(uri).create_experiment("imbalance_ratio-laptop", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(UserError) as caught:
        from_mlflow("nope-laptop", uri)
    assert "unknown MLflow experiment 'nope-laptop'" in one_line(caught.value)
    assert "imbalance_ratio-laptop" in str(caught.value)
    with pytest.raises(UserError) as caught:
        from_mlflow("imbalance_ratio-laptop", uri)
    assert "holds no trial runs" in one_line(caught.value)
    # Trial runs that all failed, as the sweep's tracker leaves them.
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("imbalance_ratio-laptop").experiment_id
    for trial in ("aaa111", "bbb222"):
        run = client.create_run(experiment, tags={TRIAL_TAG: trial, ERROR_TAG: "x\nValueError: bad"})
        client.set_terminated(run.info.run_id, "FAILED")
    with pytest.raises(UserError) as caught:
        from_mlflow("imbalance_ratio-laptop", uri)
    assert "all 2 trials" in one_line(caught.value) and "ValueError: bad" in str(caught.value)


def test_the_report_script_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No results folder and no MLflow store where the script looks.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = report_main(["--experiment", "nothing-here", "--results-root", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finalbn: error: unknown experiment 'nothing-here'")


# --------------------------------------------------------- report, synthetic


CODE = {"finalbn": "0.1.0", "git_commit": "0123abcd", "torch": "2.9.9"}


def imbalance_spec(name: str = "imbalance_ratio-custom") -> SweepSpec:
    """The declaration ``imbalance_trials`` stands for (three seeds)."""
    base = TrialConfig().replace(data={"source": "mnist", "minority": ("3",), "majority": ("8",)})
    minority = tuple(round(r * MAJORITY) for r in RATIOS)
    axes = (
        Axis("data.train_minority", minority),
        Axis("model.final_norm", ("bn", "none")),
        Axis("train.seed", (0, 1, 2), role="nuisance"),
    )
    return SweepSpec(
        name,
        base,
        axes,
        experiment="imbalance_ratio",
        preset="custom",
        analysis="imbalance_ratio",
        contrasts=(Contrast("model.final_norm", "bn", "none"),),
        derived=(REMOVED,),
    )


def write_record(folder: Path, spec: SweepSpec, trial_id) -> SweepRecord:
    """The sweep.json the driver writes; ``trial_id(point)`` gives each planned trial's id."""
    planned = {trial_id(t.point): (t.point, "fingerprint") for t in spec.trials()}
    record = SweepRecord.of(spec, planned, CODE)
    folder.mkdir(parents=True, exist_ok=True)
    record.write(folder)
    return record


def imbalance_id(point: dict[str, str]) -> str:
    # The synthetic tables' trial ids (imbalance_trials without extra columns).
    return f"{point['data.train_minority']}-{point['model.final_norm']}-{point['train.seed']}-"


def synthetic_sweep(folder: Path, drop: int = 0, record: bool = True) -> Path:
    """An imbalance sweep folder as the sweep writes it (with its sweep.json when ``record``), with
    predictions and loss curves, minus ``drop`` trials."""
    if record:
        write_record(folder, imbalance_spec(), imbalance_id)
    trials = imbalance_trials(hinge(0.05), seeds=3).with_columns(
        pl.lit("mnist").alias("data.source"), pl.lit("3").alias("data.minority"), pl.lit("8").alias("data.majority")
    )
    trials = trials.head(trials.height - drop)
    rng = np.random.default_rng(5)
    epochs = []
    for row in trials.iter_rows(named=True):
        folder_ = folder / "trials" / row["trial_id"]
        folder_.mkdir(parents=True)
        record = {
            "trial_id": row["trial_id"],
            "manifest_fingerprint": "fingerprint",
            "classes": ["8", "3"],
            "config": {"data": {"source": "mnist"}},
            "versions": {"finalbn": "0.1.0", "torch": "2.9.9"},
        }
        (folder_ / "config.json").write_text(json.dumps(record))
        (folder_ / "summary.json").write_text("{}")
        truth = np.repeat([0, 1], 50)
        p3 = np.clip(truth * row["f1_minority"] + rng.normal(0.2, 0.1, truth.size), 0.01, 0.99)
        predictions = {
            "path": [f"{i}.png" for i in range(truth.size)],
            "label": np.array(["8", "3"])[truth],
            "label_index": truth,
            "predicted_index": (p3 > 0.5).astype(np.int64),
            "prob_8": 1 - p3,
            "prob_3": p3,
        }
        pl.DataFrame(predictions).write_parquet(folder_ / "predictions.parquet")
        for epoch in range(1, 4):
            epochs.append(
                {
                    "trial_id": row["trial_id"],
                    "epoch": epoch,
                    "train_loss": 1 / epoch,
                    "val_loss": 1.2 / epoch,
                    "test_loss": 1.3 / epoch,
                    "val_f1_minority": row["f1_minority"],
                    "val_f1_majority": row["f1_majority"],
                }
            )
    trials.write_parquet(folder / "trials.parquet")
    epochs_frame = pl.DataFrame(epochs).join(trials.drop("f1_minority", "f1_majority"), on="trial_id")
    epochs_frame.write_parquet(folder / "epochs.parquet")
    return folder


def test_report_of_a_synthetic_sweep_is_self_contained(tmp_path: Path) -> None:
    folder = synthetic_sweep(tmp_path / "imbalance_ratio-custom")
    result = write_report(folder, gradcam=False)
    assert result.kind == "imbalance_ratio"
    # Three seeds: the headline leads with that, and claims nothing the intervals cannot carry.
    assert result.headline.startswith("Imbalance threshold: 3 seeds per ratio: too few to locate a threshold; ")
    assert "resolved" not in result.headline
    html = result.html.read_text()
    # Every figure inlined, none linked: the file alone shows everything.
    assert html.count('src="data:image/png;base64,') == len(result.figures) >= 4
    assert "<img" in html and 'src="figures/' not in html
    assert "0.2942" not in html  # no thesis table belongs in an imbalance report
    markdown = result.markdown.read_text()
    for figure in result.figures:
        assert f"figures/{figure.name}" in markdown and figure.exists()
    assert "Figure 4.4 (Grad-CAM) skipped" in " ".join(result.notes)


def test_report_of_a_partial_sweep_lists_what_is_missing(tmp_path: Path) -> None:
    folder = synthetic_sweep(tmp_path / "imbalance_ratio-custom", drop=2)
    result = write_report(folder, gradcam=False)
    assert "partial sweep: 118 of 120 trials" in result.headline
    assert "2 grid point(s) missing" in result.notes
    assert "Grid points with no finished trial (2)" in result.html.read_text()


def test_a_renamed_folder_is_analysed_by_its_record(tmp_path: Path) -> None:
    # The folder name means nothing: the experiment, the grid and the code come from sweep.json.
    folder = synthetic_sweep(tmp_path / "my-run", drop=2)
    data = from_folder(folder)
    assert data.analysis == "imbalance_ratio" and data.spec is not None and data.planned() == 120
    dropped = [{"data.train_minority": "100", "model.final_norm": "none", "train.seed": s} for s in ("1", "2")]
    assert data.missing == dropped
    assert data.versions["git_commit"] == ["0123abcd"] and data.versions["torch"] == ["2.9.9"]
    result = write_report(folder, gradcam=False)
    assert result.kind == "imbalance_ratio" and result.headline.startswith("Imbalance threshold:")
    assert "partial sweep: 118 of 120 trials" in result.headline
    assert "0123abcd" in result.html.read_text()


def test_a_folder_without_a_record_is_generic(tmp_path: Path) -> None:
    # Named like an experiment, but nothing declares it one: no guess from the name or the columns.
    folder = synthetic_sweep(tmp_path / "imbalance_ratio-laptop", drop=2, record=False)
    data = from_folder(folder)
    assert data.analysis == "generic" and data.spec is None and data.missing == []
    assert "axis.data.train_minority" in data.scientific_axes()
    result = write_report(folder, gradcam=False)
    assert result.kind == "generic" and result.headline.startswith("Mean test minority F1 over 118 trials")
    assert any("no sweep.json" in note for note in result.notes)
    # Nothing declares a contrast either: none is guessed from the columns, and the report says so.
    assert "Paired contrasts skipped: no contrast declared" in " ".join(result.notes)
    assert "Declared contrasts, paired by seed" not in result.html.read_text()
    # A bare Parquet file elsewhere reads the same way.
    bare = tmp_path / "elsewhere" / "copy.parquet"
    bare.parent.mkdir()
    (folder / "trials.parquet").rename(bare)
    assert load_sweep(bare).analysis == "generic"


def test_a_section_this_version_lacks_gives_the_generic_report(tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    spec = dataclasses.replace(imbalance_spec(), analysis="from_the_future")
    write_record(folder, spec, imbalance_id)
    synthetic_sweep(folder, record=False)
    data = from_folder(folder)
    assert data.analysis == "from_the_future" and data.mlflow_experiment == "imbalance_ratio-custom"
    result = build_report(data, tmp_path / "report", gradcam=False)
    assert result.kind == "generic" and any("from_the_future" in note for note in result.notes)


def test_a_record_of_another_sweep_is_a_one_line_error(tmp_path: Path) -> None:
    folder = synthetic_sweep(tmp_path / "imbalance_ratio-custom")
    write_record(folder, imbalance_spec(), lambda point: "f" * 12 + point["train.seed"])
    with pytest.raises(UserError) as caught:
        from_folder(folder)
    assert "plans none of its 120 finished trials" in one_line(caught.value)


def summary_record(trial_id: str, **test: object) -> dict[str, object]:
    """A summary.json as a trial writes it."""
    metrics = {"accuracy": 0.9, "brier": 0.1, "ece": 0.05, "f1_majority": 0.9, "f1_minority": 0.5} | test
    return {"trial_id": trial_id, "seconds": 1.0, "device": "cpu", "test": metrics, "worker": {}}


def test_mlflow_reads_axis_labels_from_the_record_not_from_run_names(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    # The name of another experiment: only the record says what this sweep is.
    name = "batch_size-laptop"
    experiment = client.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    base = TrialConfig().replace(data={"source": "mnist", "minority": ("3",), "majority": ("8",)})
    axes = (Axis("model.final_norm", ("bn", "none")), Axis("train.seed", (0, 1), role="nuisance"))
    spec = SweepSpec(name, base, axes, experiment="bn_removal", preset="laptop", analysis="bn_removal")
    ids = {("bn", "0"): "a00000000001", ("bn", "1"): "a00000000002", ("none", "0"): "a00000000003"}
    ids[("none", "1")] = "a00000000004"
    record = write_record(tmp_path / "record", spec, lambda p: ids[(p["model.final_norm"], p["train.seed"])])
    parent = client.create_run(experiment, run_name=f"{name} invocation").info.run_id
    client.log_artifact(parent, str(tmp_path / "record" / "sweep.json"))
    # Three of the four planned trials finish, plus one trial of an earlier grid; their run names lie.
    trials = [*list(spec.trials())[:3], spec.trials()[0]]
    for index, (trial, trial_id) in enumerate(zip(trials, [*list(ids.values())[:3], "b00000000009"], strict=True)):
        tags = {TRIAL_TAG: trial_id, PARENT_TAG: parent}
        run = client.create_run(experiment, run_name=f"final_norm=bogus seed=99 [{trial_id}]", tags=tags).info.run_id
        for key, value in flatten(trial.config).items():
            client.log_param(run, key, str(value))
        summary = tmp_path / "summaries" / trial_id / "summary.json"
        summary.parent.mkdir(parents=True)
        summary.write_text(json.dumps(summary_record(trial_id, f1_minority=0.5 + index / 10)))
        client.log_artifact(run, str(summary))
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")

    data = from_mlflow(name, uri)
    assert data.analysis == "bn_removal" and data.planned() == 4
    table = data.trials.sort("trial_id")
    assert table["trial_id"].to_list() == list(ids.values())[:3]
    assert table["axis.model.final_norm"].to_list() == ["bn", "bn", "none"]
    assert table["axis.train.seed"].to_list() == ["0", "1", "0"]
    assert table["trial_name"][0] == "final_norm=bogus seed=99"
    assert table["train.seed"].to_list() == [0, 1, 0] and table["f1_minority"].to_list() == pytest.approx(
        [0.5, 0.6, 0.7]
    )
    assert data.missing == [record.trials["a00000000004"]] == [{"model.final_norm": "none", "train.seed": "1"}]
    assert data.notes == ["1 finished trial(s) outside the planned grid left out"]
    assert data.versions["git_commit"] == ["0123abcd"]

    # The report goes back to the latest parent run, its headline as a tag.
    page = tmp_path / "report.html"
    page.write_text("<html></html>")
    assert log_report_files(uri, name, {"report": [page]}, "the answer") == parent
    assert client.get_run(parent).data.tags[HEADLINE_TAG] == "the answer"
    assert [a.path for a in client.list_artifacts(parent, "report")] == ["report/report.html"]


def test_mlflow_artifacts_that_do_not_validate_are_not_used_and_are_named(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("imbalance_ratio-laptop", artifact_location=(tmp_path / "a").as_uri())
    good, typed, foreign = "d00000000001", "d00000000002", "d00000000003"
    summaries = {
        good: summary_record(good, f1_minority=0.8),
        typed: summary_record(typed, f1_minority="0.8"),  # a string where a number belongs
        foreign: summary_record(good, f1_minority=0.8),  # another trial's record
    }
    for trial_id, summary in summaries.items():
        run_id = client.create_run(experiment, run_name=trial_id, tags={TRIAL_TAG: trial_id}).info.run_id
        client.log_param(run_id, "model.final_norm", "bn")
        client.log_metric(run_id, "test_f1_minority", 0.25)
        client.log_metric(run_id, "test_f1_majority", 0.95)
        files = tmp_path / "files" / trial_id
        files.mkdir(parents=True)
        (files / "summary.json").write_text(json.dumps(summary))
        epochs = pl.DataFrame(
            {"trial_id": [trial_id], "epoch": [1], "train_loss": [0.5], "test_f1_minority": [0.25]}
            | {"test_f1_majority": [0.95], "seconds": [1.0]}
        )
        # The good run's curve holds a null: no curve is drawn from it.
        epochs = epochs.with_columns(train_loss=pl.lit(None, pl.Float64)) if trial_id == good else epochs
        epochs.write_parquet(files / "metrics.parquet")
        client.log_artifacts(run_id, str(files))
        client.set_terminated(run_id, "FINISHED")

    data = from_mlflow("imbalance_ratio-laptop", uri)
    minority = dict(zip(data.trials["trial_id"], data.trials["f1_minority"], strict=True))
    assert minority == {good: 0.8, typed: 0.25, foreign: 0.25}
    assert data.epochs is not None and sorted(set(data.epochs["trial_id"])) == [typed, foreign]
    notes = [note for note in data.notes if note.startswith("trial ")]
    assert sorted(notes) == [
        f"trial {good}: metrics.parquet: holds nulls; left out of the epoch curves",
        f"trial {typed}: summary.json: test.f1_minority: Input should be a valid number, got '0.8'; "
        "its final metrics are the last epoch's logged in MLflow",
        f"trial {foreign}: summary.json: belongs to trial {good!r}, not {foreign}; its final metrics are the "
        "last epoch's logged in MLflow",
    ]


def test_mlflow_without_a_record_is_generic(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("imbalance_ratio-laptop", artifact_location=(tmp_path / "a").as_uri())
    for trial_id, norm in (("c00000000001", "bn"), ("c00000000002", "none")):
        run = client.create_run(experiment, run_name=f"final_norm={norm} [{trial_id}]", tags={TRIAL_TAG: trial_id})
        run_id = run.info.run_id
        client.log_param(run_id, "model.final_norm", norm)
        client.log_metric(run_id, "test_f1_minority", 0.5)
        client.log_metric(run_id, "test_f1_majority", 0.9)
        client.set_terminated(run_id, "FINISHED")
    data = from_mlflow("imbalance_ratio-laptop", uri)
    assert data.analysis == "generic" and data.missing == [] and data.axes() == []
    assert data.trials["f1_minority"].to_list() == [0.5, 0.5]

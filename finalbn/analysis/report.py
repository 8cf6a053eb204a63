"""One report per sweep: the threshold or optimum it answers, the thesis' tables and figures, with CIs.

``write_report(sweep_folder)`` is the call a sweep makes when it ends;
``build_report(data, out)`` takes any loaded sweep (a folder, a Parquet file
or an MLflow experiment). Both write ``report.html`` (self-contained: every
figure inlined) and ``report.md`` (figures as PNG files beside it) and return
a ``ReportResult`` whose ``headline`` is the sweep's answer in one line.
"""

from __future__ import annotations

import datetime
import functools
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

import finalbn
from finalbn.analysis import factorial as fx
from finalbn.analysis import figures as fig
from finalbn.analysis import tables as tb
from finalbn.analysis.batch import BATCH, batch_optima, optimum_table
from finalbn.analysis.compare import IGNORED, NORM, Comparison, choose_comparison
from finalbn.analysis.load import AXIS, NUISANCE, SweepData, from_folder, latest_parent_run
from finalbn.analysis.render import Document
from finalbn.analysis.stats import aggregate, paired_differences, summarise_differences
from finalbn.analysis.thesis import (
    FIGURE_4_5_BN,
    FIGURE_4_6_THRESHOLD,
    FIGURE_4_7_BEST_BATCH,
    FIGURE_4_9_BRIER,
    TABLE_4_3,
)
from finalbn.analysis.threshold import FRACTION, RATIO, threshold_table, thresholds, with_ratio
from finalbn.errors import UserError
from finalbn.spec import SweepSpec

METRICS = ("f1_minority", "f1_majority", "accuracy", "ece", "brier")
# Per-seed rows shown in the report before it only points at the CSV.
MAX_ROWS = 60
CONFIG = ("data.", "model.", "train.")
# Below this many runs per configuration the report warns that bootstrap intervals undercover.
FEW_RUNS = 5
DOCS = "docs/analysis.md"


@dataclass(frozen=True)
class ReportResult:
    html: Path
    markdown: Path
    # The sweep's answer in one line (threshold, optimum, largest effect, ...).
    headline: str
    # Which analysis ran: imbalance_ratio, batch_size, factorial, headline, bn_removal, mnist_cnn, mnist_fc, generic.
    kind: str
    figures: tuple[Path, ...] = ()
    # What was skipped or missing, one line each.
    notes: tuple[str, ...] = ()
    # Parent MLflow run the report was logged to, if any.
    mlflow_run_id: str | None = None


def write_report(
    sweep_folder: Path,
    spec: SweepSpec | None = None,
    *,
    out: Path | None = None,
    tracking_uri: str | None = None,
    gradcam: bool | None = None,
) -> ReportResult:
    """Analyse ``results/<sweep>/`` and write ``<sweep>/report/report.html`` and ``report.md``.

    ``spec``: the sweep's declaration (to list missing trials; rebuilt from the
    folder name when None). ``tracking_uri``: also log the report to the
    sweep's latest parent MLflow run. ``gradcam``: None draws Figure 4.4 when
    it is cheap (weights saved, a small CNN, or a GPU), True always, False never.
    """
    data = from_folder(Path(sweep_folder), spec=spec)
    result = build_report(data, Path(out) if out else Path(sweep_folder) / "report", gradcam=gradcam)
    return log_report(result, data.name, tracking_uri) if tracking_uri else result


def build_report(data: SweepData, out: Path, gradcam: bool | None = None) -> ReportResult:
    out = Path(out)
    figures_dir = out / "figures"
    tables_dir = out / "tables"
    for folder in (figures_dir, tables_dir):
        folder.mkdir(parents=True, exist_ok=True)
    kind = detect_kind(data)
    doc = Document(f"finalbn analysis: {data.name}")
    context = _Context(data, doc, figures_dir, tables_dir)
    headline_slot = len(doc.blocks)
    _overview(context)
    headline = SECTIONS[kind](context)
    _seed_aggregation(context)
    if kind != "factorial":
        _paired_sections(context)
    _comparison_figures(context, gradcam)
    _methods(context)
    if data.failed or data.missing:
        headline += f" (partial sweep: {data.trials.height} of {_planned(data)} trials)"
    doc.blocks.insert(headline_slot, ("headline", headline))
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(doc.html())
    md_path.write_text(doc.markdown(out))
    return ReportResult(html_path, md_path, headline, kind, tuple(doc.figures()), tuple(context.notes))


def log_report(result: ReportResult, experiment: str, tracking_uri: str) -> ReportResult:
    """Attach the report (HTML, Markdown, figures) to the sweep's latest parent run, under ``report/``."""
    run_id = latest_parent_run(tracking_uri, experiment)
    if run_id is None:
        raise UserError(
            f"MLflow experiment {experiment!r} at {tracking_uri} has no sweep run to attach the report to: "
            "run the sweep with tracking on, or drop --tracking-uri"
        )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_artifact(run_id, str(result.html), artifact_path="report")
    client.log_artifact(run_id, str(result.markdown), artifact_path="report")
    for path in result.figures:
        client.log_artifact(run_id, str(path), artifact_path="report/figures")
    client.set_tag(run_id, "finalbn.report_headline", result.headline[:4000])
    return ReportResult(**{**result.__dict__, "mlflow_run_id": run_id})


def detect_kind(data: SweepData) -> str:
    """The sweep's experiment, from its name, else from which columns vary."""
    prefix = data.name.split("-")[0]
    if prefix in SECTIONS:
        return prefix
    trials = data.trials
    varies = {c for c in trials.columns if trials[c].n_unique() > 1}
    if "axis.variant" in trials.columns:
        return "headline"
    if "axis.setting" in trials.columns:
        return "mnist_cnn"
    if "axis.row" in trials.columns:
        return "mnist_fc"
    if {"data.train_minority", "model.final_norm"} <= varies:
        return "imbalance_ratio"
    if BATCH in varies:
        return "batch_size"
    if sum(1 for column, _, _ in fx.FACTORS.values() if column in varies) >= 2:
        return "factorial"
    if "model.final_norm" in varies and "nobn_f1_minority" in trials.columns:
        return "bn_removal"
    return "generic"


@dataclass
class _Context:
    data: SweepData
    doc: Document
    figures: Path
    tables: Path
    notes: list[str] = field(default_factory=list)

    def save_figure(self, figure: object, name: str, caption: str) -> None:
        path = fig.save(figure, self.figures / f"{name}.png")
        self.doc.figure(path, caption)

    def save_table(self, frame: pl.DataFrame, name: str) -> Path:
        path = self.tables / f"{name}.csv"
        frame.write_csv(path)
        return path

    def skip(self, what: str, why: str) -> None:
        line = f"{what} skipped: {why}"
        self.notes.append(line)
        self.doc.note(line)

    def groups(self, exclude: set[str]) -> list[str]:
        """Scientific axis columns other than ``exclude`` (e.g. frozen/unfrozen, plant)."""
        return [c for c in self.data.scientific_axes() if c.removeprefix(AXIS) not in exclude and c not in exclude]


# ------------------------------------------------------------------ overview


def _overview(ctx: _Context) -> None:
    data, doc = ctx.data, ctx.doc
    spec = data.spec
    if spec is not None and spec.description:
        doc.paragraph(f"Reproduces {spec.reproduces}. {spec.description}" if spec.reproduces else spec.description)
    doc.heading("Provenance")
    planned = _planned(data)
    versions = data.versions
    rows = [
        ("source", data.source),
        ("trials finished", str(data.trials.height)),
        ("trials planned", str(planned) if spec is not None else f"{planned} (no declared grid found; inferred)"),
        ("trials failed", str(len(data.failed))),
        ("grid points missing", str(len(data.missing))),
        ("finalbn version (trials)", ", ".join(versions.get("finalbn", [])) or "unknown"),
        ("torch version (trials)", ", ".join(versions.get("torch", [])) or "unknown"),
        ("git commit (trials)", ", ".join(versions.get("git_commit", [])) or "not recorded in the trial folders"),
        ("analysed with", f"finalbn {finalbn.__version__}, git {_git_commit()}"),
        ("analysed at", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    doc.table(pl.DataFrame(rows, schema=["item", "value"], orient="row"))
    if data.failed:
        failed = pl.DataFrame(
            {"trial_id": list(data.failed), "last error line": list(data.failed.values())}, schema_overrides=None
        )
        doc.table(failed.head(MAX_ROWS), "Failed trials (every attempt failed; see each folder's failure.json)")
        ctx.notes.append(f"{len(data.failed)} trial(s) failed")
    if data.missing:
        missing = pl.DataFrame(data.missing)
        doc.table(missing.head(MAX_ROWS), f"Grid points with no finished trial ({len(data.missing)})")
        ctx.notes.append(f"{len(data.missing)} grid point(s) missing")


# ------------------------------------------------------------ per experiment


def _imbalance(ctx: _Context) -> str:
    data, doc = ctx.data, ctx.doc
    doc.heading("Imbalance threshold (Figure 4.6)")
    groups = ctx.groups({"data.train_minority", "model.final_norm"})
    found = thresholds(data.trials, by=groups)
    table = threshold_table(found)
    ctx.save_table(table, "thresholds")
    doc.paragraph(
        f"Threshold = the minority ratio where the final-BN gain (paired by seed: final BN - none) falls below "
        f"{FRACTION:.0%} of its peak for the last time, linearly interpolated between swept ratios; 95% CI from "
        f"resampling seeds. Cross-check (zero_tail): smallest ratio from which on the pooled gain's CI includes zero. "
        f"Thesis, by eye: the gain levels off near {FIGURE_4_6_THRESHOLD}."
    )
    doc.table(table, "Threshold per class (and per frozen/unfrozen backbone or plant where the sweep has them)", 4)
    gains = pl.concat(
        [
            t.curve.with_columns(pl.lit(t.metric).alias("metric"), pl.lit(_group_text(t.group)).alias("group"))
            for t in found
        ]
    ).select("metric", "group", RATIO, "pairs", "gain_mean", "gain_std", "gain_lo", "gain_hi")
    ctx.save_table(gains, "gain_curve")
    doc.table(gains, "Final-BN gain in test F1 per ratio (mean over seeds of the paired difference, 95% CI)")
    curves = aggregate(with_ratio(data.trials), [RATIO, "model.final_norm", *groups], ["f1_minority", "f1_majority"])
    ctx.save_table(curves, "f1_by_ratio")
    ctx.save_figure(
        fig.imbalance_figure(curves, found, groups, title=data.name),
        "imbalance_ratio",
        "Figure 4.6: test F1 against the imbalance ratio with and without final BN (mean over seeds, 95% "
        "bootstrap band); green: the threshold found and its CI; grey dashed: the thesis' 0.10.",
    )
    return "Imbalance threshold: " + "; ".join(t.describe() for t in found) + f" (thesis: ~{FIGURE_4_6_THRESHOLD})"


def _batch(ctx: _Context) -> str:
    data, doc = ctx.data, ctx.doc
    doc.heading("Batch-size optimum (Figure 4.7)")
    groups = ctx.groups({BATCH})
    found = batch_optima(data.trials, metrics=("f1_minority",), by=groups)
    table = optimum_table(found)
    ctx.save_table(table, "batch_optimum")
    doc.paragraph(
        "Optimum = the batch size with the highest mean minority F1 over seeds; its CI and how often it wins "
        "come from resampling each batch size's seeds; a neighbour is distinguishable when a permutation test "
        "of the difference (exact for few seeds) gives p < 0.05; the bootstrap CI of the difference is shown too. "
        f"Thesis: best at {FIGURE_4_7_BEST_BATCH}, worse with larger batches."
    )
    images = _training_images(data.trials)
    if images:
        doc.paragraph(f"This sweep trains on {images} images per run; the thesis' 64 was with 1,010 (1,000 + 10).")
    doc.table(table, "Best batch size by minority F1", 4)
    curves = aggregate(data.trials.with_columns(pl.col(BATCH).cast(pl.Int64)), [BATCH, *groups], list(METRICS[:2]))
    curves = curves.sort(BATCH)
    ctx.save_table(curves, "f1_by_batch")
    doc.table(curves, "Test F1 per batch size (mean, std, 95% CI over seeds)")
    for group_values in curves.select(groups).unique(maintain_order=True).iter_rows(named=True) if groups else [{}]:
        subset = curves.filter(*[pl.col(k) == v for k, v in group_values.items()]) if group_values else curves
        chosen = [o for o in found if o.group == {k: str(v) for k, v in group_values.items()}]
        suffix = _group_text(group_values) if group_values else ""
        ctx.save_figure(
            fig.batch_figure(subset, chosen, title=f"{data.name} {suffix}".strip()),
            "batch_size" + (f"_{len(ctx.doc.figures())}" if group_values else ""),
            "Figure 4.7: test F1 against batch size with final BN (mean over seeds, 95% bootstrap band); "
            "star: the optimum; grey dashed: the thesis' 64.",
        )
    return "Batch optimum: " + "; ".join(o.describe() for o in found) + f" (thesis: {FIGURE_4_7_BEST_BATCH})"


def _factorial(ctx: _Context) -> str:
    data, doc = ctx.data, ctx.doc
    trials = data.trials
    doc.heading("Factorial effects on minority F1 (Tables 4.3-4.4, Figure 4.5)")
    effects = fx.effects(trials, "f1_minority")
    ctx.save_table(effects, "effects")
    doc.paragraph(
        "Main effect = mean F1 with the option on minus off, over all other settings; two-way interaction = half "
        "the change of one option's effect when the other is turned on. Least squares on +-1 codes, "
        "t-intervals on the residual (three-way and higher interactions and seeds); per plant and pooled with "
        "a plant block."
    )
    doc.table(effects, "Effects on test minority F1 with 95% CI", 4)
    ctx.save_figure(
        fig.effects_figure(effects, title=f"{data.name}: effects on minority F1"),
        "effects",
        "Main effects and two-way interactions on minority F1, 95% CI, per plant and pooled.",
    )
    ranking = fx.best_and_worst(trials, "f1_minority")
    ctx.save_table(fx.config_means(trials, "f1_minority"), "config_means")
    doc.table(ranking, "Table 4.4: best and worst three configurations (minority F1; thesis Average by Config Id)")
    doc.table(fx.thesis_table_4_4(), "The thesis' Table 4.4 (ResNet34, PlantVillage), Config Ids spelled out", 4)
    table_4_3 = _table_4_3(trials, data)
    if table_4_3 is not None:
        doc.table(table_4_3, "Table 4.3: top three configurations per class on the first plant, thesis rows beside")
    gains = fx.gain_factors(trials)
    ctx.save_table(gains, "gain_factors")
    doc.table(
        gains,
        f"Figure 4.5: gain factor per single option; thesis: BN alone {FIGURE_4_5_BN['baseline']} -> "
        f"{FIGURE_4_5_BN['option']} minority F1, gain factor {FIGURE_4_5_BN['gain_factor']}",
    )
    if gains.height:
        ctx.save_figure(
            fig.gain_factor_figure(gains, title=f"{data.name}: one option at a time"),
            "gain_factor",
            "Figure 4.5: (F1 with one option - F1 with none) / F1 with none, per class; missing bars: baseline F1 0.",
        )
    pooled = effects.filter(pl.col("scope") == effects["scope"][-1])
    top = pooled.sort(pl.col("estimate").abs(), descending=True).row(0, named=True)
    best = ranking.row(0, named=True)
    return (
        f"Largest effect on minority F1 ({top['scope']}): {top['term']} {top['estimate']:+.3f} "
        f"[95% CI {top['ci_low']:+.3f}, {top['ci_high']:+.3f}]; best configuration {best['config']} "
        f"(average minority F1 {best['Average']:.3f})"
    )


def _thesis_table(ctx: _Context, table: pl.DataFrame, heading: str, name: str, keys: list[str], caption: str) -> None:
    """A regenerated thesis table: the wide view beside the thesis, then the long form with CIs."""
    ctx.doc.heading(heading)
    ctx.save_table(table, name)
    ctx.doc.table(tb.wide(table, keys), caption, 4)
    ctx.doc.table(table, "Long form with 95% CIs and run counts", 4)


def _minority_means(table: pl.DataFrame, columns: tuple[str, ...], thesis: str) -> str:
    minority = table.filter(pl.col("class") == tb.CLASS_NAMES["minority"])
    values = {c: minority.filter(pl.col("column") == c)["measured"].mean() for c in columns}
    return (
        "Minority F1 (mean over seeds and plants): "
        + ", ".join(f"{k} {_num(v)}" for k, v in values.items())
        + f" (thesis Apple: {thesis})"
    )


def _headline(ctx: _Context) -> str:
    table = tb.table_4_2(ctx.data.trials)
    caption = "Test F1, mean over seeds; thesis value and Δ = measured - thesis"
    _thesis_table(ctx, table, "Table 4.2: plain vs weighted loss vs final BN", "table_4_2", ["plant", "class"], caption)
    return _minority_means(table, ("plain", "WL", "final_BN"), "plain 0.294, WL 0.795, final BN 0.956")


def _bn_removal(ctx: _Context) -> str:
    table = tb.table_4_6(ctx.data.trials)
    caption = "Test F1, mean over seeds; thesis value and Δ = measured - thesis"
    _thesis_table(ctx, table, "Table 4.6: final BN kept vs removed at test", "table_4_6", ["plant", "class"], caption)
    labels = ("no final BN", "final BN", "final BN removed at test")
    return _minority_means(table, labels, "0.22, 0.91, 0.83")


def _mnist_cnn(ctx: _Context) -> str:
    table = tb.table_4_7(ctx.data.trials)
    caption = "Test F1 per digit; thesis value and Δ = measured - thesis"
    _thesis_table(ctx, table, "Table 4.7: MNIST digit settings, simple CNN", "table_4_7", ["setting", "class"], caption)
    first = table.filter(pl.col("class").str.contains("minority")).head(2)
    return "First setting's minority F1: " + ", ".join(
        f"{r['column']} {_num(r['measured'])} (thesis {_num(r['thesis'])})" for r in first.iter_rows(named=True)
    )


def _mnist_fc(ctx: _Context) -> str:
    table = tb.table_4_8(ctx.data.trials)
    ctx.doc.heading("Table 4.8: one hidden layer of 128, output x loss x first BN x final BN")
    ctx.save_table(table, "table_4_8")
    wide = table.select("row", "class", "measured", "thesis", "difference", "ci_low", "ci_high", "runs")
    ctx.doc.table(wide, "Test F1 per row; thesis value and difference = measured - thesis", 4)
    minority = table.filter(pl.col("class").str.contains("minority")).sort("measured", descending=True, nulls_last=True)
    best = minority.row(0, named=True)
    return f"Best row by minority F1: {best['row']} {_num(best['measured'])} (thesis best: softmax-cce-finalbn 0.88)"


def _generic(ctx: _Context) -> str:
    trials = ctx.data.trials
    return f"Mean test minority F1 over {trials.height} trials: {_num(trials['f1_minority'].mean())}"


SECTIONS: dict[str, Callable[[_Context], str]] = {
    "imbalance_ratio": _imbalance,
    "batch_size": _batch,
    "factorial": _factorial,
    "headline": _headline,
    "bn_removal": _bn_removal,
    "mnist_cnn": _mnist_cnn,
    "mnist_fc": _mnist_fc,
    "generic": _generic,
}


def _table_4_3(trials: pl.DataFrame, data: SweepData) -> pl.DataFrame | None:
    """Top three configurations per class on the first plant: precision, recall, F1, and the thesis' rows."""
    plant = fx.plant_column(trials)
    frame = trials.filter(pl.col(plant) == trials[plant][0]) if plant else trials
    minority, majority = tb.class_names(frame)
    if not minority or not majority:
        return None
    coded = fx.factor_codes(frame)
    parts = []
    for role, name in (("minority", minority[0]), ("majority", majority[0])):
        columns = [f"precision_{name}", f"recall_{name}", f"f1_{name}"]
        if any(c not in coded.columns for c in columns):
            return None
        means = coded.group_by("config_id", "config").agg(pl.col(columns).mean()).sort(columns[2], descending=True)
        top = means.head(3).with_row_index("rank", offset=1)
        thesis = TABLE_4_3[role]
        top = top.with_columns(
            pl.lit(tb.CLASS_NAMES[role]).alias("class"),
            pl.Series("thesis Config Id", [r[0] for r in thesis][: top.height]),
            pl.Series("thesis config", [fx.config_label(r[0]) for r in thesis][: top.height]),
            pl.Series("thesis F1", [r[3] for r in thesis][: top.height]),
        )
        parts.append(
            top.select(
                "class",
                "rank",
                "config_id",
                "config",
                pl.col(columns[0]).alias("precision"),
                pl.col(columns[1]).alias("recall"),
                pl.col(columns[2]).alias("F1"),
                "thesis Config Id",
                "thesis config",
                "thesis F1",
            )
        )
    return pl.concat(parts)


# ---------------------------------------------------------- generic sections


def _seed_aggregation(ctx: _Context) -> None:
    data = ctx.data
    metrics = [m for m in METRICS if m in data.trials.columns]
    keys = data.scientific_axes()
    table = aggregate(data.trials, keys, metrics)
    table = _in_label_order(table, data, keys)
    ctx.save_table(table, "seed_aggregation")
    display = table.select(*[pl.col(k).alias(k.removeprefix(AXIS)) for k in keys], "n").with_columns(
        [_summaries(table, m) for m in metrics]
    )
    ctx.doc.heading("Per configuration over seeds")
    ctx.doc.paragraph("Each cell: mean ± std [95% percentile-bootstrap CI of the mean] over the configuration's runs.")
    if display.height > MAX_ROWS:
        ctx.doc.note(f"{display.height} configurations: the first {MAX_ROWS} shown; all in tables/seed_aggregation.csv")
    ctx.doc.table(display.head(MAX_ROWS), "Final test metrics per configuration")


def _paired_sections(ctx: _Context) -> None:
    """Final BN - none per seed and per data split (validation, test), with CIs.

    Pairs are runs equal in every other varying config field (e.g. the ratio;
    for Table 4.8 the output, loss and first BN) and in the seed, so joint axes
    that set the final BN together with other fields (headline variants, Table
    4.8 rows) pair up by what they hold, not by their labels.
    """
    data = ctx.data
    trials = data.trials
    factor, treated, control = NORM, "bn", "none"
    if factor not in trials.columns or not {treated, control} <= set(trials[factor].to_list()):
        return
    by = [c for c in trials.columns if c.startswith(CONFIG) and c not in IGNORED and trials[c].n_unique() > 1]
    pair_on = [c for c in NUISANCE if c in trials.columns]
    frames = []
    for split, frame in split_tables(data).items():
        for metric in ("f1_minority", "f1_majority"):
            if metric not in frame.columns:
                continue
            pairs = paired_differences(frame, metric, factor, treated, control, pair_on=pair_on, by=by)
            frames.append(pairs.with_columns(pl.lit(split).alias("split"), pl.lit(metric).alias("metric")))
    if not frames:
        return
    pairs = pl.concat(frames, how="diagonal_relaxed")
    if pairs.height == 0:
        ctx.skip("Final BN vs none, paired by seed", "no run with final BN has a partner without it at equal settings")
        return
    ctx.save_table(pairs, "paired_differences")
    summary = summarise_differences(pairs, ["metric", "split", *by]).sort(["metric", "split", *by])
    ctx.doc.heading("Final BN vs none, paired by seed")
    ctx.doc.paragraph(
        f"Pairs: runs equal in every setting and in {', '.join(pair_on) or 'nothing else'}, one with final BN and "
        "one without; the difference is final BN minus none. Validation numbers are the last epoch's."
    )
    ctx.doc.table(summary, "Mean paired difference with 95% CI", 4)
    if pairs.height <= MAX_ROWS:
        shown = pairs.select("metric", "split", *by, *pair_on, "treated", "control", "difference")
        ctx.doc.table(shown.sort(["metric", "split", *by, *pair_on]), "Per seed")
    else:
        ctx.doc.note(f"{pairs.height} per-seed pairs: see tables/paired_differences.csv")


def split_tables(data: SweepData) -> dict[str, pl.DataFrame]:
    """Final metrics per trial for each data split: ``test`` from trials, ``val`` from the last epoch."""
    splits = {"test": data.trials}
    if data.epochs is not None and "val_f1_minority" in data.epochs.columns:
        last = data.epochs.sort("epoch").group_by("trial_id", maintain_order=True).last()
        val = last.select(
            "trial_id", *[pl.col(c).alias(c.removeprefix("val_")) for c in last.columns if c.startswith("val_")]
        )
        keep = [c for c in data.trials.columns if not c.startswith(("f1_", "precision_", "recall_"))]
        splits["val"] = data.trials.select(keep).join(val, on="trial_id", how="inner")
    return splits


def _comparison_figures(ctx: _Context, gradcam: bool | None) -> None:
    data = ctx.data
    comparison = choose_comparison(data)
    ctx.doc.heading("With and without final BN: losses, outputs, calibration, attention")
    if comparison is None:
        ctx.skip("Figures 4.3, 4.4, 4.8, 4.9", "the sweep has no final-BN run to compare")
        return
    ctx.doc.paragraph(f"Compared: {comparison.describe()}.")
    _loss_figure(ctx, comparison)
    _prediction_figures(ctx, comparison)
    _gradcam(ctx, comparison, gradcam)


def _loss_figure(ctx: _Context, comparison: Comparison) -> None:
    epochs = ctx.data.epochs
    if epochs is None or "train_loss" not in epochs.columns:
        ctx.skip("Figure 4.3 (loss curves)", "no per-epoch table (epochs.parquet or metrics.parquet artifacts)")
        return
    arms = {comparison.without_label: comparison.without_trials}
    trials = ctx.data.trials
    if "axis.variant" in trials.columns and "WL" in trials["axis.variant"].to_list():
        # Figure 4.3's middle panel: weighted loss at the same setting.
        same = [pl.col(k) == v for k, v in comparison.fixed.items() if k != "train.weighted_loss"]
        arms["weighted loss"] = trials.filter(pl.col("axis.variant") == "WL", *same)["trial_id"].to_list()
    arms[comparison.with_label] = comparison.with_trials
    if comparison.removed_at_test:
        arms = {comparison.with_label: comparison.with_trials}
    ctx.save_figure(
        fig.loss_figure(epochs, arms, title=ctx.data.name),
        "loss_curves",
        "Figure 4.3: loss per epoch, mean ± 1 std over runs (train, validation, test).",
    )


def _prediction_figures(ctx: _Context, comparison: Comparison) -> None:
    data = ctx.data
    minority, _ = tb.class_names(data.trials, require_metrics=False)
    with_sets = _predictions(data, comparison.with_trials, "")
    without_prefix = "nobn_" if comparison.removed_at_test else ""
    without_sets = _predictions(data, comparison.without_trials, without_prefix)
    if not with_sets or not without_sets or not minority:
        ctx.skip("Figures 4.8 and 4.9", "the trials' predictions.parquet files are not reachable")
        return
    name = minority[0]
    if any(name not in classes for _, _, classes in with_sets + without_sets):
        ctx.skip("Figures 4.8 and 4.9", f"the predictions have no probability column for minority class {name!r}")
        return
    panels = {}
    for label, sets in ((comparison.without_label, without_sets), (comparison.with_label, with_sets)):
        truth, probs, classes = sets[0]
        index = classes.index(name)
        panels[label] = (truth == index, probs[:, index])
    ctx.save_figure(
        fig.softmax_figure(panels, name, title=f"{data.name}: first seed"),
        "softmax_outputs",
        f"Figure 4.8: each test image's softmax output for class {name} (the minority), majority images first; "
        "dashed: 0.5.",
    )
    arms = {comparison.without_label: _pooled(without_sets), comparison.with_label: _pooled(with_sets)}
    if not comparison.removed_at_test:
        removed = _predictions(data, comparison.with_trials, "nobn_")
        if removed:
            arms["final BN removed at test"] = _pooled(removed)
    thesis = {comparison.with_label: FIGURE_4_9_BRIER["bn"], comparison.without_label: FIGURE_4_9_BRIER["none"]}
    ctx.save_figure(
        fig.reliability_figure(arms, thesis, title=f"{data.name}: test images pooled over runs"),
        "reliability",
        f"Figure 4.9: reliability diagram ({fig.ECE_BINS} confidence bins) and Brier score; thesis Brier "
        f"{FIGURE_4_9_BRIER['none']} without and {FIGURE_4_9_BRIER['bn']} with final BN (dashed marks).",
    )


def _predictions(data: SweepData, trial_ids: list[str], prefix: str) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    sets = []
    for trial_id in trial_ids:
        frame = data.predictions(trial_id)
        if frame is None:
            continue
        columns = [c for c in frame.columns if c.startswith(prefix + "prob_")]
        if not columns or (prefix == "" and any(c.startswith("nobn_") for c in columns)):
            continue
        classes = [c.removeprefix(prefix + "prob_") for c in columns]
        sets.append((frame["label_index"].to_numpy(), frame.select(columns).to_numpy().astype(np.float64), classes))
    return sets


def _pooled(sets: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([s[0] for s in sets]), np.concatenate([s[1] for s in sets])


def _gradcam(ctx: _Context, comparison: Comparison, wanted: bool | None) -> None:
    from finalbn.analysis import gradcam as cam

    data = ctx.data
    if wanted is False:
        ctx.skip("Figure 4.4 (Grad-CAM)", "turned off (--no-gradcam)")
        return
    if data.config(comparison.with_trials[0]).model.backbone == "fc128":
        ctx.skip("Figure 4.4 (Grad-CAM)", "fc128 has no convolution to explain")
        return
    cache = (data.folder / "analysis" / "models") if data.folder is not None else Path(tempfile.mkdtemp())
    ids = [comparison.with_trials[0]] + ([] if comparison.removed_at_test else [comparison.without_trials[0]])
    costly = [i for i in ids if cam.needs_retraining(data, i, cache) and not cam.cheap(data, i)]
    if wanted is None and costly:
        ctx.skip(
            "Figure 4.4 (Grad-CAM)",
            f"it would retrain {len(costly)} {data.config(costly[0]).model.backbone} trial(s) on CPU; "
            "run analysis/report.py --gradcam (or analysis/gradcam.py) to draw it",
        )
        return
    figure, caption = cam.gradcam_figure(data, comparison, cache)
    ctx.save_figure(figure, "gradcam", f"Figure 4.4: Grad-CAM of the minority class. {caption}.")


def _methods(ctx: _Context) -> None:
    ctx.doc.heading("Methods")
    fewest = _fewest_runs(ctx.data)
    if fewest < FEW_RUNS:
        line = (
            f"few runs: as few as {fewest} per configuration; a percentile-bootstrap interval from n runs covers the "
            "true mean far less often than 95% (with 2 runs it is their range: 50%), so read intervals as the spread "
            "of the runs at hand; the permutation and sign-flip p-values are exact and stay valid with few runs"
        )
        if fewest == 1:
            line = "one run per configuration: per-configuration intervals are undefined (shown as -)"
        ctx.notes.append(line)
        ctx.doc.note("Caution: " + line + ".")
    ctx.doc.paragraph(
        "Intervals are 95% percentile bootstraps over runs (2,000 resamples, seeded: the same tables give the same "
        "report). With two seeds an interval only shows how far the two runs are apart. Factorial intervals are "
        f"least-squares t-intervals. The methods are described in {DOCS} of the finalbn repository."
    )


# ------------------------------------------------------------------- helpers


def _planned(data: SweepData) -> int:
    """Trials the sweep declared; without its spec, what was finished plus what is known to be lacking
    (a failed trial's grid point is also a missing one, so they are not added twice)."""
    if data.spec is not None:
        return data.spec.size()
    return data.trials.height + max(len(data.missing), len(data.failed))


def _training_images(trials: pl.DataFrame) -> str:
    columns = ("data.train_majority", "data.train_minority")
    if any(c not in trials.columns for c in columns):
        return ""
    totals = sorted(set((trials[columns[0]] + trials[columns[1]]).to_list()))
    return ", ".join(str(t) for t in totals)


def _fewest_runs(data: SweepData) -> int:
    keys = data.scientific_axes()
    if not keys:
        return data.trials.height
    return int(data.trials.group_by(keys).len()["len"].min())


def _summaries(table: pl.DataFrame, metric: str) -> pl.Series:
    """``mean ± std [lo, hi]`` per row, three decimals, "-" where a value is undefined."""
    columns = [table[f"{metric}_{part}"].to_list() for part in ("mean", "std", "lo", "hi")]
    text = [f"{_num(mean)} ± {_num(std)} [{_num(lo)}, {_num(hi)}]" for mean, std, lo, hi in zip(*columns, strict=True)]
    return pl.Series(metric, text, dtype=pl.String)


def _in_label_order(table: pl.DataFrame, data: SweepData, keys: list[str]) -> pl.DataFrame:
    """Rows sorted by each key, axis labels in declared (or numeric) order rather than as text."""
    ranks = []
    for key in keys:
        if key.startswith(AXIS):
            order = data.label_order(key)
            ranks.append(pl.col(key).replace_strict(order, list(range(len(order))), default=len(order)))
        else:
            ranks.append(pl.col(key))
    return table.sort(ranks) if ranks else table


def _group_text(group: dict[str, object]) -> str:
    return ", ".join(f"{k.removeprefix(AXIS).rsplit('.', 1)[-1]}={v}" for k, v in group.items()) or "all"


def _num(value: object) -> str:
    return "-" if value is None or value != value else f"{float(value):.3f}"


@functools.cache
def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(finalbn.__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"

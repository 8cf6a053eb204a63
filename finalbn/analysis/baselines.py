"""Final BN against the imbalanced-learning literature: each method's minority F1 against final BN's, paired by
seed, per plant (and learning rate or ratio), on the balanced test set and under the training prior.

The arms are the sweep's ``method`` axis and its derived arms (the post-hoc methods, scored from trained
models' saved outputs); the comparisons are the sweep's declared contrasts on that axis, in declared order, so
nothing here names a method except through the declaration. A difference is treated - control, so with the
declared "method vs final_bn" contrasts a positive difference means the method found the minority better.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from finalbn.analysis.contrasts import arms_of, contrasts_of, paired
from finalbn.analysis.grid import AXIS
from finalbn.analysis.headline import Headline, SeedCount
from finalbn.analysis.sections import SECTIONS, Context, group_text, num
from finalbn.analysis.stats import aggregate, summarise_differences
from finalbn.sweep.spec import Contrast

# The two deployment priors a minority F1 is read under: the balanced test set the thesis scores, and the
# test set importance-weighted to the training prior (what a deployed detector meets).
PRIORS = {"balanced test": "f1_minority", "training prior": "f1_minority_natural"}
# Shown per arm beside the F1s: ranking (threshold-free) and calibration.
ARM_METRICS = (
    "f1_minority",
    "f1_minority_natural",
    "precision_minority_natural",
    "recall_minority",
    "auc",
    "ap",
    "balanced_accuracy",
    "ece",
    "brier",
)
METHOD_AXIS = "method"


@SECTIONS.register("baselines")
def baselines_section(ctx: Context) -> Headline:
    data, doc = ctx.data, ctx.doc
    doc.heading("Final BN against the imbalanced-learning literature")
    declared = [c for c in contrasts_of(data.spec) if c.axis == METHOD_AXIS]
    # The forest reads one way: every method against the headline contrast's control (final BN); contrasts
    # the other way round (final BN vs plain) are in the paired sections every report has.
    contrasts = [c for c in declared if c.control == declared[0].control] if declared else []
    if not contrasts:
        ctx.skip("The methods comparison", f"the sweep declares no contrast on a {METHOD_AXIS!r} axis")
        return Headline("Baselines", ("no contrast on a method axis declared: nothing compared",))
    arms = arms_of(data.trials, data.spec)
    for note in arms.notes():
        ctx.skip("Part of a post-hoc arm", note)
    frame = arms.trials
    column = AXIS + METHOD_AXIS
    groups = ctx.groups({METHOD_AXIS})
    summary = contrast_table(frame, contrasts, groups)
    means = aggregate(frame, [*groups, column], [m for m in ARM_METRICS if m in frame.columns])
    ctx.save_table(summary, "method_differences")
    ctx.save_table(means, "method_means")
    control = contrasts[0].control
    ctx.save_figure(
        forest_figure(summary, means, column, groups, control),
        "methods_forest",
        f"Each method's minority-F1 difference to {control} (method - {control}, mean over seeds paired by seed, "
        "95% percentile-bootstrap CI), per setting, on the balanced test set (dots) and under the training prior "
        f"(crosses); beside it each arm's ROC AUC and expected calibration error (mean, 95% CI), {control}'s last.",
    )
    doc.paragraph(
        "A difference is the method's minority F1 minus that of the arm it is contrasted with, paired by seed at "
        "equal settings; its interval is a 95% percentile bootstrap over the pairs, and a comparison counts as "
        "above or below only when that interval excludes zero. Under the training prior the balanced test set is "
        "importance-weighted to the training class frequencies: recall is unchanged, precision is what a deployed "
        "detector meets. Post-hoc methods are scored from the trained models' saved outputs, so they pair with "
        "their source runs exactly. No method's parameter or threshold rule was tuned: each runs at its paper's "
        "default."
    )
    doc.table(_shown(summary, groups), "Paired differences to the contrasted arm, per setting and prior")
    doc.table(_shown(means, [*groups, column]), "Each arm's test metrics per setting (mean over seeds)")
    pairs = int(summary["pairs"].min()) if summary.height else 0
    seeds = SeedCount(pairs, "comparison", "for reliable intervals")
    findings = []
    for prior, metric in PRIORS.items():
        if metric in set(summary["metric"]):
            findings.append(
                range_sentence(summary, metric, prior) if seeds.too_few else counts_sentence(summary, metric, prior)
            )
    best = strongest(summary, PRIORS["balanced test"])
    if best:
        findings.append(best)
    return Headline.of("Baselines", findings[:3], seeds)


def contrast_table(frame: pl.DataFrame, contrasts: list[Contrast], groups: list[str]) -> pl.DataFrame:
    """One row per declared contrast x setting x prior: mean paired difference, its CI, pairs, sign-flip p."""
    parts = []
    for contrast in contrasts:
        for metric in PRIORS.values():
            if metric not in frame.columns:
                continue
            pairs = paired(frame, metric, contrast, by=groups)
            if pairs.height == 0:
                continue
            summary = summarise_differences(pairs, groups)
            parts.append(
                summary.with_columns(
                    pl.lit(contrast.treated).alias("treated"),
                    pl.lit(contrast.control).alias("control"),
                    pl.lit(metric).alias("metric"),
                )
            )
    if not parts:
        return pl.DataFrame(schema={"treated": pl.String, "control": pl.String, "metric": pl.String, "pairs": pl.Int64})
    table = pl.concat(parts, how="diagonal_relaxed")
    return table.select("treated", "control", "metric", *groups, pl.exclude("treated", "control", "metric", *groups))


def counts_sentence(summary: pl.DataFrame, metric: str, prior: str) -> str:
    """How the contrasts came out on ``metric``: resolved above, below, and unresolved, as one sentence."""
    rows = summary.filter(pl.col("metric") == metric)
    better = rows.filter(pl.col("difference_lo") > 0).height
    worse = rows.filter(pl.col("difference_hi") < 0).height
    control = rows["control"][0]
    return (
        f"minority F1 on the {prior}, {rows.height} method x setting comparisons with {control}: "
        f"{worse} below it, {better} above it, {rows.height - better - worse} unresolved (95% paired CIs)"
    )


def range_sentence(summary: pl.DataFrame, metric: str, prior: str) -> str:
    """With too few seeds for intervals: only the range of the mean differences, naming both ends."""
    rows = summary.filter(pl.col("metric") == metric).sort("difference_mean", nulls_last=True)
    low, high = rows.row(0, named=True), rows.row(rows.height - 1, named=True)
    return (
        f"minority F1 on the {prior}, method - {low['control']}: mean from {low['difference_mean']:+.3f} "
        f"({low['treated']}) to {high['difference_mean']:+.3f} ({high['treated']})"
    )


def strongest(summary: pl.DataFrame, metric: str) -> str:
    """The treated arm with the highest mean difference over settings, as one sentence ("" if none)."""
    rows = summary.filter(pl.col("metric") == metric)
    if rows.height == 0:
        return ""
    means = rows.group_by("treated", "control").agg(pl.col("difference_mean").mean(), pl.len().alias("settings"))
    top = means.sort("difference_mean", descending=True, nulls_last=True).row(0, named=True)
    return (
        f"closest to {top['control']} on the balanced test: {top['treated']}, "
        f"{top['difference_mean']:+.3f} minority F1 on average over {top['settings']} setting(s)"
    )


def forest_figure(summary: pl.DataFrame, arms: pl.DataFrame, column: str, groups: list[str], control: str) -> Figure:
    """A forest plot per setting (one row of panels each): the F1 difference of each method to ``control`` under
    both priors, then each arm's AUC and ECE."""
    settings = _settings(summary, groups)
    # The control closes the list: no difference of its own, but its AUC and ECE are the reference.
    methods = [*summary["treated"].unique(maintain_order=True).to_list(), control]
    rows = max(1, len(settings))
    figure = Figure(figsize=(11, 0.34 * len(methods) * rows + 1.2 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, 3, sharey="row", gridspec_kw={"width_ratios": [2.2, 1, 1]}))
    for row, setting in enumerate(settings):
        picked = _where(summary, setting)
        forest, auc, ece = axes[row]
        for (prior, metric), marker, shift in zip(PRIORS.items(), ("o", "x"), (-0.15, 0.15), strict=True):
            part = picked.filter(pl.col("metric") == metric)
            if part.height == 0:
                continue
            y = np.array([methods.index(m) for m in part["treated"].to_list()]) + shift
            mean, low, high = (part[f"difference_{k}"] for k in ("mean", "lo", "hi"))
            _interval(forest, mean, low, high, y, marker, label=prior if row == 0 else None)
        forest.axvline(0, color="grey", lw=1)
        if row == 0:
            forest.legend(fontsize=7, loc="lower right")
        forest.set_yticks(range(len(methods)), methods, fontsize=8)
        forest.invert_yaxis()
        forest.set_title(group_text(setting) if setting else "all settings", fontsize=9, loc="left")
        forest.set_xlabel(f"minority F1: method - {control}", fontsize=8)
        arm_rows = _where(arms, setting)
        for ax, metric in ((auc, "auc"), (ece, "ece")):
            if f"{metric}_mean" not in arm_rows.columns:
                ax.set_visible(False)
                continue
            present = arm_rows.filter(pl.col(column).is_in(methods))
            y = np.array([methods.index(m) for m in present[column].to_list()])
            _interval(ax, present[f"{metric}_mean"], present[f"{metric}_lo"], present[f"{metric}_hi"], y, "o")
            ax.set_xlabel(metric.upper() + " (mean, 95% CI)", fontsize=8)
        for ax in (forest, auc, ece):
            ax.grid(alpha=0.3, axis="x")
            ax.tick_params(labelsize=8)
    return figure


def _interval(
    ax: Axes, mean: pl.Series, low: pl.Series, high: pl.Series, y: np.ndarray, marker: str, label: str | None = None
) -> None:
    centre = mean.to_numpy().astype(float)
    lo = centre - low.fill_null(float("nan")).to_numpy().astype(float)
    hi = high.fill_null(float("nan")).to_numpy().astype(float) - centre
    ax.errorbar(centre, y, xerr=np.vstack([lo, hi]), fmt=marker, ms=4, capsize=2, color="#1f4e79", label=label)


def _settings(frame: pl.DataFrame, groups: list[str]) -> list[dict[str, object]]:
    if not groups:
        return [{}]
    return frame.select(groups).unique(maintain_order=True).to_dicts()


def _where(frame: pl.DataFrame, setting: dict[str, object]) -> pl.DataFrame:
    for key, value in setting.items():
        frame = frame.filter(pl.col(key) == value)
    return frame


def _shown(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Axis columns without their prefix, numbers as report cells (three decimals)."""
    renamed = frame.rename({k: k.removeprefix(AXIS) for k in keys if k in frame.columns})
    return renamed.with_columns(
        [pl.col(c).map_elements(num, return_dtype=pl.String) for c, t in renamed.schema.items() if t == pl.Float64]
    )

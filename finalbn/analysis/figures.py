"""The thesis' figures, redrawn from a sweep with intervals (matplotlib, PNG).

Figures are built on ``matplotlib.figure.Figure`` directly, never pyplot:
no global backend or figure state, so the functions are safe in a server, a
test or a sweep's driver, and render with Agg when saved to PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from finalbn.analysis.thesis import FIGURE_4_6_THRESHOLD
from finalbn.analysis.threshold import RATIO, Threshold
from finalbn.records import write_atomic
from finalbn.sweep.spec import Contrast

# The bins of the ECE each trial records (finalbn.metrics.ECE_BINS, which tests/test_metrics.py holds this to):
# the diagram shows the same bins its caption's ECE sums over. Analysis imports no scoring code.
ECE_BINS = 15

DPI = 110
# A contrast's treated arm, its control, and a third line (a derived arm, the majority class).
COLORS = {"treated": "#c0392b", "control": "#2c3e50", "third": "#7f8c8d"}
# Panel titles and legends per metric when the caller does not name the classes (classes.DataNames.titles).
CLASS_TITLES = {"f1_minority": "minority class", "f1_majority": "majority class"}


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # format given: the temporary file's name does not end in .png.
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight"))
    return path


def imbalance_figure(
    curves: pl.DataFrame,
    found: Sequence[Threshold],
    contrast: Contrast,
    arm: str,
    groups: Sequence[str] = (),
    title: str = "",
    titles: Mapping[str, str] = CLASS_TITLES,
) -> Figure:
    """Figure 4.6: test F1 against the imbalance ratio, the contrast's treated and control arm, 95% CI bands.

    ``curves``: aggregate() output over ``ratio``, the column ``arm`` holding the contrast's labels and
    ``groups``, with ``f1_minority_*`` and ``f1_majority_*`` columns. The threshold found for
    each class is shaded, not drawn as a line: dark over the bracket of swept
    ratios holding it, light over its 95% interval, which is as precise as the
    grid and the seeds allow. The ratio axis is logarithmic, as the grids are.
    """
    metrics = [m for m in ("f1_minority", "f1_majority") if f"{m}_mean" in curves.columns]
    figure = Figure(figsize=(6 * len(metrics), 4.2))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    group_rows = curves.select(groups).unique(maintain_order=True).iter_rows(named=True) if groups else [{}]
    styles = ["-", "--", ":", "-."]
    for ax, metric in zip(axes, metrics, strict=True):
        for index, group in enumerate(group_rows):
            subset = curves.filter(*[pl.col(k) == v for k, v in group.items()]) if group else curves
            suffix = "".join(f", {k.rsplit('.', 1)[-1]}={v}" for k, v in group.items())
            for role, label in (("treated", contrast.treated), ("control", contrast.control)):
                line = subset.filter(pl.col(arm).cast(pl.String) == label).sort(RATIO)
                if line.height == 0:
                    continue
                band(ax, line[RATIO], line, metric, COLORS[role], styles[index % 4], label + suffix)
        for t in found:
            if t.metric == metric and t.bracket is not None:
                where = "".join(f", {k.rsplit('.', 1)[-1]}={v}" for k, v in t.group.items())
                label = f"threshold between {t.bracket[0]:.3g} and {t.bracket[1]:.3g}{where}"
                ax.axvspan(*t.bracket, color="#27ae60", alpha=0.3, label=label)
                high = t.high if t.high is not None else t.largest_ratio
                ax.axvspan(t.low, high, color="#27ae60", alpha=0.1)
        ax.axvline(FIGURE_4_6_THRESHOLD, color="grey", ls="--", lw=1, label="thesis: levels off near 0.10")
        ax.set_xscale("log")
        ratios = sorted(set(curves[RATIO].to_list()))
        ax.set_xticks(ratios, [f"{r:.3g}" for r in ratios], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("imbalance ratio (minority / majority training images, log scale)")
        ax.set_ylabel("test F1")
        ax.set_title(titles[metric])
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        figure.suptitle(title)
    return figure


def loss_figure(epochs: pl.DataFrame, arms: dict[str, list[str]], title: str = "") -> Figure:
    """Figure 4.3: train/validation/test loss per epoch, mean and +-1 std over runs, one panel per arm."""
    figure = Figure(figsize=(5 * len(arms), 3.8))
    axes = figure.subplots(1, len(arms), squeeze=False, sharey=True)[0]
    for ax, (label, trial_ids) in zip(axes, arms.items(), strict=True):
        runs = epochs.filter(pl.col("trial_id").is_in(trial_ids))
        for column, color in (("train_loss", "#2980b9"), ("val_loss", "#e67e22"), ("test_loss", "#8e44ad")):
            if column not in runs.columns:
                continue
            stats = (
                runs.group_by("epoch")
                .agg(pl.col(column).mean().alias("mean"), pl.col(column).std().fill_null(0).alias("std"))
                .sort("epoch")
            )
            x, mean, std = stats["epoch"].to_numpy(), stats["mean"].to_numpy(), stats["std"].to_numpy()
            ax.plot(x, mean, color=color, label=column.replace("_", " "))
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
        ax.set_title(f"{label} ({len(trial_ids)} runs)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (mean ± std over runs)")
    axes[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def softmax_figure(panels: dict[str, tuple[np.ndarray, np.ndarray]], minority: str, title: str = "") -> Figure:
    """Figure 4.8: per test image, the predicted probability of the minority class, by true class.

    ``panels``: label -> (is_minority per image, minority probability per image).
    """
    figure = Figure(figsize=(5.5 * len(panels), 3.8))
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (label, (truth, prob)) in zip(axes, panels.items(), strict=True):
        order = np.argsort(truth, kind="stable")
        x = np.arange(len(order))
        truth_sorted, prob_sorted = truth[order], prob[order]
        ax.scatter(x[~truth_sorted], prob_sorted[~truth_sorted], s=6, color="#2980b9", label="true: majority")
        ax.scatter(x[truth_sorted], prob_sorted[truth_sorted], s=6, color="#c0392b", label="true: minority")
        ax.step(x, truth_sorted.astype(float), color="black", lw=1, where="mid", label="ground truth")
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.set_title(label)
        ax.set_xlabel("test image (majority first, then minority)")
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel(f"softmax output P(class {minority})")
    axes[0].legend(fontsize=7, loc="center left")
    if title:
        figure.suptitle(title)
    return figure


def reliability_figure(
    arms: dict[str, tuple[np.ndarray, np.ndarray]], thesis: dict[str, float] | None = None, title: str = ""
) -> Figure:
    """Figure 4.9: reliability diagram (top-label confidence vs accuracy) and Brier score per arm.

    ``arms``: label -> (true label index per image, class-probability matrix), pooled over runs.
    ``thesis``: label -> the thesis' Brier score for that arm, drawn as a dashed mark.
    """
    figure = Figure(figsize=(11, 4.2))
    left, right = figure.subplots(1, 2, width_ratios=[1.4, 1])
    left.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    edges = np.linspace(0, 1, ECE_BINS + 1)
    names, briers = [], []
    for (label, (truth, probs)), color in zip(arms.items(), _arm_colors(len(arms)), strict=True):
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == truth
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, ECE_BINS - 1)
        xs, ys = [], []
        for b in range(ECE_BINS):
            inside = which == b
            if inside.any():
                xs.append(confidence[inside].mean())
                ys.append(correct[inside].mean())
        brier = brier_score(truth, probs)
        left.plot(xs, ys, marker="o", color=color, label=f"{label} (Brier {brier:.3f})")
        names.append(label)
        briers.append(brier)
    left.set_xlabel("confidence (top-label probability)")
    left.set_ylabel("accuracy")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    positions = np.arange(len(names))
    right.bar(positions, briers, color=_arm_colors(len(arms)))
    right.set_xticks(positions, names, fontsize=7)
    for position, name in zip(positions, names, strict=True):
        value = (thesis or {}).get(name)
        if value is not None:
            right.plot([position - 0.4, position + 0.4], [value, value], color="black", ls="--", lw=1)
    right.set_ylabel("Brier score (lower is better; dashed: thesis)")
    right.grid(alpha=0.3, axis="y")
    if title:
        figure.suptitle(title)
    return figure


def effects_figure(table: pl.DataFrame, title: str = "") -> Figure:
    """Factorial effects with 95% CIs (a forest plot), one colour per scope (plant or pooled)."""
    terms = table["term"].unique(maintain_order=True).to_list()
    scopes = table["scope"].unique(maintain_order=True).to_list()
    figure = Figure(figsize=(7, 0.32 * len(terms) * max(1, len(scopes)) ** 0.5 + 1.5))
    ax = figure.subplots()
    offsets = np.linspace(-0.25, 0.25, len(scopes)) if len(scopes) > 1 else [0.0]
    for scope, offset, color in zip(scopes, offsets, _arm_colors(len(scopes)), strict=True):
        rows = table.filter(pl.col("scope") == scope)
        y = np.array([terms.index(t) for t in rows["term"].to_list()]) + offset
        est = rows["estimate"].to_numpy()
        low = est - rows["ci_low"].fill_null(float("nan")).to_numpy()
        high = rows["ci_high"].fill_null(float("nan")).to_numpy() - est
        ax.errorbar(est, y, xerr=np.vstack([low, high]), fmt="o", color=color, ms=4, capsize=2, label=scope)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(terms)), terms, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("effect on test F1 (option on - off), 95% CI")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return figure


def gain_factor_figure(table: pl.DataFrame, title: str = "", titles: Mapping[str, str] = CLASS_TITLES) -> Figure:
    """Figure 4.5: relative F1 gain of each single option over none, per class."""
    options = table["option"].unique(maintain_order=True).to_list()
    figure = Figure(figsize=(7, 3.8))
    ax = figure.subplots()
    width = 0.38
    for index, (metric, color) in enumerate((("f1_minority", COLORS["treated"]), ("f1_majority", COLORS["control"]))):
        rows = table.filter(pl.col("metric") == metric)
        values = [rows.filter(pl.col("option") == o)["gain_factor"].fill_null(float("nan")).to_list() for o in options]
        heights = [v[0] if v else float("nan") for v in values]
        ax.bar(np.arange(len(options)) + (index - 0.5) * width, heights, width, color=color, label=titles[metric])
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(options)), options)
    ax.set_ylabel("gain factor (F1 option - F1 none) / F1 none")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return figure


def brier_score(truth: np.ndarray, probs: np.ndarray) -> float:
    """The metrics module's convention: two classes -> squared error of the class-1 probability."""
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - (truth == 1)) ** 2))
    onehot = np.eye(probs.shape[1])[truth]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def band(
    ax: object, x: pl.Series, frame: pl.DataFrame, metric: str, color: str, style: str, label: str, marker: str = "o"
) -> None:
    xs = x.cast(pl.Float64).to_numpy()
    mean = frame[f"{metric}_mean"].to_numpy()
    low = frame[f"{metric}_lo"].fill_null(float("nan")).to_numpy()
    high = frame[f"{metric}_hi"].fill_null(float("nan")).to_numpy()
    # A point with one run has no interval: its band collapses to the mean.
    low, high = np.where(np.isnan(low), mean, low), np.where(np.isnan(high), mean, high)
    ax.plot(xs, mean, ls=style, marker=marker, ms=4, color=color, label=label)
    ax.fill_between(xs, low, high, color=color, alpha=0.18)


def _arm_colors(count: int) -> list[str]:
    palette = [COLORS["treated"], COLORS["control"], COLORS["third"], "#27ae60", "#8e44ad", "#d35400"]
    return [palette[i % len(palette)] for i in range(count)]

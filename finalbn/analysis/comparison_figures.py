"""The report's with/without-final-BN figures: losses (4.3), softmax outputs (4.8), calibration (4.9),
Grad-CAM (4.4), all of the one setting ``compare.choose_comparison`` picks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis import tables as tb
from finalbn.analysis.compare import Comparison, choose_comparison
from finalbn.analysis.sections import Context
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.thesis import FIGURE_4_9_BRIER

# One trial's test predictions: true class indices, class probabilities (images x classes), class names.
PredictionSet = tuple[np.ndarray, np.ndarray, list[str]]


def comparison_figures(ctx: Context, gradcam: bool | None) -> None:
    """``gradcam``: None draws Figure 4.4 when it is cheap, True always, False never."""
    comparison = choose_comparison(ctx.data)
    ctx.doc.heading("With and without final BN: losses, outputs, calibration, attention")
    if comparison is None:
        ctx.skip("Figures 4.3, 4.4, 4.8, 4.9", "the sweep has no final-BN run to compare")
        return
    ctx.doc.paragraph(f"Compared: {comparison.describe()}.")
    _loss_figure(ctx, comparison)
    _prediction_figures(ctx, comparison)
    _gradcam(ctx, comparison, gradcam)


def _loss_figure(ctx: Context, comparison: Comparison) -> None:
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


def _prediction_figures(ctx: Context, comparison: Comparison) -> None:
    data = ctx.data
    minority, _ = tb.class_names(data.trials, require_metrics=False)
    with_sets = _predictions(data, comparison.with_trials, "")
    without_sets = _predictions(data, comparison.without_trials, "nobn_" if comparison.removed_at_test else "")
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
        f"Figure 4.8: each test image's softmax output for class {name} (the minority) in the first seed's run of "
        "each arm, majority images first; black: the true class; dashed: 0.5.",
    )
    arms = {comparison.without_label: _pooled(without_sets), comparison.with_label: _pooled(with_sets)}
    if not comparison.removed_at_test:
        removed = _predictions(data, comparison.with_trials, "nobn_")
        if removed:
            arms["final BN removed at test"] = _pooled(removed)
    # The thesis' no-BN Brier is of a network trained without final BN, not of one with it removed at test.
    thesis = {comparison.with_label: FIGURE_4_9_BRIER["bn"]}
    marks = f"{FIGURE_4_9_BRIER['bn']} with final BN"
    if not comparison.removed_at_test:
        thesis[comparison.without_label] = FIGURE_4_9_BRIER["none"]
        marks = f"{FIGURE_4_9_BRIER['none']} without and {marks}"
    ctx.save_figure(
        fig.reliability_figure(arms, thesis, title=f"{data.name}: test images pooled over runs"),
        "reliability",
        f"Figure 4.9: reliability diagram ({fig.ECE_BINS} confidence bins; accuracy against top-label "
        f"confidence) and Brier score per arm, test images pooled over the compared runs; dashed marks: the "
        f"thesis' Brier {marks}.",
    )


def _predictions(data: SweepData, trial_ids: list[str], prefix: str) -> list[PredictionSet]:
    """Each reachable trial's predictions under ``prefix`` ("nobn_": scored with the final BN removed)."""
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


def _pooled(sets: list[PredictionSet]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([s[0] for s in sets]), np.concatenate([s[1] for s in sets])


def _gradcam(ctx: Context, comparison: Comparison, wanted: bool | None) -> None:
    # Imported here: it pulls in torch and the models, which the rest of the report never needs.
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

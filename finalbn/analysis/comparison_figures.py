"""The report's figures of the headline contrast's two arms: losses (4.3), softmax outputs (4.8), calibration
(4.9), Grad-CAM (4.4), all of the one setting ``compare.choose_comparison`` picks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis import tables as tb
from finalbn.analysis.compare import Comparison, choose_comparison
from finalbn.analysis.contrasts import NO_CONTRAST, headline_contrast
from finalbn.analysis.sections import Context
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.thesis import FIGURE_4_9_BRIER
from finalbn.records.folders import ANALYSIS_MODELS, EPOCHS_TABLE, METRICS, PREDICTIONS
from finalbn.sweep.experiments import FACTORS

# One trial's test predictions: true class indices, class probabilities (images x classes), class names.
PredictionSet = tuple[np.ndarray, np.ndarray, list[str]]


def comparison_figures(ctx: Context, gradcam: bool | None) -> None:
    """``gradcam``: None draws Figure 4.4 when it is cheap, True always, False never."""
    comparison = choose_comparison(ctx.data)
    contrast = headline_contrast(ctx.data.spec)
    compared = contrast.text() if contrast else "The headline contrast"
    ctx.doc.heading(f"{compared}: losses, outputs, calibration, attention")
    if contrast is None:
        ctx.skip("Figures 4.3, 4.4, 4.8, 4.9", NO_CONTRAST)
        return
    if comparison is None:
        ctx.skip("Figures 4.3, 4.4, 4.8, 4.9", f"no setting of the sweep holds both {contrast.text()}")
        return
    ctx.doc.paragraph(f"Compared: {comparison.describe()}.")
    _loss_figure(ctx, comparison)
    _prediction_figures(ctx, comparison)
    _gradcam(ctx, comparison, gradcam)


def _loss_figure(ctx: Context, comparison: Comparison) -> None:
    epochs = ctx.data.epochs
    if epochs is None or "train_loss" not in epochs.columns:
        ctx.skip("Figure 4.3 (loss curves)", f"no per-epoch table ({EPOCHS_TABLE} or {METRICS} artifacts)")
        return
    # A derived arm trained nothing of its own: its source's curves are already there.
    arms = {arm.label: arm.trials for arm in comparison.arms() if not arm.derived}
    ctx.save_figure(
        fig.loss_figure(epochs, arms, title=ctx.data.name),
        "loss_curves",
        "Figure 4.3: loss per epoch, mean ± 1 std over runs (train, validation, test).",
    )


def _prediction_figures(ctx: Context, comparison: Comparison) -> None:
    data = ctx.data
    minority, _ = tb.class_names(data.trials, require_metrics=False)
    treated, control = comparison.treated, comparison.control
    with_sets = _predictions(data, treated.trials, treated.prefix)
    without_sets = _predictions(data, control.trials, control.prefix)
    if not with_sets or not without_sets or not minority:
        ctx.skip("Figures 4.8 and 4.9", f"the trials' {PREDICTIONS} files are not reachable")
        return
    name = minority[0]
    if any(name not in classes for _, _, classes in with_sets + without_sets):
        ctx.skip("Figures 4.8 and 4.9", f"the predictions have no probability column for minority class {name!r}")
        return
    panels = {}
    for label, sets in ((control.label, without_sets), (treated.label, with_sets)):
        truth, probs, classes = sets[0]
        index = classes.index(name)
        panels[label] = (truth == index, probs[:, index])
    ctx.save_figure(
        fig.softmax_figure(panels, name, title=f"{data.name}: first seed"),
        "softmax_outputs",
        f"Figure 4.8: each test image's softmax output for class {name} (the minority) in the first seed's run of "
        "each arm, majority images first; black: the true class; dashed: 0.5.",
    )
    arms = {}
    for arm in comparison.arms():
        sets = _predictions(data, arm.trials, arm.prefix)
        if sets:
            arms[arm.label] = _pooled(sets)
    thesis, marks = _thesis_brier(data, comparison)
    ctx.save_figure(
        fig.reliability_figure(arms, thesis, title=f"{data.name}: test images pooled over runs"),
        "reliability",
        f"Figure 4.9: reliability diagram ({fig.ECE_BINS} confidence bins; accuracy against top-label "
        f"confidence) and Brier score per arm, test images pooled over the compared runs"
        + (f"; dashed marks: the thesis' Brier {marks}." if marks else "."),
    )


def _thesis_brier(data: SweepData, comparison: Comparison) -> tuple[dict[str, float], str]:
    """The thesis' Figure 4.9 Brier scores, marked on the arms they are of: a trained arm with the final BN
    (treated) and one without (control), as the thesis' factor declares them; none for any other contrast."""
    field, on, off = FACTORS["BN"]
    treated, control = comparison.treated, comparison.control
    if treated.derived or control.derived or field not in data.trials.columns:
        return {}, ""
    values = {
        arm.label: set(data.trials.filter(pl.col("trial_id").is_in(arm.trials))[field].to_list())
        for arm in (treated, control)
    }
    if values[treated.label] != {on} or values[control.label] != {off}:
        return {}, ""
    thesis = {treated.label: FIGURE_4_9_BRIER["bn"], control.label: FIGURE_4_9_BRIER["none"]}
    return thesis, f"{FIGURE_4_9_BRIER['none']} without and {FIGURE_4_9_BRIER['bn']} with final BN"


def _predictions(data: SweepData, trial_ids: list[str], prefix: str) -> list[PredictionSet]:
    """Each reachable trial's predictions under ``prefix`` (a derived arm's, "" for the trained model's)."""
    sets = []
    for trial_id in trial_ids:
        frame = data.predictions(trial_id)
        if frame is None:
            continue
        columns = [c for c in frame.columns if c.startswith(prefix + "prob_")]
        if not columns:
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
    trained = [arm for arm in (comparison.control, comparison.treated) if cam.drawable(arm)]
    if len(trained) < 2:
        ctx.skip("Figure 4.4 (Grad-CAM)", "an arm is scored from another's outputs other than by removing the final BN")
        return
    if data.config(comparison.treated.trials[0]).model.backbone == "fc128":
        ctx.skip("Figure 4.4 (Grad-CAM)", "fc128 has no convolution to explain")
        return
    cache = data.folder.joinpath(*ANALYSIS_MODELS) if data.folder is not None else Path(tempfile.mkdtemp())
    ids = list(dict.fromkeys(arm.trials[0] for arm in trained))
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

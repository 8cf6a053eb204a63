"""Per-class precision/recall/F1, expected calibration error and Brier score.

Metric names are flat strings so that a row of them is a Parquet row and a set
of MLflow metrics without translation: ``f1_<class>``, ``f1_minority`` (mean
over the minority classes), ``accuracy``, ``ece``, ``brier``; and what explains
an F1 change (issue 12): ``auc`` (threshold-free), ``minority_prob_on_majority``
/ ``minority_prob_on_minority`` (where the decision threshold meets the scores),
and the final BN's learned ``bn_scale_*`` / ``bn_shift_*`` and running
``bn_mean_*`` / ``bn_var_*`` per class and as minority/majority means.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Guo et al. (2017), whom the thesis follows for its reliability diagrams, use 15 bins.
ECE_BINS = 15


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    minority: tuple[int, ...],
) -> dict[str, float]:
    """Accuracy and per-class P/R/F1 of argmax predictions, plus group means.

    A class that is never predicted has precision 0 (not NaN), the convention
    under which the thesis reports F1 0.00 for a never-found minority class.
    """
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    row: dict[str, float] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for index, name in enumerate(classes):
        row[f"precision_{name}"] = float(precision[index])
        row[f"recall_{name}"] = float(recall[index])
        row[f"f1_{name}"] = float(f1[index])
    majority = [i for i in labels if i not in minority]
    row["f1_minority"] = float(np.mean(f1[list(minority)]))
    row["f1_majority"] = float(np.mean(f1[majority]))
    return row


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """ECE over top-label confidence and the Brier score (scikit-learn's convention).

    For two classes the Brier score is the mean squared error of the class-1
    probability, the form the thesis quotes (0.349 without final BN, 0.158 with).
    """
    labels = list(range(probs.shape[1]))
    if len(labels) == 2:
        brier = brier_score_loss(y_true, probs[:, 1], pos_label=1)
    else:
        brier = brier_score_loss(y_true, probs, labels=labels)
    return {"ece": expected_calibration_error(y_true, probs), "brier": float(brier)}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, so a confidence of exactly 1.0 falls in the last one.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(gap)


def separation_metrics(y_true: np.ndarray, probs: np.ndarray, minority: tuple[int, ...]) -> dict[str, float]:
    """How well and where the model ranks minority against majority images, with no threshold.

    The score of an image is its total minority probability. ``auc``: ROC AUC of
    that score for "is minority" (NaN when the test set lacks either group).
    ``minority_prob_on_majority`` / ``_on_minority``: its mean over the majority
    / minority test images. A final BN that lifts minority F1 by moving the
    scores past argmax's threshold, not by ranking better, raises F1 with
    ``auc`` unchanged and the minority probability up on both groups.
    """
    is_minority = np.isin(y_true, minority)
    score = probs[:, list(minority)].sum(axis=1)
    both = is_minority.any() and not is_minority.all()
    return {
        "auc": float(roc_auc_score(is_minority, score)) if both else float("nan"),
        "minority_prob_on_majority": _mean_or_nan(score[~is_minority]),
        "minority_prob_on_minority": _mean_or_nan(score[is_minority]),
    }


def final_bn_metrics(
    weight: np.ndarray,
    bias: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    classes: tuple[str, ...],
    minority: tuple[int, ...],
) -> dict[str, float]:
    """The final BN's per-class learned scale (weight) and shift (bias) and its running
    statistics, by class name and as minority/majority means: in eval mode logit c becomes
    scale_c * (z_c - mean_c) / sqrt(var_c + eps) + shift_c, so these say how it moved the logits."""
    row: dict[str, float] = {}
    values = {"scale": weight, "shift": bias, "mean": running_mean, "var": running_var}
    majority = [i for i in range(len(classes)) if i not in minority]
    for what, per_class in values.items():
        for index, name in enumerate(classes):
            row[f"bn_{what}_{name}"] = float(per_class[index])
        row[f"bn_{what}_minority"] = float(np.mean(per_class[list(minority)]))
        row[f"bn_{what}_majority"] = float(np.mean(per_class[majority]))
    return row


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def confusion(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(num_classes)))

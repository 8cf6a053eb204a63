"""Per-class precision/recall/F1, expected calibration error and Brier score.

Metric names are flat strings so that a row of them is a Parquet row and a set
of MLflow metrics without translation: ``f1_<class>``, ``f1_minority`` (mean
over the minority classes), ``accuracy``, ``ece``, ``brier``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_fscore_support,
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


def confusion(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(num_classes)))

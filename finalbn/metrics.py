"""Per-class precision/recall/F1, expected calibration error and Brier score.

Metric names are flat strings so that a row of them is a Parquet row and a set
of MLflow metrics without translation: ``f1_<class>``, ``f1_minority`` (mean
over the minority classes), ``accuracy``, ``ece``, ``brier``; and what explains
an F1 change (issue 12): ``auc`` (threshold-free), ``minority_prob_on_majority``
/ ``minority_prob_on_minority`` (where the decision threshold meets the scores),
and the final BN's learned ``bn_scale_*`` / ``bn_shift_*`` and running
``bn_mean_*`` / ``bn_var_*`` per class and as minority/majority means.

A trial's final metric set (:func:`trial_metrics`, issue 20) adds ``ap``,
``balanced_accuracy``, ``precision_minority``, ``recall_minority`` and the same
test set scored under the training prior (``*_natural``, see
:func:`natural_prior_metrics`); the post-hoc decision threshold of
:func:`val_threshold` predicts with :func:`thresholded`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Guo et al. (2017), whom the thesis follows for its reliability diagrams, use 15 bins.
ECE_BINS = 15


def trial_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    minority: tuple[int, ...],
    train_prior: np.ndarray,
    predicted: np.ndarray | None = None,
) -> dict[str, float]:
    """A trained model's complete test metric set: classification, calibration, separation,
    balanced accuracy and minority precision/recall, and the natural-prior metrics.

    Every scored variant (the model, post-hoc adjusted or thresholded, its final BN removed)
    goes through this one function, so their sets are the same. ``predicted``: the decisions
    when they are not the argmax of ``probs`` (a tuned threshold); calibration and separation
    read ``probs`` only. ``train_prior``: the training class prior, by class index.
    """
    y_pred = probs.argmax(axis=1) if predicted is None else predicted
    precision, recall, _ = minority_scores(y_true, y_pred, len(classes), minority)
    return (
        classification_metrics(y_true, probs, classes, minority, predicted=y_pred)
        | calibration_metrics(y_true, probs)
        | separation_metrics(y_true, probs, minority)
        | {
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "precision_minority": precision,
            "recall_minority": recall,
        }
        | natural_prior_metrics(y_true, probs, minority, train_prior, y_pred)
    )


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    minority: tuple[int, ...],
    predicted: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy and per-class P/R/F1 of argmax predictions (or of ``predicted``), plus group means.

    A class that is never predicted has precision 0 (not NaN), the convention
    under which the thesis reports F1 0.00 for a never-found minority class.
    """
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1) if predicted is None else predicted
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
    return {"ece": expected_calibration_error(y_true, probs), "brier": brier_score(y_true, probs)}


def brier_score(y_true: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """scikit-learn's Brier score: of the class-1 probability for two classes, else multiclass."""
    labels = list(range(probs.shape[1]))
    if len(labels) == 2:
        return float(brier_score_loss(y_true, probs[:, 1], pos_label=1, sample_weight=sample_weight))
    return float(brier_score_loss(y_true, probs, labels=labels, sample_weight=sample_weight))


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS, sample_weight: np.ndarray | None = None
) -> float:
    """Mean gap between confidence and accuracy over equal-width bins, each bin weighted by its
    share of the images (of their ``sample_weight``, when given). scikit-learn has no ECE."""
    weight = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, so a confidence of exactly 1.0 falls in the last one.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        in_bin = which == b
        mass = weight[in_bin].sum()
        if mass > 0:
            accuracy = (weight[in_bin] * correct[in_bin]).sum() / mass
            mean_confidence = (weight[in_bin] * confidence[in_bin]).sum() / mass
            gap += mass / weight.sum() * abs(accuracy - mean_confidence)
    return float(gap)


def separation_metrics(y_true: np.ndarray, probs: np.ndarray, minority: tuple[int, ...]) -> dict[str, float]:
    """How well and where the model ranks minority against majority images, with no threshold.

    The score of an image is its total minority probability. ``auc``: ROC AUC of
    that score for "is minority" (NaN when the test set lacks either group);
    ``ap``: its average precision (scikit-learn's, the same NaN).
    ``minority_prob_on_majority`` / ``_on_minority``: its mean over the majority
    / minority test images. A final BN that lifts minority F1 by moving the
    scores past argmax's threshold, not by ranking better, raises F1 with
    ``auc`` unchanged and the minority probability up on both groups.
    """
    is_minority = np.isin(y_true, minority)
    score = minority_score(probs, minority)
    both = is_minority.any() and not is_minority.all()
    return {
        "auc": float(roc_auc_score(is_minority, score)) if both else float("nan"),
        "ap": float(average_precision_score(is_minority, score)) if both else float("nan"),
        "minority_prob_on_majority": _mean_or_nan(score[~is_minority]),
        "minority_prob_on_minority": _mean_or_nan(score[is_minority]),
    }


def minority_score(probs: np.ndarray, minority: tuple[int, ...]) -> np.ndarray:
    """An image's total minority probability: the score every threshold-free metric ranks by."""
    return probs[:, list(minority)].sum(axis=1)


def minority_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    minority: tuple[int, ...],
    sample_weight: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Precision, recall and F1 of the minority classes (means over them, as ``f1_minority``),
    never-predicted precision 0."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(num_classes)), zero_division=0, sample_weight=sample_weight
    )
    group = list(minority)
    return float(np.mean(precision[group])), float(np.mean(recall[group])), float(np.mean(f1[group]))


def class_prior(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's share of the labels ``y``, by class index."""
    return np.bincount(y, minlength=num_classes) / len(y)


def natural_prior_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    minority: tuple[int, ...],
    train_prior: np.ndarray,
    y_pred: np.ndarray,
) -> dict[str, float]:
    """The test set scored as if drawn at the training prior (the prior a deployed detector meets):
    every image of class c weighs train_prior[c] / test_prior[c], classes by index.

    The weights are constant within a class, so per-class recall is unchanged by them
    (``recall_minority_natural`` equals ``recall_minority``); precision, F1, accuracy, average
    precision, ECE and Brier are not: a rare minority makes every false alarm on the
    majority count many times more. Metric names end in ``_natural``.
    """
    num_classes = len(train_prior)
    weight = train_prior[y_true] / class_prior(y_true, num_classes)[y_true]
    precision, recall, f1 = minority_scores(y_true, y_pred, num_classes, minority, sample_weight=weight)
    is_minority = np.isin(y_true, minority)
    both = is_minority.any() and not is_minority.all()
    score = minority_score(probs, minority)
    ap = average_precision_score(is_minority, score, sample_weight=weight) if both else float("nan")
    return {
        "f1_minority_natural": f1,
        "precision_minority_natural": precision,
        "recall_minority_natural": recall,
        "ap_natural": float(ap),
        "ece_natural": expected_calibration_error(y_true, probs, sample_weight=weight),
        "brier_natural": brier_score(y_true, probs, sample_weight=weight),
        "accuracy_natural": float(accuracy_score(y_true, y_pred, sample_weight=weight)),
    }


def val_threshold(y_val: np.ndarray, probs_val: np.ndarray, minority: tuple[int, ...]) -> float | None:
    """The decision threshold on the minority score (:func:`minority_score`) chosen on the
    validation split, fixed in advance and never tuned (issue 20):

    candidates are the midpoints between consecutive distinct sorted validation scores; the
    threshold is the candidate maximising the validation F1 of "minority" (any minority class)
    against "majority", predicting minority where score >= threshold; among equal maxima, the
    middle one of the tied candidates in sorted order (the lower middle of an even count).
    None when validation lacks either group or has one distinct score (no candidate).
    """
    is_minority = np.isin(y_val, minority)
    score = minority_score(probs_val, minority)
    distinct = np.unique(score)
    if is_minority.all() or not is_minority.any() or len(distinct) < 2:
        return None
    candidates = (distinct[:-1] + distinct[1:]) / 2
    # F1 = 2TP / (2TP + FP + FN) from whole counts, so equal F1s are equal floats and ties are exact
    # (scikit-learn's precision_recall_curve gives rounded precision and recall, not counts).
    minority_sorted, majority_sorted = np.sort(score[is_minority]), np.sort(score[~is_minority])
    tp = len(minority_sorted) - np.searchsorted(minority_sorted, candidates, side="left")
    fp = len(majority_sorted) - np.searchsorted(majority_sorted, candidates, side="left")
    fn = len(minority_sorted) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    tied = np.flatnonzero(f1 == f1.max())
    return float(candidates[tied[(len(tied) - 1) // 2]])


def thresholded(probs: np.ndarray, minority: tuple[int, ...], threshold: float) -> np.ndarray:
    """Decisions under a threshold on the minority score: the most probable minority class where
    the score is >= ``threshold``, else the most probable majority class."""
    majority = [c for c in range(probs.shape[1]) if c not in minority]
    best_minority = np.asarray(minority)[probs[:, list(minority)].argmax(axis=1)]
    best_majority = np.asarray(majority)[probs[:, majority].argmax(axis=1)]
    return np.where(minority_score(probs, minority) >= threshold, best_minority, best_majority)


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

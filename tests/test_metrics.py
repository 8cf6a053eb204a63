"""Metrics against scikit-learn and hand-computed values on fixed inputs."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from finalbn.metrics import (
    calibration_metrics,
    classification_metrics,
    confusion,
    expected_calibration_error,
    final_bn_metrics,
    separation_metrics,
)

Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
PROBS = np.array(
    [
        [0.9, 0.1],
        [0.8, 0.2],
        [0.6, 0.4],
        [0.3, 0.7],
        [0.95, 0.05],
        [0.55, 0.45],
        [0.4, 0.6],
        [0.7, 0.3],
        [0.2, 0.8],
        [0.45, 0.55],
    ]
)


def test_per_class_scores_match_sklearn() -> None:
    row = classification_metrics(Y, PROBS, ("healthy", "unhealthy"), (1,))
    pred = PROBS.argmax(axis=1)
    for index, name in enumerate(("healthy", "unhealthy")):
        assert row[f"f1_{name}"] == pytest.approx(f1_score(Y, pred, pos_label=index))
        assert row[f"precision_{name}"] == pytest.approx(precision_score(Y, pred, pos_label=index))
        assert row[f"recall_{name}"] == pytest.approx(recall_score(Y, pred, pos_label=index))
    assert row["f1_minority"] == row["f1_unhealthy"]
    assert row["f1_majority"] == row["f1_healthy"]
    assert row["accuracy"] == pytest.approx(0.8)


def test_never_predicted_minority_scores_zero_not_nan() -> None:
    probs = np.tile([0.9, 0.1], (len(Y), 1))
    row = classification_metrics(Y, probs, ("8", "3"), (1,))
    assert row["f1_3"] == 0.0
    assert row["precision_3"] == 0.0


def test_minority_mean_over_several_minority_classes() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[[0, 1, 2, 1, 1, 0]]
    row = classification_metrics(y, probs, ("8", "3", "5"), (1, 2))
    expected = f1_score(y, probs.argmax(1), labels=[1, 2], average="macro")
    assert row["f1_minority"] == pytest.approx(expected)
    assert row["f1_majority"] == pytest.approx(1.0)


def test_brier_is_sklearns_binary_and_multiclass_score() -> None:
    assert calibration_metrics(Y, PROBS)["brier"] == pytest.approx(brier_score_loss(Y, PROBS[:, 1]))
    y3 = np.array([0, 1, 2, 1])
    p3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
    by_hand = np.mean(np.sum((p3 - np.eye(3)[y3]) ** 2, axis=1))
    assert calibration_metrics(y3, p3)["brier"] == pytest.approx(by_hand)


def test_ece_by_hand() -> None:
    # Two bins hold samples: confidences 0.9 (2 samples, 1 right) and 0.6 (2, both right).
    y = np.array([0, 1, 0, 0])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0


def test_confusion_rows_are_true_classes() -> None:
    matrix = confusion(Y, PROBS, 2)
    assert matrix.tolist() == [[5, 1], [1, 3]]


def test_separation_auc_is_sklearns_for_the_minority_probability() -> None:
    row = separation_metrics(Y, PROBS, (1,))
    assert row["auc"] == pytest.approx(roc_auc_score(Y, PROBS[:, 1]))
    # Majority images (first six) and minority ones (last four), by hand.
    assert row["minority_prob_on_majority"] == pytest.approx((0.1 + 0.2 + 0.4 + 0.7 + 0.05 + 0.45) / 6)
    assert row["minority_prob_on_minority"] == pytest.approx((0.6 + 0.3 + 0.8 + 0.55) / 4)


def test_separation_is_threshold_free() -> None:
    # Pushing every minority logit up by the same amount (what a BN shift does) moves the
    # minority probabilities, and with them argmax F1, but not the ranking: AUC stays.
    logits = np.log(PROBS)
    shifted = np.exp(logits + [0.0, 1.5])
    shifted /= shifted.sum(axis=1, keepdims=True)
    before, after = separation_metrics(Y, PROBS, (1,)), separation_metrics(Y, shifted, (1,))
    assert after["auc"] == pytest.approx(before["auc"])
    assert after["minority_prob_on_majority"] > before["minority_prob_on_majority"]
    f1 = classification_metrics(Y, PROBS, ("h", "u"), (1,))["f1_u"]
    assert classification_metrics(Y, shifted, ("h", "u"), (1,))["f1_u"] != f1


def test_separation_pools_several_minority_classes() -> None:
    y = np.array([0, 1, 2, 0])
    probs = np.array([[0.6, 0.2, 0.2], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    row = separation_metrics(y, probs, (1, 2))
    assert row["auc"] == pytest.approx(roc_auc_score([0, 1, 1, 0], probs[:, 1:].sum(axis=1)))
    assert row["minority_prob_on_majority"] == pytest.approx((0.4 + 0.7) / 2)


def test_separation_without_a_minority_image_is_nan_not_an_error() -> None:
    row = separation_metrics(np.zeros(3, dtype=int), np.tile([0.7, 0.3], (3, 1)), (1,))
    assert np.isnan(row["auc"]) and np.isnan(row["minority_prob_on_minority"])
    assert row["minority_prob_on_majority"] == pytest.approx(0.3)


def test_final_bn_metrics_by_class_and_group() -> None:
    row = final_bn_metrics(
        weight=np.array([1.0, 2.0, 4.0]),
        bias=np.array([0.5, -1.0, 0.0]),
        running_mean=np.array([0.0, 1.0, 3.0]),
        running_var=np.array([1.0, 2.0, 2.0]),
        classes=("8", "3", "5"),
        minority=(1, 2),
    )
    assert row["bn_scale_3"] == 2.0 and row["bn_shift_8"] == 0.5 and row["bn_var_5"] == 2.0
    assert row["bn_scale_minority"] == 3.0 and row["bn_scale_majority"] == 1.0
    assert row["bn_shift_minority"] == -0.5 and row["bn_mean_minority"] == 2.0


def test_the_reliability_diagram_bins_are_the_recorded_eces() -> None:
    """The analysis draws Figure 4.9 with its own copy of the bin count (it imports no scoring code)."""
    from finalbn.analysis import figures
    from finalbn.metrics import ECE_BINS

    assert figures.ECE_BINS == ECE_BINS

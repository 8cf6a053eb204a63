"""Issue 20, the trial side: the imbalanced-learning losses, the class-balanced sampler, the
natural-prior metrics and the post-hoc scores (logit adjustment, validation threshold).

Losses and metrics against hand computations and scikit-learn on fixed inputs; the sampler
against its promise over many draws; the post-hoc scores end to end on real embedded-MNIST trials.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
)

from finalbn.config import TrialConfig, hashed_fields, trial_id, validate
from finalbn.data import SplitTensors, build_manifest
from finalbn.errors import UserError
from finalbn.metrics import (
    expected_calibration_error,
    natural_prior_metrics,
    thresholded,
    trial_metrics,
    val_threshold,
)
from finalbn.records import SUMMARY, FinalMetrics, Summary, read_json
from finalbn.sweep.experiments import SMOKE_DATA
from finalbn.train import train_trial
from finalbn.train.presets import EMBEDDED_MNIST
from finalbn.train.recipe import Criterion, batches, make_criterion, posthoc_logit_adjustment, step_batches
from finalbn.train.results import run_trial

# Training labels of the loss tests: 6 majority (class 0), 2 minority (class 1): prior 0.75 / 0.25.
TRAIN = torch.tensor([0] * 6 + [1] * 2)
LOGITS = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]])
# One-hot rows and a mixup-style soft one.
TARGETS = torch.tensor([[1.0, 0.0], [0.7, 0.3], [0.0, 1.0]])
# On 34 training images: each trial takes about a second.
SMALL = EMBEDDED_MNIST.replace(data=SMOKE_DATA, train={"device": "cpu", "epochs": 2, "batch_size": 8})


def split_tensors(train: torch.Tensor, minority: tuple[int, ...] = (1,)) -> SplitTensors:
    """What a criterion reads of the data: the training labels, the classes and the minority."""
    return SplitTensors(
        y={"train": train},
        paths={},
        sha256={},
        classes=("8", "3"),
        minority=minority,
        mean=(0.5,),
        std=(0.5,),
        image_shape=(1, 28, 28),
        pixels_id="",
        load=lambda paths: torch.empty(0),
        _decode_all=dict,
    )


def criterion(**train: object) -> Criterion:
    return make_criterion(EMBEDDED_MNIST.replace(train=train), split_tensors(TRAIN), torch.device("cpu"))


def loss_of(**train: object) -> float:
    return float(criterion(**train)(LOGITS, TARGETS))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """By hand: z - log sum exp z, per row."""
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def smoothed(targets: np.ndarray, smoothing: float) -> np.ndarray:
    return targets * (1 - smoothing) + smoothing / targets.shape[1]


# --- losses ---


def test_logit_adjusted_loss_by_hand() -> None:
    z = LOGITS.numpy() + 0.5 * np.log([0.75, 0.25])
    expected = np.mean(-(TARGETS.numpy() * log_softmax(z)).sum(axis=1))
    assert loss_of(loss="logit_adjusted", tau=0.5) == pytest.approx(expected, rel=1e-6)


def test_logit_adjusted_at_tau_0_is_cross_entropy_with_every_knob() -> None:
    knobs = {"weighted_loss": True, "label_smoothing": 0.1}
    assert loss_of(loss="logit_adjusted", tau=0.0, **knobs) == pytest.approx(loss_of(loss="cce", **knobs), rel=1e-6)
    assert loss_of(loss="logit_adjusted", tau=1.0) != pytest.approx(loss_of(loss="cce"), rel=1e-3)


def test_balanced_softmax_by_hand_equals_logit_adjusted_at_tau_1() -> None:
    z = LOGITS.numpy() + np.log([6.0, 2.0])
    expected = np.mean(-(TARGETS.numpy() * log_softmax(z)).sum(axis=1))
    assert loss_of(loss="balanced_softmax") == pytest.approx(expected, rel=1e-6)
    knobs = {"weighted_loss": True, "label_smoothing": 0.1}
    assert loss_of(loss="balanced_softmax", **knobs) == pytest.approx(
        loss_of(loss="logit_adjusted", tau=1.0, **knobs), rel=1e-6
    )


def test_focal_at_gamma_0_without_alpha_is_cross_entropy_with_every_knob() -> None:
    for knobs in (
        {},
        {"weighted_loss": True},
        {"label_smoothing": 0.1},
        {"weighted_loss": True, "label_smoothing": 0.2},
    ):
        focal = loss_of(loss="focal", focal_gamma=0.0, **knobs)
        assert focal == pytest.approx(loss_of(loss="cce", **knobs), rel=1e-6), knobs


def test_focal_by_hand_with_alpha_class_weights_and_smoothing() -> None:
    log_p = log_softmax(LOGITS.numpy())
    targets = smoothed(TARGETS.numpy(), 0.1)
    # alpha 0.25 on the minority class (index 1), 0.75 on the majority; WL weights n / (k n_c) = 8/12, 8/4.
    alpha, weight = np.array([0.75, 0.25]), np.array([8 / 12, 8 / 4])
    per_row = -(targets * alpha * weight * (1 - np.exp(log_p)) ** 2 * log_p).sum(axis=1)
    got = loss_of(loss="focal", focal_gamma=2.0, focal_alpha=0.25, weighted_loss=True, label_smoothing=0.1)
    assert got == pytest.approx(per_row.mean(), rel=1e-6)
    # gamma down-weights the confident rows: less loss than cross-entropy's.
    assert loss_of(loss="focal") < loss_of(loss="cce")


def test_losses_need_softmax_and_alpha_needs_focal() -> None:
    for loss in ("logit_adjusted", "balanced_softmax", "focal"):
        with pytest.raises(UserError, match=rf"^loss {loss} needs output softmax: use --output softmax or --loss bce$"):
            validate(SMALL.replace(train={"loss": loss}, model={"output": "sigmoid"}))
    with pytest.raises(UserError, match=r"^focal_alpha 0.25 weighs only the focal loss: use --loss focal or drop it$"):
        validate(SMALL.replace(train={"focal_alpha": 0.25}))
    validate(SMALL.replace(train={"loss": "focal", "focal_alpha": 0.25, "focal_gamma": 0.0, "tau": 0.0}))


@pytest.mark.parametrize(
    "field, value",
    [
        ("tau", -0.1),
        ("tau", 10.5),
        ("focal_gamma", -1.0),
        ("focal_gamma", 11.0),
        ("focal_alpha", 0.0),
        ("focal_alpha", 1.0),
    ],
)
def test_method_knobs_out_of_bounds_are_user_errors(field: str, value: float) -> None:
    loss = {"loss": "focal"} if field == "focal_alpha" else {}
    with pytest.raises(UserError, match=rf"^train\.{field} is {value}: use a number "):
        validate(SMALL.replace(train={field: value, **loss}))


def test_ids_at_the_new_defaults_are_unchanged_and_every_new_knob_is_a_new_trial() -> None:
    # The golden ids of tests/test_learning_rate.py, computed before these fields existed.
    assert trial_id(TrialConfig(), "abc") == "5c3bafb5e165"
    assert trial_id(EMBEDDED_MNIST.replace(train={"cpu_amp": False}), "abc") == "fd895902e5b3"
    assert not {"tau", "focal_gamma", "focal_alpha", "sampler"} & set(hashed_fields(TrialConfig())["train"])
    changed = [{"tau": 0.5}, {"focal_gamma": 1.0}, {"loss": "focal", "focal_alpha": 0.25}, {"sampler": "balanced"}]
    ids = {trial_id(TrialConfig().replace(train=knob), "abc") for knob in changed}
    assert len(ids) == len(changed) and "5c3bafb5e165" not in ids


# --- sampler ---


def one_pass(labels: torch.Tensor, batch_size: int, seed: int, sampler: str) -> list[torch.Tensor]:
    return list(batches(labels, batch_size, torch.Generator().manual_seed(seed), sampler))


def test_balanced_sampler_draws_every_class_equally_often_in_as_many_batches() -> None:
    labels = torch.tensor([0] * 95 + [1] * 5)
    generator = torch.Generator().manual_seed(0)
    drawn = [index for _ in range(200) for index in batches(labels, 10, generator, "balanced")]
    assert len(drawn) == 200 * len(one_pass(labels, 10, 0, "shuffle")) == 2000
    assert all(len(index) == 10 for index in drawn)
    minority_share = (labels[torch.cat(drawn)] == 1).float().mean().item()
    # 20,000 draws at p = 0.5: the standard error is 0.0035.
    assert minority_share == pytest.approx(0.5, abs=0.02)
    three = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    generator = torch.Generator().manual_seed(1)
    many = torch.cat([index for _ in range(100) for index in batches(three, 50, generator, "balanced")])
    shares = torch.bincount(three[many], minlength=3).float() / len(many)
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.02)


def test_balanced_sampler_is_seeded_and_keeps_the_ragged_batch_rule() -> None:
    labels = torch.tensor([0] * 20 + [1] * 5)
    first, again, other = (one_pass(labels, 10, seed, "balanced") for seed in (3, 3, 4))
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    # 25 images at batch 10: two whole batches, the ragged five dropped, as under shuffle.
    assert [len(b) for b in first] == [len(b) for b in one_pass(labels, 10, 3, "shuffle")] == [10, 10]
    # A set smaller than one batch is one batch of all of it.
    assert [len(b) for b in one_pass(labels[:7], 10, 0, "balanced")] == [7]
    steps = list(step_batches(labels, 10, torch.Generator().manual_seed(3), 5, "balanced"))
    assert len(steps) == 5 and [b.tolist() for b in steps[:2]] == [b.tolist() for b in first]


def test_shuffle_draws_what_it_drew_before_the_sampler_existed() -> None:
    labels = torch.tensor([0] * 20 + [1] * 5)
    order = torch.randperm(25, generator=torch.Generator().manual_seed(7))
    assert torch.cat(one_pass(labels, 10, 7, "shuffle")).tolist() == order[:20].tolist()


# --- natural-prior metrics ---

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
# Test prior 0.6 / 0.4; at a training prior of 0.9 / 0.1 a majority image weighs 1.5, a minority one
# 0.25: six times as much, which six copies of every majority row realise (36 : 4 = 0.9 : 0.1).
TRAIN_PRIOR = np.array([0.9, 0.1])


def test_natural_prior_metrics_equal_unweighted_ones_on_a_test_set_realising_the_prior() -> None:
    row = natural_prior_metrics(Y, PROBS, (1,), TRAIN_PRIOR, PROBS.argmax(axis=1))
    copies = np.where(Y == 0, 6, 1)
    y, probs = np.repeat(Y, copies), np.repeat(PROBS, copies, axis=0)
    pred = probs.argmax(axis=1)
    assert row["precision_minority_natural"] == pytest.approx(precision_score(y, pred))
    assert row["recall_minority_natural"] == pytest.approx(recall_score(y, pred))
    assert row["f1_minority_natural"] == pytest.approx(f1_score(y, pred))
    assert row["accuracy_natural"] == pytest.approx(accuracy_score(y, pred))
    assert row["ap_natural"] == pytest.approx(average_precision_score(y, probs[:, 1]))
    assert row["brier_natural"] == pytest.approx(brier_score_loss(y, probs[:, 1]))
    assert row["ece_natural"] == pytest.approx(expected_calibration_error(y, probs))


def test_natural_prior_keeps_recall_and_lowers_precision() -> None:
    row = trial_metrics(Y, PROBS, ("h", "u"), (1,), TRAIN_PRIOR)
    assert row["recall_minority_natural"] == pytest.approx(row["recall_minority"])
    assert row["precision_minority_natural"] < row["precision_minority"]
    # At the test set's own prior every weight is 1.
    same = trial_metrics(Y, PROBS, ("h", "u"), (1,), np.array([0.6, 0.4]))
    for name in ("f1_minority", "precision_minority", "accuracy", "ap", "ece", "brier"):
        assert same[f"{name}_natural"] == pytest.approx(same[name]), name


def test_ece_with_equal_weights_is_the_unweighted_ece() -> None:
    assert expected_calibration_error(Y, PROBS, sample_weight=np.full(len(Y), 3.0)) == pytest.approx(
        expected_calibration_error(Y, PROBS)
    )


def test_new_scores_against_sklearn() -> None:
    row = trial_metrics(Y, PROBS, ("h", "u"), (1,), TRAIN_PRIOR)
    pred = PROBS.argmax(axis=1)
    assert row["ap"] == pytest.approx(average_precision_score(Y, PROBS[:, 1]))
    assert row["precision_minority"] == pytest.approx(precision_score(Y, pred))
    assert row["recall_minority"] == pytest.approx(recall_score(Y, pred))
    # Recall 5/6 of the majority and 3/4 of the minority.
    assert row["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)


# --- post-hoc: validation threshold ---


def scored(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validation labels and two-class probabilities whose minority score is ``scores``."""
    s = np.array(scores)
    return np.array(labels), np.stack([1 - s, s], axis=1)


def test_val_threshold_maximises_minority_f1_over_midpoints() -> None:
    # Minority at 0.9 and 0.6, majority at 0.1, 0.3, 0.7. Candidates 0.2, 0.45, 0.65, 0.8 give
    # F1 4/6, 4/5, 2/4, 2/3: 0.45 (two minority and one majority image predicted minority).
    y, probs = scored([1, 1, 0, 0, 0], [0.9, 0.6, 0.1, 0.3, 0.7])
    assert val_threshold(y, probs, (1,)) == pytest.approx(0.45)


def test_val_threshold_takes_the_middle_of_tied_candidates() -> None:
    # Scores 0.1 ... 0.9 labelled M m M M m M M m m. F1 2/3 at three candidates: 0.15 (TP 4,
    # FP 4: 8/12), 0.45 (TP 3, FP 2, FN 1: 6/9) and 0.75 (TP 2, FN 2: 4/6); every other is lower.
    y, probs = scored([0, 1, 0, 0, 1, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert val_threshold(y, probs, (1,)) == pytest.approx(0.45)
    # Two tied (0.3: TP 2, FP 2 and 0.8: TP 1, FN 1, both 2/3): the lower middle.
    y, probs = scored([1, 1, 0, 0, 0], [0.9, 0.5, 0.6, 0.7, 0.1])
    assert val_threshold(y, probs, (1,)) == pytest.approx(0.3)


def test_val_threshold_is_none_without_both_groups_or_two_scores() -> None:
    assert val_threshold(*scored([0, 0, 0], [0.1, 0.2, 0.3]), (1,)) is None
    assert val_threshold(*scored([1, 1], [0.1, 0.2]), (1,)) is None
    assert val_threshold(*scored([0, 1], [0.4, 0.4]), (1,)) is None


def test_thresholded_decisions_pick_within_the_group() -> None:
    # Classes 0 majority, 1 and 2 minority; minority scores 0.5, 0.3, 0.7.
    probs = np.array([[0.5, 0.1, 0.4], [0.7, 0.2, 0.1], [0.3, 0.5, 0.2]])
    assert thresholded(probs, (1, 2), 0.4).tolist() == [2, 0, 1]
    assert thresholded(probs, (1, 2), 0.8).tolist() == [0, 0, 0]


def test_thresholded_metrics_keep_the_probability_metrics() -> None:
    plain = trial_metrics(Y, PROBS, ("h", "u"), (1,), TRAIN_PRIOR)
    # Minority scores of the minority images: 0.6, 0.3, 0.8, 0.55; below 0.3 all four are found.
    decisions = thresholded(PROBS, (1,), 0.25)
    moved = trial_metrics(Y, PROBS, ("h", "u"), (1,), TRAIN_PRIOR, predicted=decisions)
    assert moved.keys() == plain.keys()
    for name in ("auc", "ap", "ece", "brier", "ece_natural", "brier_natural", "ap_natural"):
        assert moved[name] == plain[name], name
    assert moved["recall_minority"] == 1.0 > plain["recall_minority"]


# --- post-hoc: logit adjustment ---


def test_posthoc_logit_adjustment_on_a_constructed_case() -> None:
    logits = torch.tensor([[0.0, -3.0], [0.0, -6.0]])
    train = torch.tensor([0] * 99 + [1])
    adjusted = posthoc_logit_adjustment(logits, train, tau=1.0)
    expected = logits.numpy() - np.log([0.99, 0.01])
    assert adjusted.numpy() == pytest.approx(expected, rel=1e-6)
    # log(0.99 / 0.01) = 4.6 moves the first image, 3 logits from the border, past it; not the second.
    assert adjusted.argmax(dim=1).tolist() == [1, 0]
    assert torch.equal(posthoc_logit_adjustment(logits, train, tau=0.0), logits)


# --- end to end ---


def metric_names(final: dict[str, float], prefix: str) -> set[str]:
    return {k.removeprefix(prefix) for k in final if k.startswith(prefix)}


def test_trial_with_focal_loss_and_balanced_sampler_scores_every_post_hoc_variant(tmp_path: Path) -> None:
    config = SMALL.replace(train={"loss": "focal", "sampler": "balanced"})
    manifest = build_manifest(config.data)
    result, folder = run_trial(config, manifest, "focal-trial", tmp_path / "focal-trial", git_commit=None)
    final = result.final
    plain = {k for k in final if not k.startswith(("la_", "thr_", "nobn_", "bn_"))}
    new = {"ap", "balanced_accuracy", "precision_minority", "recall_minority", "f1_minority_natural"}
    new |= {"precision_minority_natural", "recall_minority_natural", "ap_natural", "ece_natural"}
    assert new | {"brier_natural", "accuracy_natural", "auc", "ece", "f1_minority"} <= plain
    # One metric set for the model and each of its post-hoc variants.
    assert metric_names(final, "la_") == plain
    assert metric_names(final, "thr_") == plain | {"threshold"}
    assert metric_names(final, "nobn_") == plain
    assert all(math.isfinite(v) for k, v in final.items() if not k.startswith("bn_var")), final
    for name in ("auc", "ece", "brier", "ap_natural"):
        assert final[f"thr_{name}"] == final[name]
    assert 0 < final["thr_threshold"] < 1

    # la_: softmax(log p - log prior) is softmax(logits - log prior), from the saved probabilities.
    probs = result.predictions.select("prob_8", "prob_3").to_numpy().astype(np.float64)
    prior = np.array([SMOKE_DATA["train_majority"], SMOKE_DATA["train_minority"]]) / 34
    adjusted = np.exp(np.log(probs) - np.log(prior))
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    y = result.predictions["label_index"].to_numpy()
    expected = trial_metrics(y, adjusted, ("8", "3"), (1,), prior)
    assert {k: final[f"la_{k}"] for k in expected} == pytest.approx(expected, abs=1e-5)

    summary = read_json(folder / SUMMARY, Summary).test.values()
    assert {"ap", "ece_natural", "la_f1_minority_natural", "thr_threshold", "nobn_ap_natural"} <= set(summary)


def test_sigmoid_output_and_val_without_minority_leave_those_sets_out() -> None:
    config = SMALL.replace(train={"loss": "bce"}, model={"output": "sigmoid"}, data={"val_minority": 0})
    final = train_trial(config, build_manifest(config.data)).final
    assert not any(k.startswith(("la_", "thr_")) for k in final)
    plain = {k for k in final if not k.startswith(("nobn_", "bn_"))}
    assert metric_names(final, "nobn_") == plain and "ece_natural" in plain


def test_balanced_sampler_resumes_exactly(tmp_path: Path) -> None:
    config = SMALL.replace(train={"epochs": 3, "sampler": "balanced", "loss": "logit_adjusted"})
    manifest = build_manifest(config.data)
    whole = train_trial(config, manifest)
    checkpoint = tmp_path / "checkpoint.pt"

    def stop_after_epoch_1(row: dict[str, float]) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_trial(config, manifest, on_epoch=stop_after_epoch_1, checkpoint=checkpoint)
    resumed = train_trial(config, manifest, checkpoint=checkpoint)
    assert [r["train_loss"] for r in resumed.epochs] == [r["train_loss"] for r in whole.epochs]
    assert resumed.final == whole.final
    # The sampler is part of the training: other batches, other numbers.
    shuffled = train_trial(config.replace(train={"sampler": "shuffle"}), manifest)
    assert [r["train_loss"] for r in shuffled.epochs] != [r["train_loss"] for r in whole.epochs]


def test_records_before_issue_20_read_back_without_the_new_metrics() -> None:
    old = FinalMetrics.model_validate(
        {"accuracy": 0.9, "brier": 0.1, "ece": 0.05, "f1_majority": 0.9, "f1_minority": 0.5}
    )
    assert "ap" not in old.values() and math.isnan(old.ap_natural)
    new = FinalMetrics.model_validate(
        {"accuracy": 0.9, "brier": 0.1, "ece": 0.05, "f1_majority": 0.9, "f1_minority": 0.5, "ap": 0.7, "thr_ap": 0.7}
    )
    assert new.values()["ap"] == 0.7 and new.values()["thr_ap"] == 0.7
    with pytest.raises(ValueError):
        FinalMetrics.model_validate(
            {"accuracy": 0.9, "brier": 0.1, "ece": 0.05, "f1_majority": 0.9, "f1_minority": 0.5, "la_ap": "0.7"}
        )

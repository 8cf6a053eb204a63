"""The imbalance threshold on synthetic paired data whose answer is known: stated no finer than grid and seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from finalbn.analysis.figures import imbalance_figure
from finalbn.analysis.stats import aggregate
from finalbn.analysis.threshold import (
    RATIO,
    find_threshold,
    minority_brackets,
    seeds_needed,
    thresholds,
    with_ratio,
)
from finalbn.sweep.spec import Contrast

MAJORITY = 1000
# The contrast the synthetic tables hold: final BN against none.
BN = Contrast("model.final_norm", "bn", "none")
# Log-spaced, as the presets' grids are: ratios 0.005 to 0.16.
MINORITY = (5, 10, 20, 40, 80, 160)


def trials(gain, seeds: int = 6, noise: float = 0.01, rng_seed: int = 0, minority=MINORITY, **extra: str):
    """Minority F1 = base + gain(ratio) with final BN, base without, Gaussian noise per run."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for count, norm, seed in itertools.product(minority, ("bn", "none"), range(seeds)):
        ratio = count / MAJORITY
        lift = gain(ratio) if norm == "bn" else 0.0
        rows.append(
            {
                "trial_id": f"{count}-{norm}-{seed}-{'-'.join(extra.values())}",
                "data.train_minority": count,
                "data.train_majority": MAJORITY,
                "model.final_norm": norm,
                "train.seed": seed,
                **dict(extra),
                "f1_minority": 0.3 + 2 * ratio + lift + rng.normal(0, noise),
                "f1_majority": 0.8 + lift / 2 + rng.normal(0, noise),
            }
        )
    return pl.DataFrame(rows)


def step(at: float, size: float = 0.4):
    return lambda r: size if r <= at else 0.0


def test_a_known_step_is_bracketed_by_the_swept_ratios_around_it() -> None:
    found = find_threshold(trials(step(0.04)), BN, "f1_minority")
    assert found.status == "found" and found.bracket == (0.04, 0.08)
    # The estimate is the bracket's centre on log ratio, not an interpolated crossing.
    assert found.estimate == pytest.approx(math.sqrt(0.04 * 0.08))
    assert found.low <= 0.04 and found.high >= 0.08
    assert found.reported_gain == pytest.approx(0.4, abs=0.02) and found.reported_ratio == 0.04
    text = found.describe()
    assert "gain resolved up to ratio 0.04" in text and "its 95% CI first includes 0 at 0.08" in text
    assert "threshold between swept ratios 0.04 and 0.08" in text
    # Six seeds: no caveat.
    assert "unreliable" not in text


@pytest.mark.parametrize("rng_seed", range(6))
def test_the_interval_is_never_narrower_than_the_grid_around_the_estimate(rng_seed: int) -> None:
    # A noisy hinge: seeds move the bracket, the interval holds every bracket the seeds allow and the observed one.
    found = find_threshold(trials(lambda r: max(0.0, 0.3 - 3 * r), seeds=4, noise=0.05, rng_seed=rng_seed), BN)
    assert found.status == "found"
    ratios = sorted(r / MAJORITY for r in MINORITY)
    assert found.low in ratios and (found.high is None or found.high in ratios)
    assert found.low <= found.bracket[0] < found.bracket[1] <= (found.high or math.inf)
    if found.high is not None:
        assert math.log(found.high / found.low) >= math.log(found.bracket[1] / found.bracket[0])


def test_a_grid_that_stops_before_the_drop_gives_no_number() -> None:
    found = find_threshold(trials(step(0.5)), BN, "f1_minority")
    assert found.status == "beyond" and found.estimate is None and found.bracket is None and found.high is None
    text = found.describe()
    assert "no level-off within the swept range" in text and "threshold > 0.16" in text
    assert found.beyond_share > 0.9


def test_no_gain_anywhere_is_said_so() -> None:
    found = find_threshold(trials(lambda r: 0.0, noise=0.02), BN, "f1_minority")
    assert found.status == "no_gain" and found.bracket is None and found.low is None
    assert "no resolved gain of bn over none" in found.describe()


def test_few_seeds_say_the_interval_is_unreliable_and_how_many_would_resolve_the_gain() -> None:
    found = find_threshold(trials(step(0.04, size=0.05), seeds=3, noise=0.03), BN, "f1_minority")
    text = found.describe()
    assert "3 seed(s) per ratio (< 5): the intervals are unreliable" in text
    # The pooled within-ratio spread of the paired differences: two runs of noise 0.03 each.
    assert found.spread == pytest.approx(0.03 * math.sqrt(2), rel=0.5)
    expected = seeds_needed(found.reported_gain, found.spread, paired=True)
    assert found.seeds_needed == expected and f"takes {expected} seeds by a paired t-test" in text


def test_seeds_needed_matches_the_textbook_power_of_a_t_test() -> None:
    # Cohen's d = 1 at 5% two-sided, 80% power: 10 pairs (one-sample) or 17 per group (two groups).
    assert seeds_needed(0.1, 0.1, paired=True) == 10
    assert seeds_needed(0.1, 0.1, paired=False) == 17
    assert seeds_needed(0.05, 0.1, paired=True) == 34
    assert seeds_needed(0.1, float("nan"), paired=True) is None and seeds_needed(0.0, 0.1, paired=True) is None


def test_a_stated_margin_in_f1_moves_the_bracket_and_is_labelled() -> None:
    curve = trials(lambda r: 0.4 if r <= 0.02 else 0.1 if r <= 0.04 else 0.0, noise=0.005)
    assert find_threshold(curve, BN).bracket == (0.04, 0.08)
    found = find_threshold(curve, BN, margin=0.2)
    assert found.bracket == (0.02, 0.04) and "reaches the 0.2 F1 margin at 0.04" in found.describe()


def test_thresholds_per_group_and_the_brackets_refine_bisects() -> None:
    frame = pl.concat(
        [trials(step(0.02), **{"model.unfreeze": "none"}), trials(step(0.08), rng_seed=1, **{"model.unfreeze": "all"})]
    )
    found = {(t.group["model.unfreeze"], t.metric): t for t in thresholds(frame, BN, by=["model.unfreeze"])}
    assert found[("none", "f1_minority")].bracket == (0.02, 0.04)
    assert found[("all", "f1_majority")].bracket == (0.08, 0.16)
    # In minority training images, minority F1 only, one per group.
    assert minority_brackets(frame, BN, by=["model.unfreeze"]) == [(20, 40), (80, 160)]


def test_the_figure_has_a_log_ratio_axis_and_shades_the_bracket() -> None:
    frame = trials(step(0.04))
    found = thresholds(frame, BN)
    curves = aggregate(with_ratio(frame), [RATIO, "model.final_norm"], ["f1_minority", "f1_majority"])
    figure = imbalance_figure(curves, found, BN, "model.final_norm")
    axis = figure.axes[0]
    assert axis.get_xscale() == "log"
    labels = axis.get_legend_handles_labels()[1]
    assert "threshold between 0.04 and 0.08" in labels and not any(label.startswith("threshold 0.") for label in labels)

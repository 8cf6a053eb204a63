"""The imbalance threshold: the minority ratio beyond which the final-BN gain stops being meaningful.

Method (docs/analysis.md has the long form):

1. Gain curve. At each swept ratio r (minority / majority training images),
   the gain is the mean over seeds of the paired difference
   F1(final BN, seed s) - F1(no final BN, seed s), other settings equal.
2. Margin. A gain is "meaningful" while it is at least ``fraction`` (10%) of
   the curve's peak gain: the threshold is where 90% of the largest gain has
   gone, the thesis' "levels off". A fraction of the peak rather than a fixed
   F1 amount lets the minority and majority classes, whose gains differ
   several-fold, be compared on one scale. ``margin`` fixes it instead.
3. Threshold. The ratio at which the gain curve, linearly interpolated
   between swept ratios, falls below the margin for the last time: from there
   on every swept ratio's gain is below it. If even the largest ratio's gain is
   above, the threshold lies beyond the swept range (reported as "> r_max").
4. Uncertainty. Seeds are resampled with replacement within each ratio (pairs
   kept together), the gain curve, margin and threshold recomputed, 2,000
   times; the 2.5% and 97.5% quantiles of those thresholds (beyond-range ones
   counted as +infinity) are the 95% interval.

A cross-check that needs no margin is reported next to it (``zero_tail``):
the smallest swept ratio r such that the mean gain over all pairs at ratios
>= r has a bootstrap CI that includes zero, i.e. from r on the gain is
indistinguishable from none. The tail is pooled because testing each ratio
on its own would, over many ratios, find a CI that misses zero by chance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate, mean_ci, paired_differences
from finalbn.errors import UserError

FRACTION = 0.1
RATIO = "ratio"


@dataclass(frozen=True)
class Threshold:
    metric: str
    # Other studied settings this threshold holds for, e.g. {"model.unfreeze": "none"}.
    group: dict[str, str]
    # Margin of the point estimate (fraction x peak gain, or the fixed margin).
    margin: float
    # Ratio where the gain falls below the margin; None when it never does in range.
    estimate: float | None
    # Interval; None for a bound beyond the swept range.
    low: float | None
    high: float | None
    # What the estimate means when None: "beyond" (gain still above the margin at
    # the largest ratio) or "no_gain" (below the margin everywhere).
    status: str
    # One-sided sign-flip p-value of "no gain at any ratio" (statistic: the mean gain over all pairs).
    gain_p: float
    # Share of bootstrap replicates whose gain never fell below their margin.
    beyond_share: float
    # Swept ratios around the estimate: the last at or above the margin and the next one.
    # The interval is seed uncertainty under linear interpolation; the grid's own
    # resolution is this bracket.
    bracket: tuple[float, float] | None
    # Cross-check: smallest ratio from which on the pooled gain's CI includes zero (None: never).
    zero_tail: float | None
    largest_ratio: float
    # Per ratio: pairs, mean gain, CI.
    curve: pl.DataFrame

    def describe(self) -> str:
        """One line, e.g. ``f1_minority: gain falls below 10% of its peak at ratio 0.094 [0.081, 0.099]``."""
        where = "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in self.group.items())
        if self.status == "no_gain":
            return f"{self.metric}{where}: no meaningful final-BN gain at any swept ratio"
        if self.estimate is None:
            text = f"{self.metric}{where}: gain still above {_fmt(self.margin)} at the largest ratio, threshold > "
            return text + f"{_fmt(self.largest_ratio)} (outside the swept range)"
        text = (
            f"{self.metric}{where}: threshold ratio {_fmt(self.estimate)} "
            f"[95% CI {_fmt(self.low)}, {_fmt(self.high, beyond=self.largest_ratio)}]"
        )
        if self.bracket is not None:
            text += f", between swept ratios {_fmt(self.bracket[0])} and {_fmt(self.bracket[1])}"
        return text


def _fmt(value: float | None, beyond: float | None = None) -> str:
    if value is None:
        return f"> {beyond:.3g}" if beyond is not None else "-"
    return f"{value:.3g}"


def with_ratio(trials: pl.DataFrame) -> pl.DataFrame:
    """Adds ``ratio`` = minority / majority training images per class (the thesis' 10 / 1000 = 0.01)."""
    for column in ("data.train_minority", "data.train_majority"):
        if column not in trials.columns:
            raise UserError(f"table has no column {column!r}: the imbalance ratio needs both training counts")
    return trials.with_columns(
        (pl.col("data.train_minority").cast(pl.Float64) / pl.col("data.train_majority").cast(pl.Float64)).alias(RATIO)
    )


def gain_pairs(
    trials: pl.DataFrame, metric: str, by: Sequence[str] = (), pair_on: Sequence[str] = ("train.seed",)
) -> pl.DataFrame:
    """Paired final BN - none differences of ``metric`` per ratio (and ``by`` group) and seed."""
    frame = with_ratio(trials)
    pair_on = [c for c in pair_on if c in frame.columns]
    return paired_differences(frame, metric, "model.final_norm", "bn", "none", pair_on=pair_on, by=[*by, RATIO])


def crossing(ratios: np.ndarray, gains: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Per row of ``gains`` (replicates x ratios): where it falls below ``margin`` for the last time.

    +inf: still at or above the margin at the largest ratio; -inf: below it everywhere.
    """
    gains = np.atleast_2d(gains)
    margin = np.broadcast_to(np.asarray(margin, dtype=np.float64).reshape(-1, 1), gains.shape)
    above = gains >= margin
    k = gains.shape[1]
    # Index of the last ratio still at or above the margin.
    last = k - 1 - np.argmax(above[:, ::-1], axis=1)
    result = np.empty(gains.shape[0])
    rows = np.arange(gains.shape[0])
    none_above = ~above.any(axis=1)
    at_end = above[:, -1]
    inner = ~none_above & ~at_end
    j = last[inner]
    g0, g1 = gains[rows[inner], j], gains[rows[inner], j + 1]
    m = margin[rows[inner], j]
    # Linear interpolation between the last ratio above and the next one below.
    share = np.where(g0 > g1, (g0 - m) / np.where(g0 > g1, g0 - g1, 1.0), 0.0)
    result[inner] = ratios[j] + share * (ratios[j + 1] - ratios[j])
    result[at_end] = np.inf
    result[none_above] = -np.inf
    return result


def find_threshold(
    trials: pl.DataFrame,
    metric: str = "f1_minority",
    group: dict[str, str] | None = None,
    fraction: float = FRACTION,
    margin: float | None = None,
    boot: Bootstrap = DEFAULT,
    pair_on: Sequence[str] = ("train.seed",),
) -> Threshold:
    """The threshold of one gain curve: ``trials`` holds one group (other settings fixed)."""
    pairs = gain_pairs(trials, metric, pair_on=pair_on)
    if pairs.height == 0:
        raise UserError(
            f"no final BN / no final BN pairs for {metric}: the threshold needs trials with model.final_norm "
            "bn and none at equal seeds"
        )
    curve = aggregate(pairs.sort(RATIO), [RATIO], ["difference"], boot).sort(RATIO)
    curve = curve.rename({"n": "pairs", **{f"difference_{s}": f"gain_{s}" for s in ("mean", "std", "lo", "hi")}})
    ratios = curve[RATIO].to_numpy()
    if ratios.size < 2:
        raise UserError(f"only one imbalance ratio ({ratios[0]:.3g}) has pairs: a threshold needs two or more")
    observed = curve["gain_mean"].to_numpy()
    replicates = _replicate_curves(pairs, ratios, boot)
    point_margin = _margins(observed[None, :], fraction, margin)
    estimate = float(crossing(ratios, observed, point_margin)[0])
    draws = crossing(ratios, replicates, _margins(replicates, fraction, margin))
    low, high = np.quantile(draws, boot.quantiles(), method="lower")
    gain_p = gain_p_value(pairs, boot)
    no_gain = estimate == -math.inf or observed.max() <= 0 or gain_p >= 1 - boot.level
    status = "no_gain" if no_gain else ("beyond" if estimate == math.inf else "found")
    return Threshold(
        metric=metric,
        group=group or {},
        margin=float(point_margin[0]),
        estimate=estimate if math.isfinite(estimate) else None,
        low=_bound(low, ratios),
        high=_bound(high, ratios),
        status=status,
        gain_p=gain_p,
        beyond_share=float(np.mean(draws == np.inf)),
        bracket=_bracket(ratios, estimate),
        zero_tail=_zero_tail(pairs, ratios, boot),
        largest_ratio=float(ratios[-1]),
        curve=curve,
    )


def thresholds(
    trials: pl.DataFrame,
    metrics: Sequence[str] = ("f1_minority", "f1_majority"),
    by: Sequence[str] = (),
    fraction: float = FRACTION,
    margin: float | None = None,
    boot: Bootstrap = DEFAULT,
) -> list[Threshold]:
    """One threshold per metric and per value of ``by`` (e.g. frozen vs unfrozen backbone, plant)."""
    groups = trials.select(by).unique(maintain_order=True).iter_rows(named=True) if by else [{}]
    found = []
    for group in groups:
        subset = trials.filter(*[pl.col(k) == v for k, v in group.items()]) if group else trials
        for metric in metrics:
            label = {k: str(v) for k, v in group.items()}
            found.append(find_threshold(subset, metric, label, fraction, margin, boot))
    return found


def threshold_table(found: Sequence[Threshold]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "metric": t.metric,
                "group": ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.group.items()) or "all",
                "threshold": t.estimate,
                "ci_low": t.low,
                "ci_high": t.high,
                "status": t.status,
                "gain_p": t.gain_p,
                "margin": t.margin,
                "beyond_range_share": t.beyond_share,
                "bracket_low": t.bracket[0] if t.bracket else None,
                "bracket_high": t.bracket[1] if t.bracket else None,
                "zero_tail": t.zero_tail,
                "largest_ratio": t.largest_ratio,
            }
            for t in found
        ],
        schema_overrides={
            k: pl.Float64 for k in ("threshold", "ci_low", "ci_high", "bracket_low", "bracket_high", "zero_tail")
        },
    )


def _replicate_curves(pairs: pl.DataFrame, ratios: np.ndarray, boot: Bootstrap) -> np.ndarray:
    """Bootstrap gain curves: each ratio's pairs resampled with replacement (replicates x ratios)."""
    rng = np.random.default_rng(boot.seed)
    curves = np.empty((boot.resamples, ratios.size))
    for column, ratio in enumerate(ratios):
        values = pairs.filter(pl.col(RATIO) == ratio)["difference"].to_numpy()
        values = np.sort(values)  # row order of the table must not change the interval
        picks = rng.integers(0, values.size, size=(boot.resamples, values.size))
        curves[:, column] = values[picks].mean(axis=1)
    return curves


def _margins(curves: np.ndarray, fraction: float, margin: float | None) -> np.ndarray:
    if margin is not None:
        return np.full(curves.shape[0], float(margin))
    # A peak at or below zero has no meaningful fraction: keep the margin positive.
    return np.maximum(fraction * curves.max(axis=1), 1e-9)


def _bound(value: float, ratios: np.ndarray) -> float | None:
    if value == math.inf:
        return None
    # Replicates below the margin everywhere put the threshold at or under the smallest ratio.
    return float(ratios[0]) if value == -math.inf else float(value)


def _bracket(ratios: np.ndarray, estimate: float) -> tuple[float, float] | None:
    if not math.isfinite(estimate):
        return None
    upper = int(np.searchsorted(ratios, estimate, side="right"))
    upper = min(max(upper, 1), ratios.size - 1)
    return float(ratios[upper - 1]), float(ratios[upper])


def gain_p_value(pairs: pl.DataFrame, boot: Bootstrap = DEFAULT) -> float:
    """One-sided sign-flip test of "final BN gains nothing at any ratio", over all pairs at once.

    Statistic: the mean paired gain over every ratio; its null distribution
    flips each pair's sign at random (exactly, every pattern, up to 2^14 pairs).
    One test for the whole curve, so many ratios cannot make a gain appear by
    chance, and a large gain at a few ratios still moves the mean.
    """
    values = np.sort(pairs["difference"].to_numpy())
    if values.size == 0:
        return float("nan")
    if values.size <= 14:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=values.size)))
    else:
        signs = np.random.default_rng(boot.seed).choice((1.0, -1.0), size=(boot.resamples, values.size))
    return float(np.mean((signs * values).mean(axis=1) >= values.mean() - 1e-12))


def _zero_tail(pairs: pl.DataFrame, ratios: np.ndarray, boot: Bootstrap) -> float | None:
    """Smallest swept ratio from which on the pooled mean gain's CI includes zero."""
    for ratio in ratios:
        tail = pairs.filter(pl.col(RATIO) >= ratio)["difference"].to_numpy()
        low, high = mean_ci(tail, boot)
        # One pair has no interval: it cannot show that the gain is zero.
        if low == low and low <= 0 <= high:
            return float(ratio)
    return None

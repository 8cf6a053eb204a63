"""The imbalance threshold: the minority ratio from which a contrast's gain can no longer be told from none.

The gain is the sweep's declared headline contrast, treated minus control (``finalbn.analysis.contrasts``;
final BN minus none in the thesis' imbalance sweep).

Stated no more precisely than the grid and the seeds allow (docs/analysis.md has the long form):

1. Gain curve. At each swept ratio r (minority / majority training images),
   the gain is the mean over seeds of the paired difference
   F1(treated, seed s) - F1(control, seed s), other settings equal, with
   its percentile-bootstrap 95% CI (the gain table's).
2. Resolved. A ratio's gain is resolved while its CI lies above the margin:
   0 F1 by default (the gain is distinguishable from none), or a margin in F1
   units the user states (distinguishable from a gain that small). Not a
   fraction of the peak: that moves with the peak's noise, and interpolating
   to it produced a threshold finer than the grid.
3. Bracket. Going up the swept ratios, the first one whose CI reaches the
   margin and the one before it: the threshold lies between the two and the
   grid says no more. The point estimate is the bracket's midpoint on log
   ratio (the grids are spaced on a log scale: 0.01, 0.02, 0.05, 0.1). Every
   ratio resolved: no level-off within the swept range (threshold > r_max);
   the smallest ratio not resolved: no resolved gain. Ratios above the bracket
   whose gain is resolved again are listed in the table, not the headline:
   over many ratios some CI misses zero by chance.
4. Interval. Seeds resampled with replacement within each ratio (pairs kept
   together), 2,000 times; each replicate gets a bracket by the same rule, its
   CIs from an inner bootstrap. The interval runs from the 2.5% quantile of
   the replicates' lower ends to the 97.5% quantile of their upper ends,
   widened to hold the observed bracket: seed noise and grid resolution
   together, never narrower than the grid step around the estimate.
5. Is there a gain at all? One one-sided sign-flip test over every pair
   (``gain_p``); not rejecting at 5% reports "no resolved gain" whatever the
   per-ratio CIs say, so that many ratios cannot make a gain appear by chance.
6. Few seeds. Below ``FEW_SEEDS`` pairs per ratio a percentile bootstrap CI
   covers far less than 95% (two pairs: their range, 50%), so the bracket may
   sit too low; the description says so and how many seeds a paired t-test
   at 5% would need for 80% power to resolve the gain it reports, at the
   observed paired spread (the pooled within-ratio standard deviation).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

from finalbn.analysis.contrasts import paired
from finalbn.analysis.headline import FEW_SEEDS, MAX_SEEDS, seeds_to_ask
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate
from finalbn.errors import UserError
from finalbn.sweep.spec import Contrast

RATIO = "ratio"
MINORITY = "data.train_minority"
# Default margin, in F1 units: a gain is resolved while its CI excludes zero.
MARGIN = 0.0
# Inner bootstrap per distinct replicate, as many as the observed CI's.
INNER_RESAMPLES = 2000
# Power asked of the paired t-test when sizing seeds.
POWER = 0.8

Status = Literal["found", "beyond", "no_gain"]


@dataclass(frozen=True)
class Threshold:
    metric: str
    # Whose gain: treated minus control.
    contrast: Contrast
    # Other studied settings this threshold holds for, e.g. {"model.unfreeze": "none"}.
    group: dict[str, str]
    # In F1 units: a gain is resolved while its CI lies above it.
    margin: float
    # found: within the swept range; beyond: every ratio resolved; no_gain: none, or no gain overall.
    status: Status
    # Last swept ratio with a resolved gain, first one whose CI reaches the margin (found only).
    bracket: tuple[float, float] | None
    # The bracket's midpoint on log ratio (found only).
    estimate: float | None
    # Seed noise and grid resolution; high None: beyond the swept range.
    low: float | None
    high: float | None
    # One-sided sign-flip p-value of "no gain at any ratio" (statistic: the mean gain over all pairs).
    gain_p: float
    # Share of bootstrap replicates resolved at every swept ratio.
    beyond_share: float
    # Ratios above the bracket whose gain is resolved again.
    resolved_again: tuple[float, ...]
    # The gain the description reports (last resolved / at the largest ratio / the largest) and where.
    reported_gain: float
    reported_ratio: float
    # Fewest pairs at a ratio, the pooled paired spread, and the seeds that would resolve reported_gain.
    seeds: int
    spread: float
    seeds_needed: int | None
    smallest_ratio: float
    largest_ratio: float
    # Per ratio: pairs, mean gain, CI, resolved.
    curve: pl.DataFrame

    @property
    def seeds_to_ask(self) -> int | None:
        """Seeds per ratio a headline asks for: resolving ``reported_gain`` and the bootstrap's own floor."""
        return seeds_to_ask(self.seeds_needed, self.spread, self.reported_gain - self.margin)

    def describe(self) -> str:
        """One line: the bracket of swept ratios first, then the log midpoint and the interval. With too
        few seeds the caveat comes first and the intervals are read as the spread of the seeds at hand."""
        name = f"{self.metric}{self._where()}"
        if self.seeds < FEW_SEEDS:
            return f"{name}: {self._seed_caveat()}; as measured, {self._as_measured()}"
        return f"{name}: {self._claim()}"

    def finding(self) -> str:
        """The headline's sentence: the claim in short, or with too few seeds the gain as measured."""
        name = f"{self.metric}{self._where()}"
        gain = f"{self.reported_gain:+.3f} F1"
        if self.seeds < FEW_SEEDS:
            first, last = self.curve.row(0, named=True), self.curve.row(-1, named=True)
            return (
                f"{name}: mean gain {first['gain_mean']:+.3f} F1 at ratio {_fmt(first[RATIO])}, "
                f"{last['gain_mean']:+.3f} at {_fmt(last[RATIO])}"
            )
        above = "" if self.margin == 0 else f" above the {_fmt(self.margin)} F1 margin"
        if self.status == "no_gain":
            why = self._no_gain_why()
            largest = f"largest mean gain {gain} at {_fmt(self.reported_ratio)}"
            return f"{name}: no resolved {self._gain()} ({why}); {largest}"
        if self.status == "beyond":
            return (
                f"{name}: no level-off within the swept range; gain resolved{above} at every ratio up to "
                f"{_fmt(self.largest_ratio)} ({gain} there)"
            )
        assert self.bracket is not None
        return (
            f"{name}: threshold between swept ratios {_fmt(self.bracket[0])} and {_fmt(self.bracket[1])} (95% "
            f"interval {_fmt(self.low)} to {_fmt(self.high, beyond=self.largest_ratio)}); gain {gain} resolved"
            f"{above} up to {_fmt(self.bracket[0])}"
        )

    def _gain(self) -> str:
        return f"gain of {self.contrast.treated} over {self.contrast.control}"

    def _where(self) -> str:
        return "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in self.group.items())

    def _reach(self) -> str:
        return "includes 0" if self.margin == 0 else f"reaches the {_fmt(self.margin)} F1 margin"

    def _no_gain_why(self) -> str:
        if not self.curve["resolved"][0]:
            return f"its 95% CI {self._reach()} already at the smallest ratio {_fmt(self.smallest_ratio)}"
        return f"the sign-flip test over all pairs gives p {self.gain_p:.2f}"

    def _claim(self) -> str:
        gain = f"{self.reported_gain:+.3f} F1"
        if self.status == "no_gain":
            return (
                f"no resolved {self._gain()} ({self._no_gain_why()}; largest mean gain {gain} at ratio "
                f"{_fmt(self.reported_ratio)})"
            )
        if self.status == "beyond":
            return (
                f"no level-off within the swept range: the gain is resolved at every swept ratio up to "
                f"{_fmt(self.largest_ratio)} ({gain} there), threshold > {_fmt(self.largest_ratio)} "
                f"(95% interval from {_fmt(self.low)})"
            )
        assert self.bracket is not None and self.estimate is not None
        return (
            f"gain resolved up to ratio {_fmt(self.bracket[0])} ({gain}), its 95% CI first {self._reach()} at "
            f"{_fmt(self.bracket[1])}: threshold between swept ratios {_fmt(self.bracket[0])} and "
            f"{_fmt(self.bracket[1])} (log midpoint {_fmt(self.estimate)}; 95% interval with seed noise "
            f"{_fmt(self.low)} to {_fmt(self.high, beyond=self.largest_ratio)})"
        )

    def _as_measured(self) -> str:
        """What the few seeds' intervals show, worded as their spread, not as a resolved finding."""
        gain = f"{self.reported_gain:+.3f} F1"
        above = "above 0" if self.margin == 0 else f"above the {_fmt(self.margin)} F1 margin"
        if self.status == "beyond":
            return f"the 95% CIs lie {above} at every swept ratio up to {_fmt(self.largest_ratio)} ({gain} there)"
        if self.status == "found":
            assert self.bracket is not None
            return (
                f"the 95% CIs lie {above} up to ratio {_fmt(self.bracket[0])} ({gain}) and first {self._reach()} "
                f"at {_fmt(self.bracket[1])}"
            )
        return f"{self._no_gain_why()}; largest mean gain {gain} at ratio {_fmt(self.reported_ratio)}"

    def _seed_caveat(self) -> str:
        text = f"{self.seeds} seed(s) per ratio (< {FEW_SEEDS}): the intervals are unreliable"
        if self.spread != self.spread:
            return text + " and there is no paired spread to size more seeds from"
        takes = f"more than {MAX_SEEDS}" if self.seeds_needed is None else str(self.seeds_needed)
        return (
            text + f"; resolving {self.reported_gain - self.margin:+.3f} F1 at the observed paired spread (sd "
            f"{self.spread:.3f}) takes {takes} seeds by a paired t-test (5%, {POWER:.0%} power), "
            f"and at least {FEW_SEEDS} for the bootstrap intervals to hold"
        )


def _fmt(value: float | None, beyond: float | None = None) -> str:
    if value is None:
        return f"> {beyond:.3g}" if beyond is not None else "-"
    return f"{value:.3g}"


def with_ratio(trials: pl.DataFrame) -> pl.DataFrame:
    """Adds ``ratio`` = minority / majority training images per class (the thesis' 10 / 1000 = 0.01)."""
    for column in (MINORITY, "data.train_majority"):
        if column not in trials.columns:
            raise UserError(f"table has no column {column!r}: the imbalance ratio needs both training counts")
    return trials.with_columns(
        (pl.col(MINORITY).cast(pl.Float64) / pl.col("data.train_majority").cast(pl.Float64)).alias(RATIO)
    )


def gain_pairs(trials: pl.DataFrame, metric: str, contrast: Contrast, by: Sequence[str] = ()) -> pl.DataFrame:
    """Paired treated - control differences of ``metric`` per ratio (and ``by`` group), paired by seed
    and every other axis."""
    return paired(with_ratio(trials), metric, contrast, by=[*by, RATIO])


def first_unresolved(resolved: np.ndarray) -> np.ndarray:
    """Per row of ``resolved`` (replicates x ratios): index of the first unresolved ratio; the width if none."""
    resolved = np.atleast_2d(resolved)
    return np.where(resolved.all(axis=1), resolved.shape[1], np.argmin(resolved, axis=1))


def find_threshold(
    trials: pl.DataFrame,
    contrast: Contrast,
    metric: str = "f1_minority",
    group: dict[str, str] | None = None,
    margin: float = MARGIN,
    boot: Bootstrap = DEFAULT,
) -> Threshold:
    """The threshold of one gain curve (``contrast``: treated - control): ``trials`` holds one group."""
    pairs = gain_pairs(trials, metric, contrast)
    if pairs.height == 0:
        raise UserError(
            f"no {contrast.text()} pairs for {metric}: the threshold needs trials of {contrast.axis} "
            f"{contrast.treated} and {contrast.control} at equal seeds"
        )
    curve = aggregate(pairs.sort(RATIO), [RATIO], ["difference"], boot).sort(RATIO)
    curve = curve.rename({"n": "pairs", **{f"difference_{s}": f"gain_{s}" for s in ("mean", "std", "lo", "hi")}})
    curve = curve.with_columns((pl.col("gain_lo").fill_nan(None) > margin).fill_null(False).alias("resolved"))
    ratios = curve[RATIO].to_numpy()
    if ratios.size < 2:
        raise UserError(f"only one imbalance ratio ({ratios[0]:.3g}) has pairs: a threshold needs two or more")
    means = curve["gain_mean"].to_numpy()
    resolved = curve["resolved"].to_numpy()
    cut = int(first_unresolved(resolved)[0])
    gain_p = gain_p_value(pairs, boot)
    status: Status = "no_gain" if cut == 0 or gain_p >= 1 - boot.level else "beyond" if cut == ratios.size else "found"
    cuts = first_unresolved(_replicate_resolved(pairs, ratios, margin, boot))
    low, high = _interval(ratios, cuts, cut, boot)
    reported = {"found": cut - 1, "beyond": ratios.size - 1, "no_gain": int(np.argmax(means))}[status]
    spread = pooled_spread(pairs)
    seeds = int(curve["pairs"].min())
    bracket = (float(ratios[cut - 1]), float(ratios[cut])) if status == "found" else None
    return Threshold(
        metric=metric,
        contrast=contrast,
        group=group or {},
        margin=float(margin),
        status=status,
        bracket=bracket,
        estimate=math.sqrt(bracket[0] * bracket[1]) if bracket else None,
        low=low if status != "no_gain" else None,
        high=high if status != "no_gain" else None,
        gain_p=gain_p,
        beyond_share=float(np.mean(cuts == ratios.size)),
        resolved_again=tuple(float(r) for r in ratios[cut + 1 :][resolved[cut + 1 :]]) if status == "found" else (),
        reported_gain=float(means[reported]),
        reported_ratio=float(ratios[reported]),
        seeds=seeds,
        spread=spread,
        seeds_needed=seeds_needed(float(means[reported]) - margin, spread, paired=True),
        smallest_ratio=float(ratios[0]),
        largest_ratio=float(ratios[-1]),
        curve=curve,
    )


def thresholds(
    trials: pl.DataFrame,
    contrast: Contrast,
    metrics: Sequence[str] = ("f1_minority", "f1_majority"),
    by: Sequence[str] = (),
    margin: float = MARGIN,
    boot: Bootstrap = DEFAULT,
) -> list[Threshold]:
    """One threshold per metric and per value of ``by`` (e.g. frozen vs unfrozen backbone, plant)."""
    groups = trials.select(by).unique(maintain_order=True).iter_rows(named=True) if by else [{}]
    found = []
    for group in groups:
        subset = trials.filter(*[pl.col(k) == v for k, v in group.items()]) if group else trials
        for metric in metrics:
            label = {k: str(v) for k, v in group.items()}
            found.append(find_threshold(subset, contrast, metric, label, margin, boot))
    return found


def threshold_table(found: Sequence[Threshold]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "metric": t.metric,
                "group": ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.group.items()) or "all",
                "status": t.status,
                "bracket_low": t.bracket[0] if t.bracket else None,
                "bracket_high": t.bracket[1] if t.bracket else None,
                "log_midpoint": t.estimate,
                "interval_low": t.low,
                "interval_high": t.high,
                "margin_f1": t.margin,
                "gain_p": t.gain_p,
                "beyond_range_share": t.beyond_share,
                "seeds": t.seeds,
                "paired_sd": t.spread,
                "seeds_needed": t.seeds_needed,
                "resolved_again": ", ".join(f"{r:.3g}" for r in t.resolved_again),
                "largest_ratio": t.largest_ratio,
            }
            for t in found
        ],
        schema_overrides={
            **{
                k: pl.Float64
                for k in ("bracket_low", "bracket_high", "log_midpoint", "interval_low", "interval_high", "paired_sd")
            },
            "seeds_needed": pl.Int64,
        },
    )


def pooled_spread(pairs: pl.DataFrame) -> float:
    """Standard deviation of the paired differences within a ratio, pooled over ratios; NaN with one pair each."""
    groups = pairs.group_by(RATIO).agg(pl.col("difference").var(ddof=1).alias("var"), pl.len().alias("n"))
    groups = groups.filter(pl.col("n") > 1)
    dof = int((groups["n"] - 1).sum()) if groups.height else 0
    if dof == 0:
        return float("nan")
    return math.sqrt(float((groups["var"] * (groups["n"] - 1)).sum()) / dof)


def seeds_needed(effect: float, spread: float, paired: bool, level: float = 0.95, power: float = POWER) -> int | None:
    """Seeds per cell for a t-test at ``1 - level`` to detect ``effect`` with ``power``, at ``spread``
    (scipy.stats.nct: the noncentral t). Paired: one-sample test of the differences; else two groups.
    None: no spread, no effect, or more than MAX_SEEDS."""
    if not spread == spread or effect == 0:
        return None
    if spread == 0:
        return 2
    n = np.arange(2, MAX_SEEDS + 1)
    dof = n - 1 if paired else 2 * n - 2
    shift = abs(effect) / spread * (np.sqrt(n) if paired else np.sqrt(n / 2))
    critical = stats.t.ppf(1 - (1 - level) / 2, dof)
    achieved = stats.nct.sf(critical, dof, shift) + stats.nct.cdf(-critical, dof, shift)
    enough = np.flatnonzero(achieved >= power)
    return int(n[enough[0]]) if enough.size else None


def _replicate_resolved(pairs: pl.DataFrame, ratios: np.ndarray, margin: float, boot: Bootstrap) -> np.ndarray:
    """Per bootstrap replicate and ratio (replicates x ratios): is the replicate's gain resolved?

    Each ratio's pairs are resampled with replacement; the replicate's CI lower
    bound is the percentile of an inner bootstrap of its resampled pairs, like
    the observed CI. A replicate is a multiset of the pairs and a few seeds
    have few multisets (five: 126), so the inner bootstrap runs once per
    distinct multiset, not per replicate.
    """
    rng = np.random.default_rng(boot.seed)
    tail = boot.quantiles()[0]
    resolved = np.zeros((boot.resamples, ratios.size), dtype=bool)
    for column, ratio in enumerate(ratios):
        values = np.sort(pairs.filter(pl.col(RATIO) == ratio)["difference"].to_numpy())
        if values.size < 2:
            continue  # one pair has no interval: never resolved, as observed
        picks = np.sort(rng.integers(0, values.size, size=(boot.resamples, values.size)), axis=1)
        multisets, replicate = np.unique(picks, axis=0, return_inverse=True)
        samples = values[multisets]
        # One set of inner draws for every multiset (common random numbers): replicates differ by their pairs only.
        means = samples[:, rng.integers(0, values.size, size=(INNER_RESAMPLES, values.size))].mean(axis=2)
        # The lower percentile lies above the margin when fewer than that share of the means reach it.
        resolved[:, column] = (np.mean(means <= margin, axis=1) < tail)[replicate.ravel()]
    return resolved


def _interval(ratios: np.ndarray, cuts: np.ndarray, cut: int, boot: Bootstrap) -> tuple[float | None, float | None]:
    """From the replicates' brackets (first unresolved index per replicate) and the observed one.

    A replicate unresolved at the smallest ratio puts the lower end there: the
    grid cannot say how far below it the threshold would be.
    """
    tail_low, tail_high = boot.quantiles()
    lower = min(int(np.quantile(cuts, tail_low, method="lower")), cut) - 1
    upper = max(int(np.quantile(cuts, tail_high, method="higher")), cut)
    low = float(ratios[max(lower, 0)])
    return low, float(ratios[upper]) if upper < ratios.size else None


def gain_p_value(pairs: pl.DataFrame, boot: Bootstrap = DEFAULT) -> float:
    """One-sided sign-flip test of "the treated arm gains nothing at any ratio", over all pairs at once.

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


def minority_brackets(
    trials: pl.DataFrame, contrast: Contrast, by: Sequence[str], margin: float = MARGIN
) -> list[tuple[int, int]]:
    """The minority-F1 threshold's brackets, per group, in minority training images (``data.train_minority``):
    what ``--refine`` bisects. Groups whose threshold is not within the swept range have none."""
    majority = trials["data.train_majority"].cast(pl.Float64)
    if majority.n_unique() != 1:
        raise UserError("--refine needs one data.train_majority across the sweep: the ratio is minority / majority")
    count = float(majority[0])
    found = thresholds(trials, contrast, metrics=("f1_minority",), by=by, margin=margin)
    return [(round(t.bracket[0] * count), round(t.bracket[1] * count)) for t in found if t.bracket is not None]

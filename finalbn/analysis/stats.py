"""Seed aggregation and paired differences, with seeded percentile-bootstrap CIs (scipy.stats).

Every interval here is a percentile bootstrap of a mean over replicate runs
(seeds): resample the runs with replacement, take the mean, read the 2.5% and
97.5% quantiles. The random generator is seeded, so the same table always
gives the same interval. With very few runs (the laptop presets have two
seeds) the interval is only as wide as the runs are far apart; it says how
much the runs at hand disagree, not more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from finalbn.errors import UserError

# Replicate means drawn per interval: enough for stable 2.5%/97.5% quantiles.
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
# Permutation tests enumerate every relabelling up to this many, else sample.
EXACT_LIMIT = 20000


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn; the defaults make every report reproducible."""

    resamples: int = RESAMPLES
    level: float = LEVEL
    seed: int = SEED

    def quantiles(self) -> tuple[float, float]:
        tail = (1 - self.level) / 2
        return tail, 1 - tail


DEFAULT = Bootstrap()


def mean_ci(values: Sequence[float] | np.ndarray, boot: Bootstrap = DEFAULT) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (scipy.stats.bootstrap); NaN with fewer than two values.

    The generator is seeded per call, not per table: a group's interval does
    not depend on which other groups the table holds or their order.
    """
    # Sorted: the same runs give the same interval whatever order a table lists them in.
    values = np.sort(np.asarray(values, dtype=np.float64))
    values = values[~np.isnan(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    if values[0] == values[-1]:
        # Every run agrees: scipy warns of a degenerate distribution; the interval is the point.
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=boot.resamples,
        confidence_level=boot.level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(boot.seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def permutation_p(a: np.ndarray, b: np.ndarray, boot: Bootstrap = DEFAULT) -> float:
    """Two-sided permutation p-value of mean(a) - mean(b) (scipy.stats.permutation_test):
    exact when the relabellings are at most EXACT_LIMIT.

    Exact at small n, so it says honestly that two seeds per group can never
    separate two groups (the smallest p with 2 vs 2 runs is 1/3), where a
    percentile bootstrap interval would.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # scipy needs two runs a group; a group of one run cannot be told from another anyway.
    if a.size < 2 or b.size < 2:
        return float("nan")
    exact = math.comb(a.size + b.size, a.size) <= EXACT_LIMIT
    # |difference| against "greater": P(|T*| >= |T|), two-sided without assuming a symmetric null
    # (scipy's "two-sided" doubles the smaller tail, which differs when the groups differ in size).
    result = stats.permutation_test(
        (a, b),
        _abs_mean_difference,
        permutation_type="independent",
        vectorized=True,
        n_resamples=EXACT_LIMIT if exact else boot.resamples,
        alternative="greater",
        rng=np.random.default_rng(boot.seed),
    )
    return float(result.pvalue)


def sign_flip_p(differences: np.ndarray, boot: Bootstrap = DEFAULT) -> float:
    """Two-sided sign-flip (paired permutation) p-value of a mean paired difference
    (scipy.stats.permutation_test over signs); exact up to 2^14 pairs."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    # One pair (scipy needs two) or all zero: every sign flip is as extreme as the data, p = 1 exactly.
    if d.size < 2 or not d.any():
        return 1.0
    result = stats.permutation_test(
        (d,),
        lambda x, axis: np.abs(np.mean(x, axis=axis)),
        permutation_type="samples",
        vectorized=True,
        n_resamples=2**14 if d.size <= 14 else boot.resamples,
        alternative="greater",
        rng=np.random.default_rng(boot.seed),
    )
    return float(result.pvalue)


def _abs_mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(np.mean(a, axis=axis) - np.mean(b, axis=axis))


def aggregate(
    frame: pl.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    boot: Bootstrap = DEFAULT,
) -> pl.DataFrame:
    """Mean, std and bootstrap CI of each metric per configuration (``by``), over the runs in it.

    Columns: ``by``, ``n`` (runs), then ``<metric>_mean``, ``_std``, ``_lo``, ``_hi`` per metric.
    Groups keep their first-seen order; sort afterwards if needed.
    """
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise UserError(f"table has no column(s) {', '.join(missing)} to aggregate: check the metric names")
    keys = list(by)
    lists = [pl.col(m).cast(pl.Float64).drop_nulls().drop_nans().alias(m) for m in metrics]
    grouped = (
        frame.group_by(keys, maintain_order=True).agg(pl.len().alias("n"), *lists)
        if keys
        else frame.select(pl.len().alias("n"), *[expr.implode() for expr in lists])
    )
    columns: dict[str, list[float]] = {}
    for metric in metrics:
        runs = grouped[metric].to_list()
        columns[f"{metric}_mean"] = [_mean(v) for v in runs]
        columns[f"{metric}_std"] = [_std(v) for v in runs]
        intervals = [mean_ci(v, boot) for v in runs]
        columns[f"{metric}_lo"] = [low for low, _ in intervals]
        columns[f"{metric}_hi"] = [high for _, high in intervals]
    return grouped.select(*keys, "n").with_columns(**{k: pl.Series(v, dtype=pl.Float64) for k, v in columns.items()})


def paired_differences(
    frame: pl.DataFrame,
    metric: str,
    factor: str,
    treated: object,
    control: object,
    pair_on: Sequence[str],
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """One row per pair: ``treated - control`` of ``metric`` for runs equal in ``by`` and ``pair_on``.

    ``pair_on`` names what makes two runs a pair (the seed: same initial
    weights where the architectures allow it, same batch order); runs
    without a partner are left out, so a partial sweep pairs what it can.
    """
    keys = [*by, *pair_on]
    for column in (metric, factor, *keys):
        if column not in frame.columns:
            raise UserError(f"table has no column {column!r} for paired differences: is it a finalbn sweep table?")
    side = frame.select(*keys, factor, pl.col(metric).cast(pl.Float64))
    left = side.filter(pl.col(factor) == treated).drop(factor).rename({metric: "treated"})
    right = side.filter(pl.col(factor) == control).drop(factor).rename({metric: "control"})
    # unique(): a resumed sweep never holds duplicates, but a hand-made table might.
    left, right = left.unique(keys, keep="first"), right.unique(keys, keep="first")
    pairs = left.join(right, on=keys, how="inner", nulls_equal=True)
    return pairs.with_columns((pl.col("treated") - pl.col("control")).alias("difference")).sort(keys)


def summarise_differences(pairs: pl.DataFrame, by: Sequence[str] = (), boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """Mean paired difference per group with its CI, whether the CI excludes zero, and a sign-flip p-value."""
    table = aggregate(pairs, by, ["difference"], boot).rename({"n": "pairs"})
    keys = list(by)
    groups = pairs.group_by(keys, maintain_order=True).agg(pl.col("difference")) if keys else None
    lists = groups["difference"].to_list() if groups is not None else [pairs["difference"].to_list()]
    p_values = pl.Series("p_sign_flip", [sign_flip_p(np.array(v, dtype=np.float64), boot) for v in lists])
    return table.with_columns(
        ((pl.col("difference_lo") > 0) | (pl.col("difference_hi") < 0)).fill_null(False).alias("ci_excludes_zero"),
        p_values,
    )


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _std(values: list[float]) -> float:
    # Sample std (ddof 1), the "std over runs" of the thesis' shaded bands.
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

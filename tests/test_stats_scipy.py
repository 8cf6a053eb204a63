"""The scipy.stats intervals and tests agree with the textbook computations they replaced."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from finalbn.analysis.stats import mean_ci, permutation_p, sign_flip_p


def reference_ci(values: np.ndarray, resamples: int = 20000) -> tuple[float, float]:
    rng = np.random.default_rng(123)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    low, high = np.quantile(means, (0.025, 0.975))
    return float(low), float(high)


@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_bootstrap_interval_matches_a_plain_percentile_bootstrap(n: int) -> None:
    values = np.random.default_rng(n).normal(0.6, 0.1, size=n)
    low, high = mean_ci(values)
    ref_low, ref_high = reference_ci(values)
    # Monte-Carlo error of a 2,000-resample percentile: well under a tenth of the spread.
    tolerance = 0.1 * values.std()
    assert low == pytest.approx(ref_low, abs=tolerance) and high == pytest.approx(ref_high, abs=tolerance)


def test_exact_permutation_p_equals_enumeration() -> None:
    a, b = np.array([0.9, 0.8, 0.85]), np.array([0.5, 0.55, 0.6, 0.52])
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    extreme = [
        abs(pooled[list(idx)].mean() - np.delete(pooled, list(idx)).mean()) >= observed - 1e-12
        for idx in itertools.combinations(range(pooled.size), a.size)
    ]
    assert permutation_p(a, b) == pytest.approx(np.mean(extreme))
    # Two seeds a side can never separate two groups: the smallest p is 1/3.
    assert permutation_p(np.array([1.0, 1.1]), np.array([0.0, 0.1])) == pytest.approx(1 / 3)


def test_exact_sign_flip_p_equals_enumeration() -> None:
    d = np.array([0.3, 0.25, 0.4, -0.05, 0.2])
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    expected = np.mean(np.abs((flips * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert sign_flip_p(d) == pytest.approx(expected)
    assert sign_flip_p(np.array([0.4])) == 1.0

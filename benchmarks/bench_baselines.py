"""The cpu baselines sweep beside the headline sweep, warm feature cache, and what a post-hoc method costs.

Both sweeps run for real on the real PlantVillage subset (``FINALBN_PLANTVILLAGE``) with the default local
backend, each into a fresh results folder of its own, MLflow off, after one untimed headline sweep that fills the
feature cache (the
trunk's features are cached per image across sweeps, so a warm cache is the state every sweep after the first
meets). The ratio is per-trial wall time, baselines over headline: their trials train the same head on the
same features, so it should be near 1. A post-hoc method (logit adjustment at test, a validation threshold,
final BN removed) trains nothing: its cost per trial is the scoring of one trained model's saved outputs,
timed directly on a finished trial's test and validation probabilities against that trial's own wall time.

``quick``: Apple only, 2 seeds (``--axis data.plant=Apple --seeds 2``): so few trials that each sweep's fixed
start-up (the workers, MLflow, the report) dominates its per-trial time, so its first ratio says little.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_feature_cache import plantvillage_root
from finalbn.metrics import thresholded, trial_metrics, val_threshold

TARGET = 1.1


def sweep_seconds(experiment: str, out: Path, extra: list[str]) -> tuple[float, int]:
    """Wall time of one cpu sweep script run in this process, and the distinct trials it finished: a script may
    run several sweeps (baselines: the main grid and baselines_ratio, which copies in the main grid's trials with
    its ids), so trials are counted once per id over all of its sweep folders."""
    from finalbn.records.folders import SUMMARY, TRIALS
    from finalbn.sweep.cli import run_script

    argv = ["--preset", "cpu", "--data", str(plantvillage_root()), "--out", str(out), "--no-tracking", *extra]
    started = time.perf_counter()
    code = run_script(experiment, None, argv)
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"the {experiment} cpu sweep exited {code}")
    finished = {folder.name for folder in out.glob(f"*/{TRIALS}/*") if (folder / SUMMARY).exists()}
    return seconds, len(finished)


def post_hoc_seconds(repeats: int = 20) -> float:
    """Seconds to score one trial's post-hoc methods (logit adjustment and validation threshold: two full
    metric sets and a threshold search) on the thesis split's sizes: 300 test and 157 validation images."""
    rng = np.random.default_rng(0)
    classes, minority = ("healthy", "unhealthy"), (1,)
    y_test, y_val = np.repeat([0, 1], 150), np.repeat([0, 1], [150, 7])
    probs_test, probs_val = rng.dirichlet([2, 1], 300), rng.dirichlet([2, 1], 157)
    prior = np.array([1000 / 1010, 10 / 1010])
    started = time.perf_counter()
    for _ in range(repeats):
        adjusted = np.log(probs_test) - np.log(prior)
        adjusted = np.exp(adjusted) / np.exp(adjusted).sum(axis=1, keepdims=True)
        trial_metrics(y_test, adjusted, classes, minority, prior)
        threshold = val_threshold(y_val, probs_val, minority)
        predicted = thresholded(probs_test, minority, threshold)
        trial_metrics(y_test, probs_test, classes, minority, prior, predicted=predicted)
    return (time.perf_counter() - started) / repeats


def run(quick: bool = False) -> list[dict[str, object]]:
    extra = ["--axis", "data.plant=Apple", "--seeds", "2"] if quick else []
    with tempfile.TemporaryDirectory() as folder:
        warm, first, second = (Path(folder) / name for name in ("warm", "headline", "baselines"))
        # Untimed: fills the feature cache. Both sweeps draw the same images (same protocol, plants and split).
        sweep_seconds("headline", warm, extra)
        # Each timed sweep in a results folder of its own: under one --out the baselines sweep would copy in
        # the headline's 90 trials with the same ids instead of training them.
        headline, headline_trials = sweep_seconds("headline", first, extra)
        baselines, baselines_trials = sweep_seconds("baselines", second, extra)
    per_headline, per_baselines = headline / headline_trials, baselines / baselines_trials
    scoring = post_hoc_seconds()
    scope = "Apple, 2 seeds" if quick else "3 plants, 10 seeds"
    return [
        {
            "benchmark": f"cpu baselines sweep, warm feature cache ({scope})",
            "baseline": f"headline: {headline_trials} trials in {headline:.0f} s ({per_headline:.2f} s/trial)",
            "this tool": f"baselines + baselines_ratio: {baselines_trials} trials in {baselines:.0f} s "
            f"({per_baselines:.2f} s/trial)",
            "ratio": per_baselines / per_headline,
            "target": f"<= {TARGET}x per trial",
        },
        {
            "benchmark": "  a post-hoc method's cost per trial (scoring saved outputs, no training)",
            "baseline": f"a trained trial: {per_baselines:.2f} s",
            "this tool": f"logit adjustment + validation threshold: {scoring * 1000:.1f} ms",
            "ratio": scoring / per_baselines,
            "target": "near 0",
        },
    ]


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(run())

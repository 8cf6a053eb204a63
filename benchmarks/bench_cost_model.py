"""The cost model against the clock: the default sweep's wall time as
``--dry-run --calibrate`` predicts it, then as it runs.

The prediction times the sweep's costliest trial for two epochs on this
machine, scales it to every trial (epochs, images, passes) and schedules the
trials onto the workers in grid order. The actual run is the main job
(imbalance_ratio, laptop preset, embedded MNIST) with MLflow; its wall time
includes what the prediction leaves out (Ray start, tables, the report).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from finalbn.sweep.costs import calibrate, epoch_work, makespan
from finalbn.sweep.experiments import build_sweeps


def run(quick: bool = False) -> list[dict[str, object]]:
    from finalbn.launch.ray_tune import RayTuneBackend
    from finalbn.records.folders import MLFLOW_ARTIFACTS
    from finalbn.sweep import SweepOptions, run_sweep
    from finalbn.tracking import MlflowTracker, default_tracking_uri

    [spec] = build_sweeps("imbalance_ratio", "smoke" if quick else "laptop", None)
    workers = os.cpu_count() or 1
    trials = list(spec.trials())
    calibration = calibrate(max(trials, key=lambda t: epoch_work(t.config)).config)
    predicted = makespan([calibration.trial_seconds(t.config) for t in trials], workers)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        started = time.perf_counter()
        tracker = MlflowTracker(default_tracking_uri(out), artifact_root=out / MLFLOW_ARTIFACTS)
        report = run_sweep(spec, SweepOptions(out=out), RayTuneBackend("local"), tracker)
        actual = time.perf_counter() - started
    assert not report.failed, report.failed
    return [
        {
            "benchmark": f"cost model: {spec.name} ({len(trials)} trials, {workers} workers)",
            "baseline": f"predicted {predicted:.0f} s (calibration {calibration.setup_seconds:.1f} s set-up "
            f"+ {calibration.epoch_seconds:.2f} s/epoch)",
            "this tool": f"actual {actual:.0f} s",
            "ratio": actual / predicted,
            "target": "~1.0 (actual / predicted)",
        }
    ]


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(run())

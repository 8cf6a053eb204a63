"""A 12-trial sweep run as its own process, so tests can kill it for real.

usage: python tests/sweep_driver.py NAME RESULTS_DIR TRACKING_URI [RETRIES]
"""

import sys
from pathlib import Path

from finalbn.console import guarded
from finalbn.launch.ray_tune import RayTuneBackend
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import MlflowTracker
from finalbn.train.presets import EMBEDDED_MNIST

TRIALS = 12


def spec(name: str) -> SweepSpec:
    return SweepSpec(
        name=name,
        base=EMBEDDED_MNIST.replace(train={"epochs": 3}),
        axes=(
            Axis("data.train_minority", (3, 6, 9)),
            Axis("model.final_norm", ("bn", "none")),
            Axis("train.seed", (0, 1), role="nuisance"),
        ),
    )


def main(name: str, results: str, uri: str, retries: str = "2") -> None:
    tracker = MlflowTracker(uri, artifact_root=Path(results) / "artifacts")
    options = SweepOptions(out=Path(results), retries=int(retries))
    run_sweep(spec(name), options, RayTuneBackend("local"), tracker)


if __name__ == "__main__":
    sys.exit(guarded(lambda: main(*sys.argv[1:]), debug=True))

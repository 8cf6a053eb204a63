"""An 8-trial sweep run as its own process, so tests can kill it for real (or, through ``main``, in the
test's own process where nothing is killed).

usage: python tests/sweep_driver.py NAME RESULTS_DIR TRACKING_URI [RETRIES [BACKEND]]

BACKEND: "serial" (the default: the trials in the driver's own process), "local" (warm worker processes)
or "ray" (a private Ray, the trials in its worker processes: for what only Ray shows).
"""

import sys
from pathlib import Path

from backends import local, ray, serial

from finalbn.console import guarded
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import MlflowTracker
from finalbn.train.presets import EMBEDDED_MNIST

# Eight trials of three epochs: a driver killed or interrupted after a few has more in flight, and by
# trial-id hash "p=0.5" and "p=0.3" faults (tests/faults.py) hit two of them each.
TRIALS = 8


def spec(name: str) -> SweepSpec:
    return SweepSpec(
        name=name,
        base=EMBEDDED_MNIST.replace(train={"epochs": 3}),
        axes=(
            Axis("data.train_minority", (3, 6)),
            Axis("model.final_norm", ("bn", "none")),
            Axis("train.seed", (0, 1), role="nuisance"),
        ),
    )


BACKENDS = {"serial": serial, "local": local, "ray": ray}


def main(name: str, results: str, uri: str, retries: str = "2", backend: str = "serial") -> None:
    tracker = MlflowTracker(uri, artifact_root=Path(results) / "artifacts")
    options = SweepOptions(out=Path(results), retries=int(retries))
    run_sweep(spec(name), options, BACKENDS[backend](), tracker)


if __name__ == "__main__":
    sys.exit(guarded(lambda: main(*sys.argv[1:]), debug=True))

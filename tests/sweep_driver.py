"""The 8-trial sweep of tests/fixtures_sweep.py's ``spec`` run as its own process, so tests can kill it for
real (or, through ``main``, in the test's own process where nothing is killed).

usage: python tests/sweep_driver.py NAME RESULTS_DIR TRACKING_URI [RETRIES [BACKEND [MINORITY_COUNTS]]]

BACKEND: "serial" (the default: the trials in the driver's own process), "local" (warm worker processes)
or "ray" (a private Ray, the trials in its worker processes: for what only Ray shows). MINORITY_COUNTS:
the values of the data.train_minority axis, comma-separated ("3,6", 8 trials, by default; "6" gives 4).
"""

import sys
from pathlib import Path

from backends import local, ray, serial
from fixtures_sweep import TINY, spec

from finalbn.console import guarded
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.tracking import MlflowTracker

# Eight trials of two epochs: a driver killed or interrupted after a few has more in flight, and by
# trial-id hash "p=0.5" and "p=0.3" faults (tests/faults.py) hit four of them each (of the four trials of
# MINORITY_COUNTS "6" three, of "3" one).
TRIALS = 8
EPOCHS = TINY.train.epochs

BACKENDS = {"serial": serial, "local": local, "ray": ray}


def main(name: str, results: str, uri: str, retries: str = "2", backend: str = "serial", minority: str = "3,6") -> None:
    tracker = MlflowTracker(uri, artifact_root=Path(results) / "artifacts")
    options = SweepOptions(out=Path(results), retries=int(retries))
    counts = tuple(int(count) for count in minority.split(","))
    run_sweep(spec(name, counts), options, BACKENDS[backend](), tracker)


if __name__ == "__main__":
    sys.exit(guarded(lambda: main(*sys.argv[1:]), debug=True))

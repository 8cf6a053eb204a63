"""Where the main job's time goes: ``python benchmarks/main_job.py [--out DIR]``.

The main job is ``python sweeps/imbalance_ratio.py`` (laptop preset, embedded
MNIST). This runs its stages one by one, on this machine, and prints each
stage's CPU-seconds scaled to the whole grid and its share of their sum:

* fresh-interpreter imports of the driver (sweep, MLflow, Ray Tune), of a
  trial worker (finalbn.train) and of the report (analysis, matplotlib);
* ``ray.init`` and ``ray.shutdown`` of a private instance (``--backend local``);
* planning (one manifest per ratio), the MLflow store's creation and the
  parent run;
* four trials of the grid, the smallest and the largest ratio at seed 0 with
  and without final BN (so the report has pairs), one torch thread each:
  training, per-epoch evaluation (val + test), and the trial folder's writes;
  then each trial's MLflow logging (epochs, artifacts, figures) as the driver
  does it; per-trial costs are scaled to the grid by their mean;
* the tables and the analysis report written at the end.

On 2 cores the wall time is at least half the sum. Shares, not seconds, are
the result on a shared machine. Last, the same four trials are trained again
side by side, each under the preset's precision (bf16 autocast where the CPU
has it, train.cpu_amp) and in float32, and the ratio of their times printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the package sits beside benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMPORTS = {
    "import: driver (sweep, MLflow, Ray Tune)": "import finalbn.sweep.driver, finalbn.tracking.writer, ray.tune",
    "import: trial worker (torch, finalbn.train)": "import finalbn.train.results, finalbn.train.loop",
    "import: report (analysis, matplotlib)": "import finalbn.analysis.report",
}
RAY_START = (
    "import logging, ray; ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR); "
    "ray.shutdown()"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="keep the sweep folder here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="finalbn-main-job-") as scratch:
        rows, probes = breakdown(args.out or Path(scratch))
        print_shares(rows)
        print_precision_ratio(probes)


def breakdown(out: Path) -> tuple[list[tuple[str, float]], list[Any]]:
    """(stage, CPU-seconds for the whole grid), in the order the main job pays them, and the probe trials' jobs."""
    rows = [(name, fresh_interpreter(code)) for name, code in IMPORTS.items()]
    rows.append(("ray.init + ray.shutdown (--backend local)", fresh_interpreter(RAY_START)))
    stages, probes = in_process(out)
    return rows + stages, probes


def fresh_interpreter(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def in_process(out: Path) -> tuple[list[tuple[str, float]], list[Any]]:
    import finalbn.train.loop as loop
    from finalbn.launch.base import execute
    from finalbn.provenance import code_versions
    from finalbn.records import SUMMARY, Summary, read_json
    from finalbn.records.folders import MLFLOW_ARTIFACTS
    from finalbn.sweep.experiments import build_sweeps
    from finalbn.sweep.plan import plan
    from finalbn.sweep.tables import write_tables
    from finalbn.tracking import MlflowTracker, default_tracking_uri

    [spec] = build_sweeps("imbalance_ratio", "laptop", None)
    folder = out / spec.name
    commit = code_versions()["git_commit"]
    planning, jobs = timed(lambda: plan(spec, folder, commit))
    uri = default_tracking_uri(out)
    store, tracker = timed(lambda: MlflowTracker(uri, artifact_root=out / MLFLOW_ARTIFACTS))
    parent, _ = timed(lambda: tracker.start_sweep(spec, commit, pending=len(jobs), skipped=0))
    # The grid's cheapest and costliest trials, both final-norm settings at one seed.
    counts = [job.trial.config.data.train_minority for job in jobs]
    probes = [
        job
        for job in jobs
        if job.trial.config.data.train_minority in (min(counts), max(counts)) and job.trial.config.train.seed == 0
    ]
    evaluation = Stopwatch(loop._epoch_metrics)
    loop._epoch_metrics = evaluation  # type: ignore[assignment]
    trial_total = trial_train = trial_eval = logging_total = 0.0
    try:
        for job in probes:
            rows: list[dict[str, float]] = []
            evaluation.seconds = 0.0
            total, _ = timed(lambda job=job, rows=rows: execute(job, 1, rows.append))
            trained = read_json(job.folder / SUMMARY, Summary).seconds
            trial_total += total
            trial_train += trained - evaluation.seconds
            trial_eval += evaluation.seconds
            logged, _ = timed(lambda job=job, rows=rows: log_trial(tracker, job, rows))
            logging_total += logged
    finally:
        loop._epoch_metrics = evaluation.inner  # type: ignore[assignment]
    scale = len(jobs) / len(probes)
    tables, _ = timed(lambda: write_tables(folder, jobs))
    tracker.end_sweep("FINISHED")
    report, _ = timed(lambda: write_grid_report(folder, spec, uri))
    return [
        (f"planning ({len(jobs)} trials, one manifest per ratio)", planning),
        ("MLflow store + parent run", store + parent),
        ("trials: training (forward, backward, step)", trial_train * scale),
        ("trials: per-epoch evaluation (val + test)", trial_eval * scale),
        ("trials: set-up and folder writes", (trial_total - trial_train - trial_eval) * scale),
        ("MLflow per trial (epochs, artifacts, figures)", logging_total * scale),
        ("tables + report (figures, HTML)", tables + report),
    ], probes


def log_trial(tracker: Any, job: Any, rows: list[dict[str, float]]) -> None:
    for row in rows:
        tracker.log_epoch(job, row)
    tracker.finish_trial(job, failed=False)


def write_grid_report(folder: Path, spec: Any, uri: str) -> None:
    from finalbn.analysis.report import write_report
    from finalbn.errors import UserError

    try:
        write_report(folder, spec, tracking_uri=uri, gradcam=False)
    except UserError as error:
        # An analysis the four trials cannot support: the report's cost is then partial.
        print(f"report: {error}", file=sys.stderr)


class Stopwatch:
    """Wraps a function and adds up the seconds spent in it."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def print_precision_ratio(probes: list[Any]) -> None:
    """Each probe trial trained twice in a row, one torch thread: as configured and in float32."""
    import torch

    from finalbn.data import Manifest
    from finalbn.train import train_trial

    torch.set_num_threads(1)
    configured = fp32 = 0.0
    precision = "float32"
    for job in probes:
        manifest = Manifest.read(job.manifest)
        result = train_trial(job.trial.config, manifest)
        precision = result.precision
        configured += result.seconds
        fp32 += train_trial(job.trial.config.replace(train={"cpu_amp": False}), manifest).seconds
    print(
        f"{len(probes)} trials side by side: {precision} {configured:.1f} s, float32 {fp32:.1f} s "
        f"(float32 / {precision} = {fp32 / configured:.2f}x)"
    )


def print_shares(rows: list[tuple[str, float]]) -> None:
    total = sum(seconds for _, seconds in rows)
    width = max(len(name) for name, _ in rows)
    print(f"{'stage':<{width}}  {'CPU-s':>7}  share")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.1f}  {seconds / total:5.1%}")
    print(f"{'sum (wall on 2 cores is at least half)':<{width}}  {total:7.1f}")


if __name__ == "__main__":
    main()

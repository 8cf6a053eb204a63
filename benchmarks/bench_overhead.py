"""Orchestration overhead: the tool's local sweep against a bare loop over train_trial.

The same N small trials (embedded MNIST) run (a) one after another in a plain
loop over ``train_trial`` in this process, one torch thread each, and (b) as a
sweep of the tool (``--backend local``: warm worker processes; MLflow to a SQLite
store, trial folders, tables), one core per trial. The ideal sweep time is the loop's time divided by the
cores; the ratio is sweep time / ideal (1.0 = no overhead at all).

A third run, (c), is the same loop split over one plain process per core: no
tool at all, only the cost of trials sharing the machine (memory bandwidth,
caches). (b)/(c) is the tool's own share of the overhead.

A fourth, (d), is what a person without the tool would run: one new ``python`` per core, each importing
torch and finalbn and then training its share of the trials. (a) and (c) leave the imports out of the clock;
the tool's sweep pays them in its workers.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from finalbn.config import TrialConfig
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.train.presets import EMBEDDED_MNIST

TARGET = 1.15


def overhead_spec(epochs: int, seeds: int) -> SweepSpec:
    return SweepSpec(
        name="overhead",
        base=EMBEDDED_MNIST.replace(train={"epochs": epochs}),
        axes=(
            Axis("data.train_minority", (3, 6, 15, 30)),
            Axis("model.final_norm", ("bn", "none")),
            Axis("train.seed", tuple(range(seeds)), role="nuisance"),
        ),
    )


def bare_loop(spec: SweepSpec) -> float:
    import torch

    from finalbn.data import build_manifest
    from finalbn.train import train_trial

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        for trial in spec.trials():
            # A bare loop builds each trial's manifest, as a user's own loop would.
            train_trial(trial.config, build_manifest(trial.config.data))
        return time.perf_counter() - started
    finally:
        # The benchmarks after this one run in the same process.
        torch.set_num_threads(threads)


def _train_one(config: TrialConfig) -> None:
    import torch

    from finalbn.data import build_manifest
    from finalbn.train import train_trial

    torch.set_num_threads(1)
    train_trial(config, build_manifest(config.data))


def bare_processes(spec: SweepSpec, cores: int) -> float:
    """The loop's trials over one plain worker process per core, trials handed out in order."""
    configs = [trial.config for trial in spec.trials()]
    with ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Workers import torch and finalbn before the clock starts.
        list(pool.map(_train_one, configs[:cores]))
        started = time.perf_counter()
        list(pool.map(_train_one, configs, chunksize=1))
        return time.perf_counter() - started


def train_share(epochs: int, seeds: int, index: int, cores: int) -> None:
    """One cold process' share of the trials, trained one after another (run by ``cold_processes``)."""
    for trial in list(overhead_spec(epochs, seeds).trials())[index::cores]:
        _train_one(trial.config)


def cold_processes(epochs: int, seeds: int, cores: int) -> float:
    """Wall time of one new interpreter per core, each training its share of the trials from a cold start."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from benchmarks.bench_overhead import train_share; train_share({epochs}, {seeds}, {i}, {cores})",
            ],
            cwd=Path(__file__).resolve().parents[1],
        )
        for i in range(cores)
    ]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"a bare process exited with {process.returncode}")
    return time.perf_counter() - started


def tool_sweep(spec: SweepSpec, out: Path) -> float:
    from finalbn.launch import BackendOptions, build_backend
    from finalbn.records.folders import MLFLOW_ARTIFACTS
    from finalbn.sweep import SweepOptions, run_sweep
    from finalbn.tracking import MlflowTracker, default_tracking_uri

    started = time.perf_counter()
    tracker = MlflowTracker(default_tracking_uri(out), artifact_root=out / MLFLOW_ARTIFACTS)
    backend = build_backend("local", BackendOptions(out=out))
    report = run_sweep(spec, SweepOptions(out=out), backend, tracker)
    assert not report.failed and len(report.finished) == spec.size(), report
    return time.perf_counter() - started


def run(quick: bool = False) -> list[dict[str, object]]:
    epochs = 2 if quick else 3
    seeds = 4
    spec = overhead_spec(epochs=epochs, seeds=seeds)
    cores = os.cpu_count() or 1
    loop = bare_loop(spec)
    parallel = bare_processes(spec, cores)
    cold = cold_processes(epochs, seeds, cores)
    with tempfile.TemporaryDirectory() as folder:
        sweep = tool_sweep(spec, Path(folder))
    ideal = loop / cores
    what = f"{spec.size()} trials of embedded MNIST ({epochs} epochs), {cores} cores"
    return [
        {
            "benchmark": f"orchestration overhead: {what}",
            "baseline": f"bare loop {loop:.1f} s / {cores} cores = {ideal:.1f} s",
            "this tool": f"local sweep {sweep:.1f} s (workers' start and stop, MLflow, trial folders, tables)",
            "ratio": sweep / ideal,
            "target": f"<= {TARGET}x",
        },
        {
            "benchmark": "  of which sharing the machine (no tool)",
            "baseline": f"ideal {ideal:.1f} s",
            "this tool": f"{cores} bare processes {parallel:.1f} s",
            "ratio": parallel / ideal,
            "target": "(hardware floor)",
        },
        {
            "benchmark": "  of which the tool itself",
            "baseline": f"{cores} bare processes {parallel:.1f} s",
            "this tool": f"local sweep {sweep:.1f} s",
            "ratio": sweep / parallel,
            "target": "-",
        },
        {
            "benchmark": "  against what a person runs by hand",
            "baseline": f"{cores} new python processes {cold:.1f} s (imports and trials)",
            "this tool": f"local sweep {sweep:.1f} s",
            "ratio": sweep / cold,
            "target": "-",
        },
    ]


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(run())

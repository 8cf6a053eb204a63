"""A head-only sweep on cached features: the seam's fixed per-trial costs, side by side.

The Apple learning-rate sweep of the cpu preset, 2 seeds (24 trials: 6 rates x final BN or none x 2 seeds), on
the frozen EfficientNet-Lite0's cached features: each trial trains only the head, a second or less of compute,
so what the tool adds per trial (start-up, handing the trial over, records, MLflow) shows. Three runs of the
same trials, the feature cache warmed first:

- the bare head: ``train_trial`` in a plain loop in this process, one torch thread; divided by the cores, the
  ideal wall time of a sweep;
- ``--backend serial``: the tool, every trial in this process;
- ``--backend local``: the tool, trials on this machine's cores.

Each tool run is repeated (``REPEATS``, in turn) and its fastest run kept.

Both tool runs track to a SQLite MLflow store and write every record, as the sweep scripts do.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from finalbn.sweep.spec import SweepSpec

# Local over serial: the bar for the default backend on such a sweep (2 cores).
TARGET_SPEED_UP = 1.7
# Each tool run this often, serial and local in turn, the faster of each kept: on the shared 2-core machine
# two runs of the same local sweep took 24.6 and 27.0 s.
REPEATS = 2


def head_spec(seeds: int) -> SweepSpec:
    from benchmarks.bench_feature_cache import plantvillage_root
    from finalbn.sweep.experiments import build_sweeps
    from finalbn.sweep.overrides import Overrides, apply

    [rates, _] = build_sweeps("learning_rate", "cpu", str(plantvillage_root()))
    return apply(rates, Overrides(axes=("data.plant=Apple",), seeds=seeds))


def bare_head(spec: SweepSpec) -> float:
    import torch

    from finalbn.data import build_manifest
    from finalbn.train import train_trial

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        configs = [trial.config for trial in spec.trials()]
        manifest = build_manifest(configs[0].data)
        # Warms the feature cache (extracted once, on the first run on this machine) and torch's kernels.
        train_trial(configs[0], manifest)
        started = time.perf_counter()
        for config in configs:
            train_trial(config, manifest)
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def tool_sweep(spec: SweepSpec, backend_name: str, out: Path) -> float:
    from finalbn.launch import BackendOptions, build_backend
    from finalbn.records.folders import MLFLOW_ARTIFACTS
    from finalbn.sweep import SweepOptions, run_sweep
    from finalbn.tracking import MlflowTracker, default_tracking_uri

    started = time.perf_counter()
    tracker = MlflowTracker(default_tracking_uri(out), artifact_root=out / MLFLOW_ARTIFACTS)
    backend = build_backend(backend_name, BackendOptions(out=out))
    report = run_sweep(spec, SweepOptions(out=out), backend, tracker)
    assert not report.failed and len(report.finished) == spec.size(), report
    return time.perf_counter() - started


def run(quick: bool = False) -> list[dict[str, object]]:
    spec = head_spec(seeds=1 if quick else 2)
    cores = os.cpu_count() or 1
    bare = bare_head(spec)
    runs: dict[str, list[float]] = {"serial": [], "local": []}
    for _ in range(1 if quick else REPEATS):
        for name, times in runs.items():
            with tempfile.TemporaryDirectory() as folder:
                times.append(tool_sweep(spec, name, Path(folder)))
    seconds = {name: min(times) for name, times in runs.items()}
    ideal = bare / cores
    what = f"head-only sweep, {spec.size()} trials on cached EfficientNet-Lite0 features (Apple, cpu preset)"
    return [
        {
            "benchmark": what,
            "baseline": f"--backend serial {seconds['serial']:.1f} s",
            "this tool": f"--backend local {seconds['local']:.1f} s on {cores} cores",
            "ratio": seconds["serial"] / seconds["local"],
            "target": f">= {TARGET_SPEED_UP}x faster",
        },
        {
            "benchmark": "  local against the bare head",
            "baseline": f"bare head {bare:.1f} s / {cores} cores = {ideal:.1f} s",
            "this tool": f"--backend local {seconds['local']:.1f} s",
            "ratio": seconds["local"] / ideal,
            "target": "-",
        },
    ]


if __name__ == "__main__":
    from benchmarks.table import print_table

    print_table(run())

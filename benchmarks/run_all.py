"""Every benchmark, one table: ``python benchmarks/run_all.py [--quick]``.

Ratios are measured side by side in one run on this machine; absolute times
on shared machines are noise, ratios much less so. About 27 minutes on 2 CPU
cores, 13 of them the whole cpu baselines sweep (``--quick``: smaller, noisier, ~6 minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script from anywhere: the benchmarks package sits beside finalbn/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (  # noqa: E402
    bench_baselines,
    bench_cost_model,
    bench_feature_cache,
    bench_head_sweep,
    bench_image_cache,
    bench_overhead,
)
from benchmarks.table import print_table  # noqa: E402

BENCHMARKS = (
    bench_overhead,
    bench_head_sweep,
    bench_image_cache,
    bench_feature_cache,
    bench_cost_model,
    bench_baselines,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a first look")
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    for bench in BENCHMARKS:
        t0 = time.perf_counter()
        rows += bench.run(quick=args.quick)
        print(f"{bench.__name__}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all on {_machine()}")


def _machine() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


if __name__ == "__main__":
    main()

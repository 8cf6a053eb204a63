"""The Ray paths docs/cluster.md relies on, on a real two-node cluster
(tests/fixtures_ray.py): a driver given RAY_ADDRESS runs work on both nodes, and
`ray job submit` through the dashboard's address runs an entrypoint."""

import json
import subprocess

import pytest

# A fixture is used by its name as a test's argument, which pyflakes reads as an
# unused import (F401) that each test then redefines (F811).
from fixtures_ray import RAY, ray_two_nodes  # noqa: F401

pytestmark = pytest.mark.slow

# One one-CPU task in each bundle of a STRICT_SPREAD placement group (bundles on
# distinct nodes), as Tune places each trial in a placement group. Left to the
# default scheduler, tiny tasks all run on the first leased worker: a second
# node's worker takes longer to start than the tasks take to finish.
DRIVER = """
import json
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(log_to_driver=False)
group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
ray.get(group.ready(), timeout=60)

@ray.remote(num_cpus=1)
def node_id():
    return ray.get_runtime_context().get_node_id()

bundles = [PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i) for i in range(2)]
tasks = [node_id.options(scheduling_strategy=bundle).remote() for bundle in bundles]
print(json.dumps(sorted(ray.get(tasks, timeout=60))))
"""


def test_cluster_has_two_alive_nodes_with_distinct_ids(ray_two_nodes) -> None:  # noqa: F811
    nodes = ray_two_nodes.alive_nodes()
    assert len(nodes) == 2
    assert len({node["node_id"] for node in nodes}) == 2
    assert sorted(node["is_head_node"] for node in nodes) == [False, True]
    assert all(node["resources_total"]["CPU"] == 1 for node in nodes)


def test_driver_with_ray_address_runs_tasks_on_both_nodes(ray_two_nodes) -> None:  # noqa: F811
    env = {**ray_two_nodes.env, "RAY_ADDRESS": ray_two_nodes.address}
    python = RAY.parent / "python"
    done = subprocess.run([str(python), "-c", DRIVER], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    used = json.loads(done.stdout.splitlines()[-1])
    assert used == sorted(node["node_id"] for node in ray_two_nodes.alive_nodes())


def test_ray_job_submit_runs_an_entrypoint(ray_two_nodes, tmp_path) -> None:  # noqa: F811
    # A tiny working dir: the job uploads it to the cluster, as `--working-dir .` does on a real one.
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    (working_dir / "README").write_text("uploaded as the job's working dir\n")
    command = [
        str(RAY),
        "job",
        "submit",
        "--address",
        ray_two_nodes.dashboard_url,
        "--working-dir",
        str(working_dir),
        "--",
        "python",
        "-c",
        "print(42)",
    ]
    done = subprocess.run(command, env=ray_two_nodes.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "42" in done.stdout.splitlines()


def test_a_sweep_with_backend_ray_places_trials_on_both_nodes(ray_two_nodes, tmp_path) -> None:  # noqa: F811
    """The smoke sweep, unchanged, submitted to the running cluster with --backend ray, from a terminal
    (a pseudo-terminal: rich's live display on, as a person runs it)."""
    import shlex
    import sys
    import time
    from pathlib import Path

    import pexpect
    import polars as pl

    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(repo / "sweeps" / "imbalance_ratio.py"), "--preset", "smoke"]
    command += ["--backend", "ray", "--address", ray_two_nodes.address, "--out", str(tmp_path), "--no-tracking"]
    started = time.perf_counter()
    shown, status = pexpect.run(
        " ".join(map(shlex.quote, command)),
        timeout=600,
        withexitstatus=True,
        env=ray_two_nodes.env,
        cwd=str(tmp_path),
        encoding="utf-8",
        dimensions=(40, 120),
    )
    seconds = time.perf_counter() - started
    assert status == 0, shown[-3000:]
    assert "[8/8]" in shown and "Traceback" not in shown
    trials = pl.read_parquet(tmp_path / "imbalance_ratio-smoke" / "trials.parquet")
    assert trials.height == 8
    workers = [
        json.loads((tmp_path / "imbalance_ratio-smoke" / "trials" / t / "summary.json").read_text())["worker"]
        for t in trials["trial_id"]
    ]
    seen = {w["node_id"] for w in workers}
    alive = {node["node_id"] for node in ray_two_nodes.alive_nodes()}
    assert seen == alive and len(seen) == 2, (seen, alive)
    print(f"\nsmoke sweep (8 trials) on the two-node Ray cluster: {seconds:.1f} s wall")

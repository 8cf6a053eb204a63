"""The local Slurm cluster (cluster/local_slurm.sh) really schedules jobs, arrays and requeues."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest
import submitit
from fixtures_slurm import SlurmCluster, slurm_cluster  # noqa: F401 (a fixture: pytest finds it by name)

pytestmark = pytest.mark.slow

# cloudpickle pickles functions of importable modules by reference, and the job's Python
# cannot import this test module (tests/ is on the test run's sys.path, not the job's).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wait_until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def _forced_state(job: submitit.Job) -> str:
    # job.state only re-reads sacct every few seconds to minutes; force a fresh read.
    return job.watcher.get_state(job.job_id, mode="force")


def _executor(folder: Path, cluster: SlurmCluster) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=cluster.partition, timeout_min=10, cpus_per_task=1)
    return executor


def _square(x: int) -> int:
    return x * x


class _Preemptible(submitit.helpers.Checkpointable):
    """Marks its first run, then works until preempted; a requeued run reports its restart count."""

    def __call__(self, marker: str) -> str:
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if restarts == "0":
            Path(marker).write_text(os.environ["SLURM_JOB_ID"])
            time.sleep(600)  # the "work"; the test preempts it long before it ends
        return restarts


def test_sinfo_shows_one_idle_node_in_debug(slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    def nodes() -> list[list[str]]:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-p", slurm_cluster.partition, "-o", "%N %T %P"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    # Jobs of earlier tests may still be completing on the node.
    _wait_until("the node to be idle", lambda: [row[1] for row in nodes()] == ["idle"], 60)
    [(_, state, partition)] = nodes()
    assert (state, partition) == ("idle", "debug*")  # the star: the default partition
    assert slurm_cluster.max_array_size == 1001


def test_submitit_array_results_and_sacct_state(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    jobs = _executor(tmp_path, slurm_cluster).map_array(_square, [1, 2, 3])
    try:
        _wait_until("the array's results", lambda: all(job.done() for job in jobs), 180)
        assert [job.result() for job in jobs] == [1, 4, 9]
        # COMPLETED comes from sacct: proof that accounting answers, which submitit relies on.
        _wait_until("sacct to report COMPLETED", lambda: all(_forced_state(j) == "COMPLETED" for j in jobs), 60)
        assert [job.state for job in jobs] == ["COMPLETED"] * 3
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)


def test_checkpointable_job_is_requeued_after_preemption(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    marker = tmp_path / "first_run_started"
    job = _executor(tmp_path / "jobs", slurm_cluster).submit(_Preemptible(), str(marker))
    try:
        _wait_until("the first run's marker", lambda: marker.exists() or job.done(), 120)
        assert marker.exists(), f"the job ended before preemption: {job.stderr()}"
        job._interrupt()  # what Slurm sends on preemption: SIGTERM, then USR2
        # cred_expire=10 in slurm.conf keeps the requeued run's wait short (~30 s, not ~160 s).
        _wait_until("the requeued run to finish", job.done, 300)
        assert job.result() == "1"
        _wait_until("sacct to report COMPLETED", lambda: _forced_state(job) == "COMPLETED", 60)
    finally:
        if not job.done():
            job.cancel(check=False)

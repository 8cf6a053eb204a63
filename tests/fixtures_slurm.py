"""A real single-node Slurm cluster (with accounting) for tests, from cluster/local_slurm.sh.

Use it with ``from fixtures_slurm import slurm_cluster`` at a test module's top. Skips
where Slurm is not installed, except where FINALBN_REQUIRE_SLURM=1 (CI): there a missing
Slurm fails the run instead of quietly skipping the cluster tests. A cluster that was
already up is used and left up; one this fixture started is stopped at the session's end.
"""

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_slurm.sh"
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 120


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path
    partition: str
    max_array_size: int
    env: dict[str, str]


def _script(command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _installed(name: str) -> bool:
    # The daemons live in sbin, which a non-root PATH may lack.
    return (shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")) is not None


def _client_env() -> dict[str, str]:
    env = {}
    for line in _script("env").stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            env[key] = value
    return env


def _max_array_size() -> int:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True)
    for line in shown.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            return int(value.strip())
    raise AssertionError("scontrol show config has no MaxArraySize")


def _stop() -> None:
    done = _script("stop", timeout=STOP_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"cluster/local_slurm.sh stop failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = [name for name in ("slurmctld", "sbatch") if not _installed(name)]
    if missing:
        problem = f"Slurm is not installed ({', '.join(missing)} not found): run `bash cluster/local_slurm.sh install`"
        if os.environ.get("FINALBN_REQUIRE_SLURM") == "1":
            pytest.fail(problem)
        pytest.skip(problem)

    started_here = _script("status").returncode != 0
    if started_here:
        try:
            done = _script("start", timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            _stop()
            pytest.fail(f"cluster/local_slurm.sh start took over {START_TIMEOUT_S}s:\n{exc.stderr or ''}")
        if done.returncode != 0:
            _stop()  # never leave half a cluster behind
            pytest.fail(f"cluster/local_slurm.sh start failed:\n{done.stdout}{done.stderr}")

    env = _client_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield SlurmCluster(conf=Path(env["SLURM_CONF"]), partition="debug", max_array_size=_max_array_size(), env=env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if started_here:
            _stop()

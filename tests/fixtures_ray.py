"""``ray_two_nodes``: a real two-node Ray cluster on 127.0.0.1 for tests.

Use it with ``from fixtures_ray import ray_two_nodes`` at the top of a test
module. The head and the worker node are separate raylets of one CPU each, so
work that needs two CPUs at once must use both nodes; they share the machine's
IP, so tell them apart by node id. Clients (drivers, ``ray job submit``) run
with ``cluster.env``; an in-process driver sets ``cluster.client_env`` first
(e.g. with ``monkeypatch.setenv``) and connects to ``cluster.address``.

Module scope, not session scope: each importing module registers its own copy
of the fixture, and session-scoped copies would all stay up until the session
ends, i.e. several clusters on the same two cores.

Teardown never uses ``ray stop``, which kills every Ray process on the machine
(other test runs included): it kills only this cluster's processes, those whose
command line names its private temp dir or its GCS address, plus their
descendants (Ray's agents and workers rename themselves), and checks that they
are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

RAY = Path(sys.executable).parent / "ray"
START_TIMEOUT_S = 120
# Per signal and group of processes (see _stop).
STOP_GRACE_S = 10
# Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists (any
# earlier ray.init may create it); nodes and clients must all agree on it.
CLIENT_ENV = {"RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class RayTwoNodes:
    address: str
    """GCS address, "127.0.0.1:PORT": ``ray.init(address=...)``, RAY_ADDRESS, ``--address``."""
    dashboard_url: str
    """"http://127.0.0.1:PORT": the Jobs API (``ray job submit --address``) and the REST API."""
    client_env: dict[str, str]
    """The variables every client process of this cluster needs."""
    temp_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """The whole environment for a client subprocess."""
        return _node_env(self.client_env)

    def alive_nodes(self) -> list[dict]:
        """The ALIVE nodes as the dashboard's state API lists them (node_id, is_head_node, resources_total...)."""
        with urllib.request.urlopen(f"{self.dashboard_url}/api/v0/nodes?detail=false", timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return [node for node in nodes if node["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def ray_two_nodes() -> Iterator[RayTwoNodes]:
    # Under /tmp, not pytest's tmp_path: Ray's Unix sockets live below this
    # folder, and a socket path may not exceed 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray2n-", dir="/tmp"))
    ports = _Ports(*_free_ports(5))
    # Each process of this cluster names its temp dir or its GCS address in its
    # command line (Ray's client server names only the latter).
    markers = (f"{temp_dir}/", f":{ports.gcs} ")
    try:
        yield _start(temp_dir, ports)
    finally:
        _stop(markers)
        shutil.rmtree(temp_dir)


class _Ports(NamedTuple):
    gcs: int
    dashboard: int
    client_server: int
    head_agent: int
    worker_agent: int


def _start(temp_dir: Path, ports: _Ports) -> RayTwoNodes:
    env = _node_env(CLIENT_ENV)
    common = ["--num-cpus=1", "--disable-usage-stats"]
    # Every port Ray would otherwise take at a fixed default (6379, 8265, 10001,
    # 52365) is chosen here, so the cluster coexists with other Ray instances.
    _ray_start(
        [
            "--head",
            f"--port={ports.gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports.dashboard}",
            f"--ray-client-server-port={ports.client_server}",
            f"--dashboard-agent-listen-port={ports.head_agent}",
            f"--temp-dir={temp_dir}",
            *common,
        ],
        env,
    )
    # The second node takes the head's temp dir from the GCS; its agent needs
    # a port of its own since both listen on the same host.
    _ray_start(
        [f"--address=127.0.0.1:{ports.gcs}", f"--dashboard-agent-listen-port={ports.worker_agent}", *common], env
    )
    cluster = RayTwoNodes(
        address=f"127.0.0.1:{ports.gcs}",
        dashboard_url=f"http://127.0.0.1:{ports.dashboard}",
        client_env=dict(CLIENT_ENV),
        temp_dir=temp_dir,
    )
    _wait_until_ready(cluster)
    return cluster


def _node_env(client_env: dict[str, str]) -> dict[str, str]:
    # This venv's bin first: a job's entrypoint `python` resolves through the
    # nodes' PATH, and must be the interpreter that has ray and finalbn.
    path = f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **client_env}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        # All bound at once, so the kernel hands out distinct ports.
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([str(RAY), "start", *args], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _wait_until_ready(cluster: RayTwoNodes) -> None:
    """Until the dashboard lists two ALIVE nodes and its Jobs API answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            alive = cluster.alive_nodes()
            with urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=5):
                pass
        except (OSError, ValueError, KeyError) as error:
            last = repr(error)
        else:
            if len(alive) == 2:
                return
            last = f"{len(alive)} alive node(s)"
        time.sleep(0.25)
    raise RuntimeError(f"two-node Ray cluster in {cluster.temp_dir} not ready after {START_TIMEOUT_S} s: {last}")


def _stop(markers: tuple[str, ...]) -> None:
    """Kill the processes named by ``markers`` (and their descendants); raise if any survive.

    In ``ray stop``'s order: raylets first (their agents and workers exit with
    them), GCS last (raylets and agents wait on it while they shut down), so
    SIGTERM ends the cluster in seconds rather than timing out into SIGKILL.
    """
    # A second look catches processes started while the first ones were stopping.
    for _ in range(2):
        processes = _cluster_processes(markers)
        raylets = {pid: start for pid, (start, cmdline) in processes.items() if "/raylet/raylet " in cmdline}
        gcs = {pid: start for pid, (start, cmdline) in processes.items() if "/gcs/gcs_server " in cmdline}
        others = {pid: start for pid, (start, _) in processes.items() if pid not in raylets and pid not in gcs}
        for group in (raylets, others, gcs):
            if survivors := _kill(group):
                raise RuntimeError(f"Ray processes {sorted(survivors)} ({markers}) still running after SIGKILL")
    if left := _cluster_processes(markers):
        raise RuntimeError(f"Ray processes {sorted(left)} ({markers}) keep appearing")


def _kill(targets: dict[int, int]) -> dict[int, int]:
    """SIGTERM, then SIGKILL, the processes ``targets`` (pid -> start time); those still running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start_time in targets.items():
            if _same_process(pid, start_time):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_same_process(pid, start) for pid, start in targets.items()):
            time.sleep(0.1)
        targets = {pid: start for pid, start in targets.items() if _same_process(pid, start)}
        if not targets:
            break
    return targets


def _cluster_processes(markers: tuple[str, ...]) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every process whose command line contains one of
    ``markers``, and of their descendants (Ray's agents and workers rename themselves)."""
    # Never this process, whatever its command line says.
    table = {pid: info for pid in _pids() if pid != os.getpid() and (info := _process_info(pid)) is not None}
    found = {pid for pid, (_, _, cmdline) in table.items() if any(marker in cmdline for marker in markers)}
    grew = True
    while grew:
        children = {pid for pid, (parent, _, _) in table.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return {pid: table[pid][1:] for pid in found}


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _process_info(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, command line) of a live process; None for a gone or zombie one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19]), cmdline.replace(b"\0", b" ").decode(errors="replace") + " "


def _same_process(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is still the process that had ``start_time`` (not a reused pid)."""
    info = _process_info(pid)
    return info is not None and info[1] == start_time

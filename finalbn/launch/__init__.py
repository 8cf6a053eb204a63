"""Backends that run a sweep's pending trials, registered by name.

Each entry builds its backend (a ``finalbn.launch.base.Backend``) from its
registered name and typed ``BackendOptions``: serial runs trials in this
process, local in warm worker processes on this machine (finalbn.launch.pool),
ray through Ray Tune (a running cluster, or a private Ray on this machine), slurm submits job arrays and
returns (see finalbn.launch.slurm). A backend knows itself only
by the name it was registered under. Backend modules are imported when chosen,
so naming one costs no import of the others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finalbn.launch.base import Backend
from finalbn.registry import Registry
from finalbn.sweep.options import RayOptions

if TYPE_CHECKING:
    from finalbn.launch.slurm import SlurmOptions


@dataclass(frozen=True)
class BackendOptions:
    """What building a backend reads; each backend takes its own part."""

    # The results folder: a Slurm batch script must be able to hold its path.
    out: Path = Path("results")
    ray: RayOptions = RayOptions()
    # None: SlurmOptions' defaults, made when slurm is chosen (its module brings submitit).
    slurm: SlurmOptions | None = None


BACKENDS: Registry[Callable[[str, BackendOptions], Backend]] = Registry("backend")


def build_backend(name: str, options: BackendOptions) -> Backend:
    return BACKENDS.get(name)(name, options)


@BACKENDS.register("serial")
def serial_backend(name: str, options: BackendOptions) -> Backend:
    """This process, one trial after another: no Ray, breakpoints work."""
    from finalbn.launch.serial import SerialBackend

    return SerialBackend(name)


@BACKENDS.register("local")
def local_backend(name: str, options: BackendOptions) -> Backend:
    """This machine's cores: warm worker processes, each training trial after trial."""
    from finalbn.launch.pool import PoolBackend

    return PoolBackend(name)


@BACKENDS.register("ray")
def ray_backend(name: str, options: BackendOptions) -> Backend:
    """Ray Tune: on the running cluster at --address (else RAY_ADDRESS), or on a private Ray started on this
    machine for the sweep when neither names one."""
    address = options.ray.resolved()
    if address:
        from finalbn.launch.ray_tune import RayTuneBackend

        return RayTuneBackend(name, address)
    with _loopback_ray():
        from finalbn.launch.ray_tune import RayTuneBackend

    return RayTuneBackend(name)


@contextlib.contextmanager
def _loopback_ray() -> Iterator[None]:
    """Ray binds its servers (GCS, raylet, workers, agents) to every interface unless the node's IP is
    loopback, and takes the loopback IP only where it thinks clusters are unsupported: this switch, read
    once, when ray is first imported (a sweep command imports it here). A private one-sweep Ray then
    listens on 127.0.0.1 only; its token authentication stays on (README: Security). Unset again after:
    inherited by a later ``ray start`` (a cluster's node), the switch would refuse to start it."""
    switch = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    given = switch in os.environ
    os.environ.setdefault(switch, "0")
    try:
        yield
    finally:
        if not given:
            del os.environ[switch]


@BACKENDS.register("slurm")
def slurm_backend(name: str, options: BackendOptions) -> Backend:
    """Slurm job arrays through submitit, from a login node."""
    from finalbn.launch.slurm import SlurmBackend, SlurmOptions, check_results

    # Here, not at submission: a dry run refuses what the sbatch script could not hold.
    check_results(options.out)
    return SlurmBackend(name, options.slurm or SlurmOptions())


__all__ = ["BACKENDS", "Backend", "BackendOptions", "build_backend"]

"""Backends that run a sweep's pending trials, registered by name.

Each entry builds its backend (a ``finalbn.launch.base.Backend``) from its
registered name and the parsed command line: serial runs trials in this
process, local and ray through Ray Tune while the command waits, slurm submits
job arrays and returns (see finalbn.launch.slurm). A backend knows itself only
by the name it was registered under. Backend modules are imported when chosen,
so naming one costs no import of the others.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator

from finalbn.errors import UserError
from finalbn.launch.base import Backend
from finalbn.registry import Registry

BACKENDS: Registry[Callable[[str, argparse.Namespace], Backend]] = Registry("backend")


def build_backend(name: str, args: argparse.Namespace) -> Backend:
    return BACKENDS.get(name)(name, args)


@BACKENDS.register("serial")
def serial_backend(name: str, args: argparse.Namespace) -> Backend:
    """This process, one trial after another: no Ray, breakpoints work."""
    from finalbn.launch.serial import SerialBackend

    return SerialBackend(name)


@BACKENDS.register("local")
def local_backend(name: str, args: argparse.Namespace) -> Backend:
    """A private Ray instance on this machine, started for the sweep (RAY_ADDRESS is ignored)."""
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
    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    given = name in os.environ
    os.environ.setdefault(name, "0")
    try:
        yield
    finally:
        if not given:
            del os.environ[name]


@BACKENDS.register("ray")
def ray_backend(name: str, args: argparse.Namespace) -> Backend:
    """An existing Ray cluster: --address, else RAY_ADDRESS."""
    from finalbn.launch.ray_tune import RayTuneBackend

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UserError(
            "--backend ray needs a running Ray cluster: pass --address HOST:PORT (or set RAY_ADDRESS); "
            "use --backend local to start one on this machine"
        )
    return RayTuneBackend(name, address)


@BACKENDS.register("slurm")
def slurm_backend(name: str, args: argparse.Namespace) -> Backend:
    """Slurm job arrays through submitit, from a login node."""
    from finalbn.launch.slurm import SlurmBackend, SlurmOptions, check_results, parse_extra, parse_time

    # Here, not at submission: a dry run refuses what the sbatch script could not hold.
    check_results(args.out)
    return SlurmBackend(
        name,
        SlurmOptions(
            partition=args.partition,
            time_minutes=parse_time(args.time),
            account=args.account,
            qos=args.qos,
            array_parallelism=args.array_parallelism,
            trials_per_task=args.trials_per_task,
            extra=parse_extra(args.sbatch),
            wait=args.wait,
        ),
    )


__all__ = ["BACKENDS", "Backend", "build_backend"]

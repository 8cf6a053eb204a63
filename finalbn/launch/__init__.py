"""Backends that run a sweep's pending trials, registered by name.

Each entry builds its backend from the parsed command line: "local" and "ray"
run trials through Ray Tune while the command waits; "slurm" submits a job
array and returns (see finalbn.launch.slurm).
"""

from __future__ import annotations

import argparse
import os

from finalbn.errors import UserError
from finalbn.launch.ray_tune import RayTuneBackend
from finalbn.registry import Registry

BACKENDS: Registry = Registry("backend")


@BACKENDS.register("local")
def local_backend(args: argparse.Namespace) -> object:
    """A private Ray instance on this machine, started for the sweep (RAY_ADDRESS is ignored)."""
    return RayTuneBackend("local")


@BACKENDS.register("ray")
def ray_backend(args: argparse.Namespace) -> object:
    """An existing Ray cluster: --address, else RAY_ADDRESS."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UserError(
            "--backend ray needs a running Ray cluster: pass --address HOST:PORT (or set RAY_ADDRESS); "
            "use --backend local to start one on this machine"
        )
    return RayTuneBackend(address)


@BACKENDS.register("slurm")
def slurm_backend(args: argparse.Namespace) -> object:
    from finalbn.launch.slurm import SlurmBackend, SlurmOptions, check_value, parse_extra, parse_time

    def checked(flag: str, value: str | None) -> str | None:
        return None if value is None else check_value(f"--{flag}", value)

    return SlurmBackend(
        SlurmOptions(
            partition=checked("partition", args.partition),
            time_minutes=parse_time(args.time),
            account=checked("account", args.account),
            qos=checked("qos", args.qos),
            array_parallelism=args.array_parallelism,
            trials_per_task=args.trials_per_task,
            extra=parse_extra(args.sbatch),
            wait=args.wait,
        )
    )


__all__ = ["BACKENDS", "RayTuneBackend"]

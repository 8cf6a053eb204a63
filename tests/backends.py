"""Every backend the tests run a sweep on, built here and nowhere else: when a backend's constructor
changes, this is the one file to follow it.

Backend-agnostic properties (resume, retries, damaged records, tracking, tables) run on ``serial()``,
in the test's own process; ``local()`` is the default backend as people run it (warm worker processes);
``ray()`` (real Ray Tune, a private Ray on this machine unless given a cluster's address) is for what only
Ray shows.
"""

from __future__ import annotations

import typing

from finalbn.launch.base import Backend
from finalbn.launch.serial import SerialBackend

if typing.TYPE_CHECKING:
    from finalbn.launch.slurm import SlurmOptions


def serial() -> Backend:
    """``--backend serial``: the trials one after another in this process."""
    return SerialBackend("serial")


def local() -> Backend:
    """``--backend local``: warm worker processes on this machine."""
    from finalbn.launch.pool import PoolBackend

    return PoolBackend("local")


def ray(address: str | None = None) -> Backend:
    """``--backend ray [--address ADDRESS]``: Ray Tune on a running cluster, or on a private Ray (127.0.0.1)."""
    from finalbn.launch import BackendOptions, build_backend
    from finalbn.sweep.options import RayOptions

    return build_backend("ray", BackendOptions(ray=RayOptions(address=address)))


def slurm(options: SlurmOptions) -> Backend:
    """``--backend slurm``: a Slurm array per submission."""
    from finalbn.launch.slurm import SlurmBackend

    return SlurmBackend("slurm", options)


class _CrashingSerial(SerialBackend):
    """Fails as Ray Tune did in a terminal (issue 19): as it starts, before any trial ran."""

    def run(self, *args: object, **kwargs: object) -> typing.NoReturn:
        raise TypeError("cannot pickle '_thread.RLock' object")


def crashing_serial() -> Backend:
    """The serial backend, but it raises as it starts, before any trial runs."""
    return _CrashingSerial("serial")

"""Backends that run a sweep's pending trials: one seam, one registry."""

from finalbn.launch.ray_tune import RayTuneBackend
from finalbn.registry import Registry

BACKENDS: Registry[type] = Registry("backend")
# "local": Ray Tune on this machine, a private Ray instance started for the sweep.
BACKENDS.register("local")(RayTuneBackend)

__all__ = ["BACKENDS", "RayTuneBackend"]

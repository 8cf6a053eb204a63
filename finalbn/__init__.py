"""finalbn: ablation sweeps of a BatchNorm layer over the logits ("final BN") on imbalanced data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("finalbn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

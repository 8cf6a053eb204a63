"""Data: sources of candidate images, the grouped seeded split protocol, and decoding.

``build_manifest(cfg)`` decides which file goes to which split;
``load_split_tensors(manifest, cfg)`` turns it into uint8 tensors.
"""

from finalbn.data.manifest import Manifest
from finalbn.data.sources import SOURCES, DataSource, leaf_id
from finalbn.data.splits import build_manifest
from finalbn.data.tensors import SplitTensors, load_split_tensors

__all__ = [
    "SOURCES",
    "DataSource",
    "Manifest",
    "SplitTensors",
    "build_manifest",
    "leaf_id",
    "load_split_tensors",
]

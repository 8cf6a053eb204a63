"""The thesis' experiments as sweep declarations: one builder per table or figure.

``build_sweeps(experiment, preset, data)`` returns the sweeps that reproduce one
experiment at one scale:

* ``paper``: the thesis protocol (chapter 4.3) exactly; ``data`` is the
  PlantVillage root (the MNIST experiment: the folder holding ``MNIST/raw``)
  and a GPU is expected.
* ``cpu``: the thesis protocol exactly (three plants, 1000+10 / 150+7 /
  150+150, 224 px, 10 epochs, batch 64) on a frozen ImageNet EfficientNet-Lite0
  whose features are computed once per image and cached, so only the head
  (± final BN) trains: the part of each paper grid a frozen trunk can run, on
  2 CPU cores. PlantVillage experiments only; ``data`` is the root.
* ``laptop``: the same design shrunk to minutes on 2 CPU cores: fewer axis
  values, fewer seeds, the simple CNN trained from scratch. Without ``data`` it
  runs on the embedded MNIST subset (3 vs 8); with it, on that data at small size.
* ``smoke``: the smallest grids (at least 8 trials, 2 epochs) on the embedded
  MNIST subset, for tests.

Builders only declare: they read no files, so a dry run costs nothing. The
declarations are the one list of the experiments: each has its script
sweeps/<name>.py, whose help and the README's grid table are checked against
them (tests/test_experiment_docs.py). ``common`` holds the registry and what
every builder shares; ``thesis`` the PlantVillage grids, ``mnist`` the MNIST
tables, ``baselines`` the comparison with the literature.
"""

from finalbn.sweep.experiments.baselines import RATIO_METHODS, RATIO_MINORITY
from finalbn.sweep.experiments.common import (
    CPU_TRUNK,
    EXPERIMENTS,
    FASTAI_DEFAULT_LR,
    PLANTS,
    PRESETS,
    SMALL_PLANTVILLAGE,
    SMOKE_DATA,
    SMOKE_TRAIN,
    Builder,
    ClassFolders,
    Data,
    build_sweeps,
)
from finalbn.sweep.experiments.mnist import FULL_MNIST_DATA, MNIST_SETTINGS, TABLE_4_8_ROWS, _row_label
from finalbn.sweep.experiments.thesis import CPU_FACTORS, CPU_MINORITY, FACTORS, LAPTOP_MINORITY, LEARNING_RATES

__all__ = [
    "CPU_FACTORS",
    "CPU_MINORITY",
    "CPU_TRUNK",
    "EXPERIMENTS",
    "FACTORS",
    "FASTAI_DEFAULT_LR",
    "FULL_MNIST_DATA",
    "LAPTOP_MINORITY",
    "LEARNING_RATES",
    "MNIST_SETTINGS",
    "PLANTS",
    "PRESETS",
    "RATIO_METHODS",
    "RATIO_MINORITY",
    "SMALL_PLANTVILLAGE",
    "SMOKE_DATA",
    "SMOKE_TRAIN",
    "TABLE_4_8_ROWS",
    "Builder",
    "ClassFolders",
    "Data",
    "_row_label",
    "build_sweeps",
]

"""One trial: ``train_trial(config, manifest) -> TrialResult``, and the pieces it is made of.

``loop`` (the epoch loop and evaluation), ``recipe`` (loss, optimizer,
schedule, DA, MX), ``features`` (what the network is fed, and the
frozen-backbone feature cache), ``checkpoint`` (resumable state). No module
here imports the command line: ``python -m finalbn.train`` goes through
``__main__``.
"""

from finalbn.train.checkpoint import CHECKPOINT_FORMAT, EpochRow, checkpoint_epoch
from finalbn.train.features import Inputs, Normalizer, extract_features, uses_feature_cache
from finalbn.train.loop import EpochCallback, TrialResult, predict, resolve_device, train_trial
from finalbn.train.recipe import (
    augment,
    class_weights,
    make_criterion,
    make_optimizer,
    make_scheduler,
    mixup,
    steps_per_epoch,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochCallback",
    "EpochRow",
    "Inputs",
    "Normalizer",
    "TrialResult",
    "augment",
    "checkpoint_epoch",
    "class_weights",
    "extract_features",
    "make_criterion",
    "make_optimizer",
    "make_scheduler",
    "mixup",
    "predict",
    "resolve_device",
    "steps_per_epoch",
    "train_trial",
    "uses_feature_cache",
]

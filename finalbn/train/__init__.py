"""One trial: ``train_trial(config, manifest) -> TrialResult``, and the pieces it is made of.

``loop`` (the epoch loop and evaluation), ``recipe`` (loss, optimizer,
schedule, DA, MX), ``features`` (what the network is fed, and the
frozen-backbone feature cache), ``checkpoint`` (resumable state). No module
here imports the command line: ``python -m finalbn.train`` goes through
``__main__``.

Names load on first use (PEP 562): Python imports this package before
running ``__main__``, and ``python -m finalbn.train --help`` must not wait
for torch first.
"""

from finalbn.lazy import lazy_exports

_EXPORTS = {
    "CHECKPOINT_FORMAT": "finalbn.train.checkpoint",
    "EpochRow": "finalbn.train.checkpoint",
    "checkpoint_epoch": "finalbn.train.checkpoint",
    "Inputs": "finalbn.train.features",
    "Normalizer": "finalbn.train.features",
    "PhaseCallback": "finalbn.train.features",
    "extract_features": "finalbn.train.features",
    "uses_feature_cache": "finalbn.train.features",
    "EpochCallback": "finalbn.train.loop",
    "TrialResult": "finalbn.train.loop",
    "predict": "finalbn.train.loop",
    "resolve_device": "finalbn.train.loop",
    "train_trial": "finalbn.train.loop",
    "augment": "finalbn.train.recipe",
    "class_weights": "finalbn.train.recipe",
    "make_criterion": "finalbn.train.recipe",
    "make_optimizer": "finalbn.train.recipe",
    "make_scheduler": "finalbn.train.recipe",
    "mixup": "finalbn.train.recipe",
    "steps_per_epoch": "finalbn.train.recipe",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)

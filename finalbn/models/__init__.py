"""Backbones and heads registered by name, assembled into a FinalBNNet.

A torchvision backbone given in_channels != 3 gets a first conv for that many
channels; pretrained RGB kernels are adapted to it (summed for one channel).
"""

from finalbn.models.backbones import BACKBONES, POOLS, BackboneSpec
from finalbn.models.heads import FINAL_NORMS, HEADS
from finalbn.models.net import UNFREEZE_MODES, FinalBNNet, create_model, without_final_norm
from finalbn.models.weights import check_weights, prefetch_weights

__all__ = [
    "BACKBONES",
    "FINAL_NORMS",
    "HEADS",
    "POOLS",
    "UNFREEZE_MODES",
    "BackboneSpec",
    "FinalBNNet",
    "check_weights",
    "create_model",
    "prefetch_weights",
    "without_final_norm",
]

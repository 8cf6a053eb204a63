"""Heads ([N, D] features -> logits) and what sits on the logits, registered by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from finalbn.config import ModelConfig
from finalbn.registry import Registry

# (feature dimension D, number of classes, config) -> head
HeadBuilder = Callable[[int, int, ModelConfig], nn.Module]
# (number of classes, config) -> module applied to the logits
FinalNormBuilder = Callable[[int, ModelConfig], nn.Module]

HEADS: Registry[HeadBuilder] = Registry("head")
FINAL_NORMS: Registry[FinalNormBuilder] = Registry("final_norm")


@HEADS.register("thesis")
def thesis_head(feature_dim: int, num_classes: int, cfg: ModelConfig) -> nn.Module:
    """fastai v1's create_head (ps=0.5, one hidden layer of 512), as the thesis used it."""
    head = nn.Sequential(
        nn.BatchNorm1d(feature_dim),
        nn.Dropout(0.25),
        nn.Linear(feature_dim, 512),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes, bias=cfg.final_bias),
    )
    # fastai v1's create_cnn re-initialises the head's linear layers this way
    # (kaiming normal weights, zero biases) and leaves its BN layers alone.
    for module in head:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return head


@HEADS.register("linear")
def linear_head(feature_dim: int, num_classes: int, cfg: ModelConfig) -> nn.Module:
    """One linear layer: the thesis' simple CNN and 128-unit network end this way."""
    return nn.Linear(feature_dim, num_classes, bias=cfg.final_bias)


@FINAL_NORMS.register("bn")
def final_bn(num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The layer under study: BatchNorm1d over the logits."""
    return nn.BatchNorm1d(num_classes, momentum=cfg.final_bn_momentum)


@FINAL_NORMS.register("selu")
def final_selu(num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The thesis' additional experiment 4.4.1: SELU in place of the final BN."""
    return nn.SELU()


@FINAL_NORMS.register("none")
def no_final_norm(num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The baseline: logits go to the output activation untouched."""
    return nn.Identity()

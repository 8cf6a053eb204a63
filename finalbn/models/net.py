"""The network under study: trunk, head, and the final norm on the logits.

Trunk and head are separate modules so the final-BN ablation touches only the
head, and so a frozen trunk's pooled features can be computed once and cached.
"""

from __future__ import annotations

import copy
import logging
import typing

import torch
from torch import nn

from finalbn.config import ModelConfig, Unfreeze
from finalbn.errors import UserError
from finalbn.models.backbones import BACKBONES
from finalbn.models.heads import FINAL_NORMS, HEADS
from finalbn.models.weights import load_trunk_weights

log = logging.getLogger(__name__)

UNFREEZE_MODES: tuple[Unfreeze, ...] = typing.get_args(Unfreeze)
# fastai's bn_types, plus the type DDP training converts them to.
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class FinalBNNet(nn.Module):
    """images -> backbone -> [N, D] features -> head -> final_norm -> logits.

    ``unfreeze`` decides which backbone parameters train: "none" (all frozen,
    the backbone always in eval mode so its BN statistics never move), "bn"
    (only its BN layers, which also keep updating their statistics: fastai's
    train_bn), or "all". The head and final_norm always train.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        final_norm: nn.Module,
        feature_dim: int,
        unfreeze: Unfreeze,
    ) -> None:
        super().__init__()
        if unfreeze not in UNFREEZE_MODES:
            raise UserError(f"unknown unfreeze {unfreeze!r}: choose one of {', '.join(UNFREEZE_MODES)}")
        self.backbone = backbone
        self.head = head
        self.final_norm = final_norm
        self.feature_dim = feature_dim
        self.unfreeze = unfreeze
        for param in backbone.parameters():
            param.requires_grad_(unfreeze == "all")
        if unfreeze == "bn":
            for param in _batchnorm_parameters(backbone):
                param.requires_grad_(True)
        # Modules start in train mode; apply the freezing rule from the start.
        self.train()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        # Float32 under any autocast: the logits and the final BN over them are
        # what is studied, and bf16 keeps 8 bits of mantissa. The head is tiny.
        with torch.autocast(features.device.type, enabled=False):
            return self.final_norm(self.head(features.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; the output activation (cfg.output) is the trainer's."""
        return self.forward_head(self.forward_features(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [param for param in self.parameters() if param.requires_grad]

    def train(self, mode: bool = True) -> FinalBNNet:
        super().train(mode)
        if mode and self.unfreeze != "all":
            self.backbone.eval()
            if self.unfreeze == "bn":
                for module in self.backbone.modules():
                    if isinstance(module, _BATCHNORMS):
                        module.train()
        return self


def _batchnorm_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, _BATCHNORMS) for p in m.parameters()]


def create_model(cfg: ModelConfig, num_classes: int, in_channels: int, image_size: int) -> FinalBNNet:
    """Build the network cfg describes; random parts follow the caller's torch seed."""
    spec = BACKBONES.get(cfg.backbone)
    if cfg.first_bn and not spec.takes_first_bn:
        raise UserError(
            f"first_bn applies only to fc128 (a BN after its hidden layer), not {cfg.backbone}: "
            f"turn first_bn off or use backbone fc128"
        )
    if num_classes < 2:
        raise UserError(f"{num_classes} class(es): a classifier needs at least 2")
    if image_size < spec.min_image_size:
        raise UserError(f"image_size {image_size} is too small for {cfg.backbone}: use {spec.min_image_size} or more")
    head_name = spec.default_head if cfg.head == "auto" else cfg.head
    make_head, make_final_norm = HEADS.get(head_name), FINAL_NORMS.get(cfg.final_norm)
    if cfg.weights == "none" and cfg.unfreeze != "all":
        log.warning(
            "backbone %s has random weights (weights none) and is frozen (unfreeze %s): "
            "only the head trains; use unfreeze all to train it from scratch",
            cfg.backbone,
            cfg.unfreeze,
        )
    backbone, feature_dim = spec.build(cfg, in_channels, image_size)
    load_trunk_weights(backbone, cfg.backbone, spec, cfg.weights)
    return FinalBNNet(
        backbone,
        make_head(feature_dim, num_classes, cfg),
        make_final_norm(num_classes, cfg),
        feature_dim,
        cfg.unfreeze,
    )


def without_final_norm(model: FinalBNNet) -> FinalBNNet:
    """A copy whose logits skip the final norm (thesis Table 4.6); model is untouched."""
    stripped = copy.deepcopy(model)
    stripped.final_norm = nn.Identity()
    return stripped

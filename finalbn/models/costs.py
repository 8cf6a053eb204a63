"""What one forward pass of each registered backbone costs: the cost model's entry for every name in
finalbn.models.backbones.BACKBONES, kept beside the registry so that a new backbone gets its entry where it is
added (tests/test_registries.py fails for a registered backbone without one).

Not in backbones.py: that file is on the code fingerprint's path, and a cost assumption decides no trial's
number (this module is in provenance.OFF_PATH). finalbn.sweep.costs turns these entries into a sweep's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finalbn.errors import UserError

# Where the dry run's cost is assumed: one core of this project's 2-core CPUs, or one H100.
Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class ForwardCost:
    """Seconds per image for one forward pass, on each device. A backward pass is counted as two forwards;
    a frozen backbone skips it."""

    cpu: float
    gpu: float
    # Costed at the backbone's own input size; any other is costed at 224 px and scaled by image area.
    small_input: bool = False

    def seconds(self, device: Device) -> float:
        return self.cpu if device == "cpu" else self.gpu


# CPU numbers were measured on this project's 2-core machines at 224 px; GPU numbers are assumptions for one
# H100 with mixed precision.
FORWARD_COSTS: dict[str, ForwardCost] = {
    "resnet18": ForwardCost(cpu=0.030, gpu=0.0002),
    "resnet34": ForwardCost(cpu=0.060, gpu=0.0003),
    "vgg19": ForwardCost(cpu=0.200, gpu=0.0008),
    "vgg19_bn": ForwardCost(cpu=0.210, gpu=0.0009),
    # Frozen-trunk extraction, which its trunk runs channels-last in chunks of 8
    # (finalbn.models.efficientnet); a training forward runs ~2x slower.
    "efficientnet_lite0": ForwardCost(cpu=0.035, gpu=0.0001),
    # simple_cnn and fc128 are costed at their own input size, not 224 px.
    "simple_cnn": ForwardCost(cpu=0.0003, gpu=0.00002, small_input=True),
    "fc128": ForwardCost(cpu=0.00002, gpu=0.000005, small_input=True),
}


def forward_cost(backbone: str) -> ForwardCost:
    """The entry of a registered backbone; one without is a UserError that says where to add it."""
    try:
        return FORWARD_COSTS[backbone]
    except KeyError:
        raise UserError(
            f"backbone {backbone!r} has no cost entry, so the sweep's cost cannot be estimated: add its seconds "
            "per image per forward pass on cpu and gpu to FORWARD_COSTS in finalbn/models/costs.py"
        ) from None

"""Final BN against the imbalanced-learning literature (beyond the thesis): the baselines sweeps."""

from __future__ import annotations

from finalbn.config import TrialConfig
from finalbn.sweep.experiments.common import (
    EXPERIMENTS,
    FASTAI_DEFAULT_LR,
    PLANTS,
    Data,
    declare,
    image_base,
    laptop_seeds,
    plant_axis,
    seed_axis,
)
from finalbn.sweep.methods import METHODS, TRAINED_NAMES, baseline_contrasts, derived_arms, method_axis
from finalbn.sweep.spec import Axis, SweepSpec

# The imbalance-ratio sweep of the strongest baselines, chosen before any result: plain, the thesis' weighted
# loss, the logit-adjusted loss (the literature's principled prior correction) and final BN; with every
# post-hoc arm of plain and final_bn. Ratios 0.005-0.1 vs 1,000, Figure 4.6's range, about 2x apart.
RATIO_METHODS = ("plain", "weighted_loss", "logit_adjusted_loss", "final_bn")


RATIO_MINORITY = (5, 10, 20, 50, 100)


@EXPERIMENTS.register("baselines")
def baselines(preset: str, data: Data) -> list[SweepSpec]:
    """Final BN against the imbalanced-learning literature: every trained method of
    finalbn.sweep.methods per plant and seed; the post-hoc methods are derived arms scored from their source's
    trials. The cpu preset also runs the grid at lr 1e-3, and a second sweep over the imbalance ratio."""
    base = image_base(preset, data)
    if preset == "paper":
        # The headline sweep's backbone, so its plain, WL and final_BN trials are these' too.
        base = base.replace(model={"backbone": "vgg19_bn"})
    seeds = {"paper": 10, "cpu": 10, "laptop": laptop_seeds(base), "smoke": 2}[preset]
    # cpu: the thesis' rate (fastai's default) and TrainConfig's 1e-3, so that no verdict rests on one rate.
    rates = (Axis("train.lr", (FASTAI_DEFAULT_LR, 1e-3)),) if preset == "cpu" else ()
    axes = (*plant_axis(preset, base, small=PLANTS), *rates, method_axis(TRAINED_NAMES), seed_axis(seeds))
    text = (
        "Final BN against the standard remedies for class imbalance, at the thesis' 1% ratio per plant "
        "(10 unhealthy vs 1,000 healthy in the paper and cpu presets). Trained: "
        + "; ".join(_method_text(name) for name in TRAINED_NAMES)
        + ". Scored from those trials' saved logits, no training of their own: "
        + "; ".join(_method_text(arm.label) for arm in derived_arms(TRAINED_NAMES))
        + ". Defaults are the papers', never tuned. Each method is compared with final BN, seeds paired "
        "(a positive difference: the method beats final BN), under the balanced test set and under the training "
        "prior (the *_natural metrics). plain, weighted_loss and final_bn are the headline sweep's plain, WL "
        "and final_BN trials (same configs, same ids): run after it, they are reused, not retrained."
    )
    specs = [
        declare(
            "baselines",
            preset,
            base,
            axes,
            "beyond the thesis",
            text,
            baseline_contrasts(TRAINED_NAMES),
            derived_arms(TRAINED_NAMES),
        )
    ]
    if preset == "cpu":
        specs.append(_baselines_ratio(preset, base))
    return specs


def _baselines_ratio(preset: str, base: TrialConfig) -> SweepSpec:
    axes = (Axis("data.train_minority", RATIO_MINORITY), method_axis(RATIO_METHODS), seed_axis(5))
    # PlantVillage: Apple, as in Figure 4.6 (the base config's plant); a user's folders are one data set.
    plant = f"{base.data.plant}, " if base.data.source == "plantvillage" else ""
    text = (
        f"Minority-class test F1 of final BN and the strongest baselines ({', '.join(RATIO_METHODS)}, chosen "
        f"before any result) against the imbalance ratio: {', '.join(map(str, RATIO_MINORITY))} unhealthy vs "
        f"{base.data.train_majority} healthy ({min(RATIO_MINORITY) / base.data.train_majority:g}-"
        f"{max(RATIO_MINORITY) / base.data.train_majority:g}, Figure 4.6's range), {plant}5 seeds, with the "
        "post-hoc arms of plain and final_bn. Its 10-image trials are the baselines sweep's trials of the same "
        "plant, rate and seeds (same ids): they are reused, not retrained."
    )
    return declare(
        "baselines",
        preset,
        base,
        axes,
        "beyond the thesis (Figure 4.6's ratios)",
        text,
        baseline_contrasts(RATIO_METHODS),
        derived_arms(RATIO_METHODS),
        name="baselines_ratio",
    )


def _method_text(name: str) -> str:
    """E.g. "focal (Lin et al., ICCV 2017; gamma = 2, no alpha)"."""
    method = METHODS.get(name)
    cited = "; ".join(part for part in (method.reference, method.defaults) if part)
    return f"{name} ({cited})" if cited else name

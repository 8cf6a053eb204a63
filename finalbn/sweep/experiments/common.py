"""What every experiment shares: the registry, the presets, the data a user names, the base configs at each
preset's scale, and the axes and naming every builder uses (the presets: see finalbn.sweep.experiments)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.errors import UserError
from finalbn.registry import Registry
from finalbn.sweep.spec import FINAL_NORM, REMOVED, Axis, Contrast, Derived, SweepSpec
from finalbn.train.presets import EMBEDDED_MNIST, THESIS

PRESETS = ("smoke", "laptop", "cpu", "paper")


@dataclass(frozen=True)
class ClassFolders:
    """--source folder: a user's class-folder tree in place of PlantVillage.

    One data set, so the plant axes of the thesis do not apply; the counts of
    the protocol (train_minority and the rest) do, per class as ever.
    """

    root: str
    majority: tuple[str, ...]
    minority: tuple[str, ...]
    pool_minority: bool = False

    def data_fields(self) -> dict[str, Any]:
        return {
            "source": "folder",
            "root": absolute(self.root),
            "majority": self.majority,
            "minority": self.minority,
            "pool_minority": self.pool_minority,
        }


# What --data names: a path (PlantVillage, or MNIST for the mnist experiment),
# a class-folder tree, or nothing (the embedded MNIST subset).
Data = str | ClassFolders | None


# (preset, data) -> the experiment's sweeps.
Builder = Callable[[str, Data], list[SweepSpec]]


EXPERIMENTS: Registry[Builder] = Registry("experiment")


# The thesis' three plants: the only ones with enough images for a 1% minority.
PLANTS = ("Apple", "Pepper", "Tomato")


# The peak learning rate of the thesis' runs. fastai v1's fit_one_cycle(learn,
# cyc_len, max_lr=defaults.lr) (fastai/train.py:15) falls back on
# `defaults.lr = slice(3e-3)` (fastai/basic_train.py:15), and Learner.lr_range
# turns a slice with no start into [3e-4, ..., 3e-3]: the head, the last layer
# group, peaks at 3e-3 (a frozen body trains nothing). The thesis states no rate,
# so it most likely ran that default rather than TrainConfig's 1e-3. (Unfrozen
# paper trials train their body at 3e-3 too, where fastai gave it 3e-4: one rate
# per TrainConfig.)
FASTAI_DEFAULT_LR = 3e-3


# cpu: the paper protocol with the trunk swapped for one a CPU can afford. A
# frozen pretrained trunk fed unchanged images (unfreeze none, no DA, no MX)
# gives the same features every epoch, so finalbn.train caches them and every
# trial trains only the head: the trunk runs once per image of each split.
CPU_TRUNK = {"backbone": "efficientnet_lite0", "weights": "imagenet", "unfreeze": "none"}


# laptop on a PlantVillage root. Air-gapped CPU laptops have neither ImageNet
# weights nor the compute for a ResNet34 at 224 px, so the simple CNN trains
# from scratch at 32 px: one trial takes seconds on one core (64 px costs 4x),
# and final BN still lifts minority F1 at a 1% ratio there. Counts mirror the
# embedded-MNIST preset: 300 + 3 to train, 50 + 3 to validate, a balanced test.
SMALL_PLANTVILLAGE = TrialConfig(
    data=DataConfig(
        source="plantvillage",
        train_majority=300,
        train_minority=3,
        val_majority=50,
        val_minority=3,
        test_majority=100,
        test_minority=100,
        image_size=32,
    ),
    model=ModelConfig(backbone="simple_cnn", weights="none", unfreeze="all"),
    # 303 images at batch 32: 9 steps an epoch, 90 in all; bf16 where the CPU has it, as on MNIST.
    train=TrainConfig(epochs=10, batch_size=32, cpu_amp=True),
)


# smoke: the fewest images that still put both classes in every split, and
# 2 epochs of 2 steps each; the numbers mean nothing, the plumbing is tested.
SMOKE_DATA = {
    "train_majority": 32,
    "train_minority": 2,
    "val_majority": 8,
    "val_minority": 2,
    "test_majority": 16,
    "test_minority": 16,
}


SMOKE_TRAIN = {"epochs": 2, "batch_size": 16}


def build_sweeps(experiment: str, preset: str, data: Data) -> list[SweepSpec]:
    """The sweeps of one experiment at one preset's scale."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return EXPERIMENTS.get(experiment)(preset, data)


def image_base(preset: str, data: Data) -> TrialConfig:
    """Starting config of the image experiments at a preset's scale: PlantVillage, or a user's class folders."""
    if isinstance(data, ClassFolders):
        return _image_scale(preset).replace(data=data.data_fields())
    if preset in ("paper", "cpu"):
        root = require_data(preset, data, "the PlantVillage root, the folder holding the <Plant>___<condition> folders")
        return _image_scale(preset).replace(data={"root": root})
    if preset == "smoke":
        return smoke_base(data)
    return EMBEDDED_MNIST if data is None else _image_scale(preset).replace(data={"root": absolute(data)})


def _image_scale(preset: str) -> TrialConfig:
    """The image experiments' counts, image size, model and training at a preset's scale."""
    if preset in ("paper", "cpu"):
        thesis = THESIS.replace(train={"lr": FASTAI_DEFAULT_LR})
        return thesis.replace(model=CPU_TRUNK) if preset == "cpu" else thesis
    if preset == "smoke":
        # Reached with class folders only: smoke on PlantVillage runs on the embedded subset.
        return SMALL_PLANTVILLAGE.replace(data=SMOKE_DATA, train=SMOKE_TRAIN)
    return SMALL_PLANTVILLAGE


def smoke_base(data: str | None) -> TrialConfig:
    if data is not None:
        raise UserError(
            "the smoke preset always runs on the embedded MNIST subset: drop --data, or use --preset laptop"
        )
    return EMBEDDED_MNIST.replace(data=SMOKE_DATA, train=SMOKE_TRAIN)


def require_data(preset: str, data: str | None, what: str) -> str:
    if data is None:
        raise UserError(f"the {preset} preset needs --data PATH, {what}; or use --preset laptop to run without data")
    return absolute(data)


def absolute(data: str) -> str:
    # Ray runs trials in their own working directories: a relative root would
    # point elsewhere there. absolute() reads only the current directory.
    return str(Path(data).expanduser().absolute())


def final_norm_arms() -> tuple[tuple[Contrast, ...], tuple[Derived, ...]]:
    """A model.final_norm axis over bn and none: bn vs none, and the bn trials scored with the final BN
    removed at test (their nobn_* metrics) as the derived arm "removed"."""
    return (Contrast(FINAL_NORM, "bn", "none"),), (REMOVED,)


def seed_axis(count: int) -> Axis:
    return Axis("train.seed", tuple(range(count)), role="nuisance")


def laptop_seeds(base: TrialConfig) -> int:
    # About a dozen trials: 2 seeds across three plants, 4 on one data set (a digit pair, class folders).
    return 2 if base.data.source == "plantvillage" else 4


def plant_axis(preset: str, base: TrialConfig, small: tuple[str, ...]) -> tuple[Axis, ...]:
    """The plants studied: all three in the paper, ``small`` on a laptop, none on MNIST or class folders."""
    if base.data.source != "plantvillage":
        return ()
    plants = PLANTS if preset in ("paper", "cpu") else small
    return (Axis("data.plant", plants, role="scientific" if len(plants) > 1 else "fixed"),)


def declare(
    experiment: str,
    preset: str,
    base: TrialConfig,
    axes: tuple[Axis, ...],
    reproduces: str,
    text: str,
    contrasts: tuple[Contrast, ...] = (),
    derived: tuple[Derived, ...] = (),
    analysis: str | None = None,
    name: str | None = None,
) -> SweepSpec:
    """``analysis``: the report section that reads the sweep (default: the experiment's name); ``name``:
    the sweep's (default: the analysis'); ``contrasts``: the paired comparisons, the headline first."""
    return SweepSpec(
        name=_name(name or analysis or experiment, preset, base),
        base=base,
        axes=axes,
        description=f"{text} {_scale(preset, base)}",
        reproduces=reproduces,
        experiment=experiment,
        preset=preset,
        analysis=analysis or experiment,
        contrasts=contrasts,
        derived=derived,
    )


def _name(experiment: str, preset: str, base: TrialConfig) -> str:
    # Laptop runs on the embedded subset and on given data, and any run on a
    # user's class folders, must not share an MLflow experiment or results
    # folder with the thesis' data.
    if base.data.source == "folder":
        suffix = "-folder"
    else:
        suffix = "" if preset in ("paper", "cpu") or base.data.source == "mnist" else f"-{base.data.source}"
    return f"{experiment}-{preset}{suffix}"


def _scale(preset: str, base: TrialConfig) -> str:
    """One sentence on what this preset runs, for the sweep's description."""
    d, m = base.data, base.model
    data = {
        "plantvillage": f"PlantVillage at {d.image_size} px",
        "folder": f"the class folders in {d.root} at {d.image_size} px",
        "mnist": "the embedded MNIST subset",
    }.get(d.source, "full MNIST")
    weights = "trained from scratch" if m.weights == "none" else f"{m.weights} weights, unfreeze {m.unfreeze}"
    scale = (
        f"Preset {preset}: {m.backbone} ({weights}) on {data}, "
        f"{d.train_majority} majority training images per class, {base.train.epochs} epochs, "
        f"batch {base.train.batch_size}, peak learning rate {base.train.lr:g}"
        + (
            ", bf16 autocast on a CPU that has it (train.cpu_amp; float32 on one that does not)."
            if base.train.cpu_amp
            else "."
        )
    )
    if preset == "cpu":
        scale += (
            " The thesis' trunk (ResNet34 or VGG19) is swapped for a frozen one a CPU can afford: its features are "
            "computed once per image and cached, and only the thesis head (± final BN) trains on them."
        )
    return scale

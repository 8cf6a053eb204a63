"""The thesis' experiments as sweep declarations: one builder per table or figure.

``build_sweeps(experiment, preset, data)`` returns the sweeps that reproduce one
experiment at one scale:

* ``paper``: the thesis protocol (chapter 4.3) exactly; ``data`` is the
  PlantVillage root (the MNIST experiment: the folder holding ``MNIST/raw``)
  and a GPU is expected.
* ``cpu``: the thesis protocol exactly (three plants, 1000+10 / 150+7 /
  150+150, 224 px, 10 epochs, batch 64) on a frozen ImageNet EfficientNet-Lite0
  whose features are computed once per image and cached, so only the head
  (± final BN) trains: the part of each paper grid a frozen trunk can run, on
  2 CPU cores. PlantVillage experiments only; ``data`` is the root.
* ``laptop``: the same design shrunk to minutes on 2 CPU cores: fewer axis
  values, fewer seeds, the simple CNN trained from scratch. Without ``data`` it
  runs on the embedded MNIST subset (3 vs 8); with it, on that data at small size.
* ``smoke``: the smallest grids (at least 8 trials, 2 epochs) on the embedded
  MNIST subset, for tests.

Builders only declare: they read no files, so a dry run costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.errors import UserError
from finalbn.registry import Registry
from finalbn.sweep.methods import METHODS, TRAINED_NAMES, baseline_contrasts, derived_arms, method_axis
from finalbn.sweep.spec import FINAL_NORM, HEADLINE_REMOVED, REMOVED, Axis, Contrast, Derived, SweepSpec
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
            "root": _absolute(self.root),
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
# Figure 4.6 at cpu scale: minority images vs 1,000, ratios 0.005-0.5, about
# 1.5x apart, denser than the thesis' grid on a log axis and far past its 0.1.
CPU_MINORITY = (5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500)
# Figure 4.6 at laptop scale: minority images vs 300, ratios 0.01-0.43, about
# 2.6x apart (log-spaced): three points up to the claimed 0.1 threshold and two
# past it, so the figure can show a level-off or its absence. Five points x 2
# seeds x final BN on/off = 20 trials fit the main job's 3 minutes on 2 cores
# in bf16 (TrainConfig.cpu_amp: 146 s; float32 over 4 minutes, see
# benchmarks/main_job.py); the largest draw (130 + 3 + 150 of the 500
# embedded 3s) leaves the smaller ones its subsets.
LAPTOP_MINORITY = (3, 8, 20, 50, 130)
# The factorial's factors a cached frozen trunk can run (DA, MX, UF cannot).
CPU_FACTORS = ("BN", "WL", "WD")

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

# Full MNIST pooled (train + test) has 6,313 to 7,141 images of each digit used
# here (5: 6,313; 8: 6,825; 2: 6,990; 3: 7,141). Per class: 5,000 + 50 to train
# (1%), 500 + 25 to validate (5%, near the thesis' 150 + 7) and a balanced
# 500 + 500 test; the majority's 6,000 leave room for dropped duplicates.
FULL_MNIST_DATA = {
    "train_majority": 5000,
    "train_minority": 50,
    "val_majority": 500,
    "val_minority": 25,
    "test_majority": 500,
    "test_minority": 500,
}

# Table 4.7's five settings: (label, majority digits, minority digits).
MNIST_SETTINGS = (
    ("3v8", ("8",), ("3",)),
    ("2v8", ("8",), ("2",)),
    ("3v5", ("5",), ("3",)),
    ("3v5+8", ("5", "8"), ("3",)),
    ("3+5v8", ("8",), ("3", "5")),
)

# Table 4.8's nine rows, top to bottom: (output activation, loss, first BN, final BN).
TABLE_4_8_ROWS = (
    ("sigmoid", "bce", False, False),
    ("softmax", "bce", False, False),
    ("softmax", "bce", True, False),
    ("softmax", "cce", False, False),
    ("sigmoid", "bce", False, True),
    ("softmax", "bce", False, True),
    ("softmax", "bce", True, True),
    ("softmax", "cce", False, True),
    ("softmax", "cce", True, True),
)

# The six binary factors of Tables 4.3-4.4 as (field, checked, unchecked). In
# this order, checked first, the grid's order is the thesis' Config Id: the
# Table 4.3/4.4 ids decode exactly so (31 = BN alone, 29 = BN+UF, 28 = BN+UF+WD,
# 49 = DA+MX+UF), so a trial's index within its plant is its Config Id.
FACTORS: dict[str, tuple[str, Any, Any]] = {
    "BN": ("model.final_norm", "bn", "none"),
    "WL": ("train.weighted_loss", True, False),
    "DA": ("train.augment", True, False),
    # fastai's mixup alpha and weight decay, the thesis' framework defaults.
    "MX": ("train.mixup_alpha", 0.4, 0.0),
    # Unfreeze only the pretrained backbone's BN layers (fastai's train_bn).
    "UF": ("model.unfreeze", "bn", "none"),
    "WD": ("train.weight_decay", 1e-2, 0.0),
}


def build_sweeps(experiment: str, preset: str, data: Data) -> list[SweepSpec]:
    """The sweeps of one experiment at one preset's scale."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return EXPERIMENTS.get(experiment)(preset, data)


# ------------------------------------------------------------------ builders


@EXPERIMENTS.register("imbalance_ratio")
def imbalance_ratio(preset: str, data: Data) -> list[SweepSpec]:
    base = _image_base(preset, data)
    # Minority training images: the thesis' 5, 10, ..., 100 vs 1,000 healthy
    # (ratios 0.005-0.1); laptop LAPTOP_MINORITY of 300; smoke two points.
    minority = {
        "paper": tuple(range(5, 101, 5)),
        "cpu": CPU_MINORITY,
        "laptop": LAPTOP_MINORITY,
        "smoke": (1, 4),
    }[preset]
    axes = (
        Axis("data.train_minority", minority),
        Axis("model.final_norm", ("bn", "none")),
        _unfreeze_axis(preset, base),
        _seeds(5 if preset in ("paper", "cpu") else 2),
    )
    text = (
        "Minority-class test F1 against the imbalance ratio, with and without the final BN, with the "
        "pretrained backbone frozen or fully unfrozen (Figure 4.6: ResNet34 on PlantVillage Apple, "
        "5 to 100 unhealthy vs 1,000 healthy). The thesis finds the gain largest below a ratio of 0.1, "
        "and a frozen backbone with final BN as good as an unfrozen one without it. Seeds change "
        "initialisation and batch order, not the images: smaller ratios' training sets are subsets of "
        "larger ones and every point is scored on the same test set, so comparisons are paired."
    )
    if preset == "cpu":
        text += (
            " The cpu preset runs the frozen half only, and its ratios reach far past the claimed 0.1 "
            f"threshold ({min(CPU_MINORITY)} to {max(CPU_MINORITY)} vs 1,000: "
            f"{min(CPU_MINORITY) / 1000:g}-{max(CPU_MINORITY) / 1000:g}, roughly log-spaced), so that a level-off "
            "can be seen or refuted. Apple, as in the figure: at the largest ratio the protocol needs "
            f"{max(CPU_MINORITY) + 157} unhealthy images (train {max(CPU_MINORITY)} + val 7 + test 150), which "
            "Apple's folders hold (1,525), as do Pepper's (997) and Tomato's (1,350)."
        )
    return [_spec("imbalance_ratio", preset, base, axes, "Figure 4.6", text, *_final_norm_arms())]


@EXPERIMENTS.register("batch_size")
def batch_size(preset: str, data: Data) -> list[SweepSpec]:
    # Final BN on, backbone frozen, 1% minority: the base configs' defaults.
    base = _image_base(preset, data)
    # The thesis' 16-512 over 1,010 training images. laptop: the same six
    # doublings one step lower over 303, so the largest batch again makes one
    # optimizer step an epoch (a ragged last batch is dropped).
    sizes = {"paper": (16, 32, 64, 128, 256, 512), "laptop": (8, 16, 32, 64, 128, 256), "smoke": (4, 8, 16, 32)}
    sizes["cpu"] = sizes["paper"]
    axes = (Axis("train.batch_size", sizes[preset]), _seeds(5 if preset in ("paper", "cpu") else 2))
    text = (
        "Minority-class test F1 against the batch size with the final BN (Figure 4.7: ResNet34, frozen, "
        "PlantVillage Apple, 10 unhealthy vs 1,000 healthy). The thesis finds 64 best and larger batches "
        "worse, and suggests larger batches leave the minority under-represented in the BN statistics. "
        "Together with imbalance_ratio this makes the thesis' 430 runs."
    )
    # No contrast: final BN is on in every trial (the base config's, not an axis), so there is no
    # second arm to pair it with, and no axis label for a derived "removed" arm to hang on.
    # Final BN is on in every trial (the base config), so its one comparison is with itself removed at test.
    removal = (Contrast(FINAL_NORM, "bn", "removed"),), (REMOVED,)
    return [_spec("batch_size", preset, base, axes, "Figure 4.7", text, *removal)]


@EXPERIMENTS.register("factorial")
def factorial(preset: str, data: Data) -> list[SweepSpec]:
    base = _image_base(preset, data)
    studied = _factorial_factors(preset, base)
    held = [name for name in FACTORS if name not in studied]
    if preset == "cpu":
        factor_axes = (*(_factor_axis(name, True, base) for name in studied), _trunk_pass_axis(held))
    else:
        factor_axes = tuple(_factor_axis(name, name in studied, base) for name in FACTORS)
    # cpu: 5 seeds per cell, the fewest whose intervals the analysis trusts (headline.FEW_SEEDS): with one run
    # per configuration, as in the thesis, every factorial verdict could only read "inconclusive". Seed 0's
    # trials are the one-run grid's, with the same ids.
    seeds = (_seeds(5),) if preset == "cpu" else ()
    axes = (*_plant_axis(preset, base, small=("Apple",)), *factor_axes, *seeds)
    text = (
        "Full factorial over six binary options, one run per configuration (Tables 4.3-4.4, Figure 4.5: "
        "ResNet34, 10 epochs, per plant): final BN (BN), class-weighted loss (WL), data augmentation (DA), "
        "mixup (MX), unfrozen backbone BN layers (UF) and weight decay (WD). The thesis finds final BN in "
        "every top configuration and in none of the worst. With all six factors studied, a trial's index "
        "within its plant is the thesis' Config Id."
    )
    if preset == "cpu":
        text += (
            f" The cpu preset runs the cacheable half, {' x '.join(studied)} per plant: {', '.join(held)} change "
            "what the trunk computes for an image (augmented or mixed inputs, BN layers that train), so they need "
            "the trunk's forward pass every step and are left to the paper preset (off here). Each configuration "
            "runs 5 seeds here, not the thesis' one, so that every effect has an interval."
        )
    elif held:
        text += f" Held fixed at this scale (the sweep script's docstring says why): {', '.join(held)}."
    return [_spec("factorial", preset, base, axes, "Tables 4.3-4.4, Figure 4.5", text, *_final_norm_arms())]


@EXPERIMENTS.register("headline")
def headline(preset: str, data: Data) -> list[SweepSpec]:
    base = _image_base(preset, data)
    if preset == "paper":
        # fastai v1, the thesis' framework, offered VGG19 only with BN layers
        # (vgg19_bn); plain vgg19 stays registered for anyone who wants it.
        base = base.replace(model={"backbone": "vgg19_bn"})
    variants = Axis(
        "variant",
        (
            {"model.final_norm": "none", "train.weighted_loss": False},
            {"model.final_norm": "none", "train.weighted_loss": True},
            {"model.final_norm": "bn", "train.weighted_loss": False},
        ),
        labels=("plain", "WL", "final_BN"),
    )
    seeds = {"paper": 10, "cpu": 10, "laptop": _laptop_seeds(base), "smoke": 3}[preset]
    axes = (*_plant_axis(preset, base, small=PLANTS), variants, _seeds(seeds))
    text = (
        "The headline comparison (Table 4.2, Figure 4.3): VGG19 on PlantVillage Apple, Pepper and Tomato "
        "(1,000 healthy + 10 unhealthy), plain vs class-weighted loss without final BN vs final BN without "
        "weighted loss, 10 runs each. The thesis reports unhealthy-class test F1 rising from 0.29-0.72 "
        "(plain) and 0.79-0.89 (weighted loss) to 0.96-0.98 with the final BN."
    )
    contrasts = (Contrast("variant", "final_BN", "plain"), Contrast("variant", "final_BN", "WL"))
    return [_spec("headline", preset, base, axes, "Table 4.2, Figure 4.3", text, contrasts, (HEADLINE_REMOVED,))]


@EXPERIMENTS.register("bn_removal")
def bn_removal(preset: str, data: Data) -> list[SweepSpec]:
    # Ratio 0.01, 10 epochs, batch 64 in the paper preset: the thesis defaults.
    base = _image_base(preset, data)
    seeds = {"paper": 10, "cpu": 10, "laptop": _laptop_seeds(base), "smoke": 4}[preset]
    axes = (*_plant_axis(preset, base, small=PLANTS), Axis("model.final_norm", ("none", "bn")), _seeds(seeds))
    text = (
        "Final BN kept vs removed at inference (Table 4.6: ResNet34, ratio 0.01, 10 epochs, batch 64, "
        "Apple, Pepper, Tomato). Every final-BN trial is also scored with the final BN removed (the nobn_* "
        "metrics), which gives the table's third row from the same runs. The thesis finds removal keeps "
        "most of the minority-class gain (e.g. Apple unhealthy F1 0.22 without, 0.91 with, 0.83 removed)."
    )
    # Table 4.6's three rows: with vs without, kept vs removed at test, and removed vs without.
    contrasts, derived = _final_norm_arms()
    contrasts += (Contrast(FINAL_NORM, "bn", "removed"), Contrast(FINAL_NORM, "removed", "none"))
    return [_spec("bn_removal", preset, base, axes, "Table 4.6", text, contrasts, derived)]


# learning_rate: the head's peak rate, half a decade apart around fastai v1's
# 3e-3, from 1e-4 (a head that barely moves in 10 epochs) to 3e-2.
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


@EXPERIMENTS.register("learning_rate")
def learning_rate(preset: str, data: str | None) -> list[SweepSpec]:
    """Two sweeps: the head's learning rate x final BN per plant at a 1% ratio, and the batch
    sizes of Figure 4.7 at a fixed number of optimizer steps (x final BN)."""
    base = _image_base(preset, data)
    rates = {"paper": LEARNING_RATES, "cpu": LEARNING_RATES, "laptop": (1e-3, 3e-3, 1e-2), "smoke": (1e-3, 1e-2)}
    seeds = _seeds(5 if preset in ("paper", "cpu") else 2)
    final_norm = Axis("model.final_norm", ("bn", "none"))
    lr_axes = (*_plant_axis(preset, base, small=("Apple",)), Axis("train.lr", rates[preset]), final_norm, seeds)
    lr_text = (
        "Minority-class test F1 against the head's peak learning rate, with and without the final BN, at "
        "a 1% ratio (10 unhealthy vs 1,000 healthy) on the three plants (issue 12 item 3). The thesis states no "
        "learning rate and trains a fixed 10 epochs, so how far the head can move in that budget may decide the "
        "final-BN effect. Beside F1 each trial logs what explains it: ROC AUC (auc, threshold-free), the mean "
        "minority probability on majority and minority test images, the final BN's learned scale and shift "
        "(bn_scale_*, bn_shift_*), ECE and Brier."
    )
    [batch] = batch_size(preset, data)
    sizes = next(axis for axis in batch.axes if axis.name == "train.batch_size")
    steps = _steps_of(base)
    fixed = base.replace(train={"steps": steps})
    steps_text = (
        f"Figure 4.7's batch sizes at a fixed {steps} optimizer steps (those of batch {base.train.batch_size} in "
        f"{base.train.epochs} epochs), with and without the final BN: at fixed epochs a larger batch also makes "
        "fewer steps, and the thesis does not separate the two. Passes over the training set are derived "
        f"(steps x batch / images); each trial is evaluated {base.train.epochs} times, evenly over its steps."
    )
    return [
        _spec(
            "learning_rate", preset, base, lr_axes, "issue 12 item 3 (no thesis table)", lr_text, *_final_norm_arms()
        ),
        _spec(
            "learning_rate",
            preset,
            fixed,
            (sizes, final_norm, seeds),
            "Figure 4.7 at fixed steps",
            steps_text,
            *_final_norm_arms(),
            analysis="batch_steps",
        ),
    ]


def _steps_of(base: TrialConfig) -> int:
    """Optimizer steps the base config makes: its epochs of whole batches over its training
    images (finalbn.train.recipe.steps_per_epoch, which imports torch, as arithmetic)."""
    d, t = base.data, base.train
    majority, minority = (1, 1) if d.source == "plantvillage" else (len(d.majority), len(d.minority))
    images = d.train_majority * majority + d.train_minority * minority
    return t.epochs * max(1, images // t.batch_size)


@EXPERIMENTS.register("mnist")
def mnist(preset: str, data: Data) -> list[SweepSpec]:
    if preset == "cpu":
        # Its networks train from scratch: no frozen pretrained trunk to cache.
        others = ", ".join(p for p in PRESETS if p != "cpu")
        raise UserError(
            f"the mnist experiment has no cpu preset (its networks train from scratch, so there is no frozen "
            f"trunk to cache): choose one of {others}"
        )
    base = _mnist_base(preset, data)
    return [_mnist_cnn(preset, base), _mnist_fc(preset, base)]


def _mnist_cnn(preset: str, base: TrialConfig) -> SweepSpec:
    # The caption of Table 4.7 says ResNet-34 and 1% vs 99%; its text says a
    # five-Conv2D CNN and a ratio of 0.1. The simple CNN matches the text and
    # the section's purpose (simpler architectures); 1% matches the caption and
    # Table 4.8's 0.01 for the same digits. Two-class settings keep 1% per
    # class: each minority digit gets 1% of one majority digit's count.
    settings = Axis(
        "setting",
        tuple({"data.majority": majority, "data.minority": minority} for _, majority, minority in MNIST_SETTINGS),
        labels=tuple(label for label, _, _ in MNIST_SETTINGS),
    )
    seeds = {"paper": 10, "laptop": 2, "smoke": 1}[preset]
    axes = (settings, Axis("model.final_norm", ("bn", "none")), _seeds(seeds))
    text = (
        "Final BN in a simple five-layer CNN trained from scratch on MNIST (Table 4.7): 3 vs 8, 2 vs 8, "
        "3 vs 5 with the minority (first digit) at 1%, then two majority digits (3 vs 5+8) and two minority "
        "digits (3+5 vs 8). The thesis finds final BN lifts minority F1 by 0.25-0.36 with one majority "
        "class and helps nothing with two."
    )
    return _spec("mnist", preset, base, axes, "Table 4.7", text, *_final_norm_arms(), analysis="mnist_cnn")


def _mnist_fc(preset: str, base: TrialConfig) -> SweepSpec:
    base = base.replace(model={"backbone": "fc128"}, train={"epochs": 2 if preset == "smoke" else 100})
    rows = Axis(
        "row",
        tuple(
            {
                "model.output": output,
                "train.loss": loss,
                "model.first_bn": first,
                "model.final_norm": "bn" if final else "none",
            }
            for output, loss, first, final in TABLE_4_8_ROWS
        ),
        labels=tuple(_row_label(*row) for row in TABLE_4_8_ROWS),
    )
    seeds = {"paper": 5, "laptop": 2, "smoke": 1}[preset]
    text = (
        "Final BN in a one-hidden-layer (128 units) network on MNIST 3 (1%) vs 8, 100 epochs (Table 4.8): "
        "the table's nine rows of output activation (softmax, sigmoid), loss (CCE, BCE), a BN after the "
        "hidden layer (first BN) and the final BN. The thesis finds softmax + CCE + final BN best "
        "(minority F1 0.88 vs 0.67 without) and final BN useless under sigmoid."
    )
    return _spec(
        "mnist", preset, base, (rows, _seeds(seeds)), "Table 4.8", text, _table_4_8_contrasts(rows), analysis="mnist_fc"
    )


def _table_4_8_contrasts(rows: Axis) -> tuple[Contrast, ...]:
    """Each row with the final BN against the same row without it (four pairs; softmax-cce-firstbn has
    no row without), the thesis' best first: softmax + CCE, minority F1 0.88 vs 0.67."""
    labels = rows.labels
    pairs = [Contrast("row", label, label.removesuffix("-finalbn")) for label in labels if label.endswith("-finalbn")]
    pairs = [pair for pair in pairs if pair.control in labels]
    return tuple(sorted(pairs, key=lambda pair: pair.control != "softmax-cce"))


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
    base = _image_base(preset, data)
    if preset == "paper":
        # The headline sweep's backbone, so its plain, WL and final_BN trials are these' too.
        base = base.replace(model={"backbone": "vgg19_bn"})
    seeds = {"paper": 10, "cpu": 10, "laptop": _laptop_seeds(base), "smoke": 2}[preset]
    # cpu: the thesis' rate (fastai's default) and TrainConfig's 1e-3, so that no verdict rests on one rate.
    rates = (Axis("train.lr", (FASTAI_DEFAULT_LR, 1e-3)),) if preset == "cpu" else ()
    axes = (*_plant_axis(preset, base, small=PLANTS), *rates, method_axis(TRAINED_NAMES), _seeds(seeds))
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
        _spec(
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
    axes = (Axis("data.train_minority", RATIO_MINORITY), method_axis(RATIO_METHODS), _seeds(5))
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
    return _spec(
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


# ------------------------------------------------------------------- helpers


def _image_base(preset: str, data: Data) -> TrialConfig:
    """Starting config of the image experiments at a preset's scale: PlantVillage, or a user's class folders."""
    if isinstance(data, ClassFolders):
        return _image_scale(preset).replace(data=data.data_fields())
    if preset in ("paper", "cpu"):
        root = _require_data(
            preset, data, "the PlantVillage root, the folder holding the <Plant>___<condition> folders"
        )
        return _image_scale(preset).replace(data={"root": root})
    if preset == "smoke":
        return _smoke(data)
    return EMBEDDED_MNIST if data is None else _image_scale(preset).replace(data={"root": _absolute(data)})


def _image_scale(preset: str) -> TrialConfig:
    """The image experiments' counts, image size, model and training at a preset's scale."""
    if preset in ("paper", "cpu"):
        thesis = THESIS.replace(train={"lr": FASTAI_DEFAULT_LR})
        return thesis.replace(model=CPU_TRUNK) if preset == "cpu" else thesis
    if preset == "smoke":
        # Reached with class folders only: smoke on PlantVillage runs on the embedded subset.
        return SMALL_PLANTVILLAGE.replace(data=SMOKE_DATA, train=SMOKE_TRAIN)
    return SMALL_PLANTVILLAGE


def _mnist_base(preset: str, data: Data) -> TrialConfig:
    """Starting config of the MNIST experiment; data is torchvision's MNIST root."""
    if isinstance(data, ClassFolders):
        raise UserError(
            "the mnist experiment runs on MNIST digits, not class folders: drop --source folder "
            "(it applies to the other experiments)"
        )
    if preset == "paper":
        root = _require_data(preset, data, "the folder holding torchvision's MNIST/raw files (full MNIST)")
        # The thesis gives no MNIST epochs or batch size: 10 epochs as in every
        # PlantVillage run, the embedded preset's batch 32 and learning rate;
        # float32 on a CPU, as the thesis' fastai v1 trained unless told otherwise.
        return EMBEDDED_MNIST.replace(
            data={"source": "torchvision-mnist", "root": root, **FULL_MNIST_DATA},
            train={"epochs": 10, "cpu_amp": False},
        )
    if preset == "smoke":
        return _smoke(data)
    if data is None:
        return EMBEDDED_MNIST
    return EMBEDDED_MNIST.replace(data={"source": "torchvision-mnist", "root": _absolute(data)})


def _smoke(data: str | None) -> TrialConfig:
    if data is not None:
        raise UserError(
            "the smoke preset always runs on the embedded MNIST subset: drop --data, or use --preset laptop"
        )
    return EMBEDDED_MNIST.replace(data=SMOKE_DATA, train=SMOKE_TRAIN)


def _require_data(preset: str, data: str | None, what: str) -> str:
    if data is None:
        raise UserError(f"the {preset} preset needs --data PATH, {what}; or use --preset laptop to run without data")
    return _absolute(data)


def _absolute(data: str) -> str:
    # Ray runs trials in their own working directories: a relative root would
    # point elsewhere there. absolute() reads only the current directory.
    return str(Path(data).expanduser().absolute())


def _final_norm_arms() -> tuple[tuple[Contrast, ...], tuple[Derived, ...]]:
    """A model.final_norm axis over bn and none: bn vs none, and the bn trials scored with the final BN
    removed at test (their nobn_* metrics) as the derived arm "removed"."""
    return (Contrast(FINAL_NORM, "bn", "none"),), (REMOVED,)


def _seeds(count: int) -> Axis:
    return Axis("train.seed", tuple(range(count)), role="nuisance")


def _laptop_seeds(base: TrialConfig) -> int:
    # About a dozen trials: 2 seeds across three plants, 4 on one data set (a digit pair, class folders).
    return 2 if base.data.source == "plantvillage" else 4


def _plant_axis(preset: str, base: TrialConfig, small: tuple[str, ...]) -> tuple[Axis, ...]:
    """The plants studied: all three in the paper, ``small`` on a laptop, none on MNIST or class folders."""
    if base.data.source != "plantvillage":
        return ()
    plants = PLANTS if preset in ("paper", "cpu") else small
    return (Axis("data.plant", plants, role="scientific" if len(plants) > 1 else "fixed"),)


def _unfreeze_axis(preset: str, base: TrialConfig) -> Axis:
    # Frozen vs unfrozen means something only for a pretrained backbone; the
    # small presets train the simple CNN from scratch, so it stays "all".
    if preset == "paper":
        return Axis("model.unfreeze", ("none", "all"))
    # cpu: frozen only, the half whose features can be cached.
    return Axis("model.unfreeze", (base.model.unfreeze,), role="fixed")


def _factorial_factors(preset: str, base: TrialConfig) -> tuple[str, ...]:
    """Which of the six factors vary; the rest are held at the base config's value."""
    if preset == "paper":
        return tuple(FACTORS)
    if preset == "cpu":
        return CPU_FACTORS
    if preset == "smoke":
        return ("BN", "WL", "MX")
    # UF unfreezes a frozen pretrained backbone's BN layers; the simple CNN
    # trains from scratch and has none. DA (flips, quarter turns) shows leaves,
    # or a user's photos, as they could lie, but turns a 3 into no digit a test
    # set holds.
    if base.data.source in ("plantvillage", "folder"):
        return ("BN", "WL", "DA", "MX", "WD")
    return ("BN", "WL", "MX", "WD")


def _factor_axis(name: str, studied: bool, base: TrialConfig) -> Axis:
    field, checked, unchecked = FACTORS[name]
    if studied:
        return Axis(field, (checked, unchecked))
    section, attribute = field.split(".")
    return Axis(field, (getattr(getattr(base, section), attribute),), role="fixed")


def _trunk_pass_axis(held: list[str]) -> Axis:
    """One fixed joint axis holding the factors a cached trunk cannot run at their off
    level, labelled so that the dry run says why they are absent."""
    values = {FACTORS[name][0]: FACTORS[name][2] for name in held}
    label = f"{' '.join(held)} off (need the trunk's forward pass: paper preset)"
    return Axis("held", (values,), role="fixed", labels=(label,))


def _row_label(output: str, loss: str, first_bn: bool, final_bn: bool) -> str:
    """E.g. "softmax-cce-firstbn-finalbn"."""
    return "-".join([output, loss, *(["firstbn"] if first_bn else []), *(["finalbn"] if final_bn else [])])


def _spec(
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

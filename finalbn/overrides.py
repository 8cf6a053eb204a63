"""Command-line changes to a declared sweep, Hydra-style, type-checked against the config dataclasses.

``--set train.lr=3e-3 model.backbone=resnet18`` changes the base config;
``--axis data.train_minority=5,10,20`` replaces (or adds) a field axis, or picks
labels of a joint axis (``--axis variant=plain,final_BN``); ``--seeds 3`` makes
the seed axis 0, 1, 2. The result is an ordinary SweepSpec: its trials get ids
from their resolved configs, so an override is a different trial, never a
silent reuse, and sweep.json records the overrides given.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from finalbn.config import DataConfig, ModelConfig, TrainConfig
from finalbn.errors import UserError
from finalbn.spec import Axis, SweepSpec

SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
SEED = "train.seed"


@dataclass(frozen=True)
class Overrides:
    # "section.field=value" pairs for the base config.
    sets: tuple[str, ...] = ()
    # "name=v1,v2" pairs: an axis' values (field axis) or labels (joint axis).
    axes: tuple[str, ...] = ()
    seeds: int | None = None

    def given(self) -> tuple[str, ...]:
        """The overrides as typed, for the dry run and sweep.json."""
        seeds = () if self.seeds is None else (f"--seeds {self.seeds}",)
        return (*(f"--set {s}" for s in self.sets), *(f"--axis {a}" for a in self.axes), *seeds)


def apply(spec: SweepSpec, overrides: Overrides) -> SweepSpec:
    if not overrides.given():
        return spec
    axes = list(spec.axes)
    for text in overrides.axes:
        name, values = _pair(text, "--axis", "NAME=V1,V2 (e.g. --axis data.train_minority=5,10,20)")
        axes = _with_axis(axes, name, values.split(","))
    if overrides.seeds is not None:
        if overrides.seeds < 1:
            raise UserError(f"--seeds {overrides.seeds}: use 1 or more")
        axes = _replace(axes, Axis(SEED, tuple(range(overrides.seeds)), role="nuisance"))
    varied = {field for axis in axes for field in _fields(axis)}
    changes: dict[str, dict[str, Any]] = {}
    for text in overrides.sets:
        name, value = _pair(text, "--set", "SECTION.FIELD=VALUE (e.g. --set train.lr=3e-3)")
        if name in varied:
            raise UserError(f"--set {text}: {name} is an axis of this sweep; use --axis {name}={value}")
        section, field = name.split(".", 1)
        changes.setdefault(section, {})[field] = parse_value(name, value)
    base = spec.base.replace(**changes) if changes else spec.base
    return dataclasses.replace(spec, base=base, axes=tuple(axes), overrides=(*spec.overrides, *overrides.given()))


def parse_value(name: str, text: str) -> Any:
    """``text`` as the type of config field ``name`` ("section.field"), or a one-line error."""
    kind = field_types()[check_name(name)]
    try:
        return _convert(kind, text)
    except ValueError as error:
        raise UserError(f"{name}={text!r}: {error}") from None


def check_name(name: str) -> str:
    """A dotted config field name, or a one-line error listing the valid ones with a "did you mean"."""
    fields = field_types()
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown config field {name!r}: {hint}valid fields are {', '.join(fields)}")
    return name


def field_types() -> dict[str, Any]:
    return {
        f"{section}.{f.name}": typing.get_type_hints(cls)[f.name]
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }


def _with_axis(axes: list[Axis], name: str, values: list[str]) -> list[Axis]:
    existing = next((axis for axis in axes if axis.name == name), None)
    if existing is not None and existing.joint:
        labels = [existing.label(i) for i in range(len(existing.values))]
        unknown = [v for v in values if v not in labels]
        if unknown:
            raise UserError(f"--axis {name}: no value labelled {', '.join(unknown)}; this axis has {', '.join(labels)}")
        picked = [labels.index(v) for v in values]
        return _replace(
            axes,
            dataclasses.replace(
                existing,
                values=tuple(existing.values[i] for i in picked),
                labels=tuple(labels[i] for i in picked),
            ),
        )
    if existing is None and "." not in name:
        joint = [axis.name for axis in axes if axis.joint]
        raise UserError(
            f"--axis {name}: neither a config field (section.field) nor a joint axis of this sweep"
            + (f" ({', '.join(joint)})" if joint else "")
        )
    typed = tuple(parse_value(name, v) for v in values)
    if len(set(typed)) != len(typed):
        raise UserError(f"--axis {name}: a value is given twice")
    role = existing.role if existing is not None else "scientific"
    return _replace(axes, Axis(name, typed, role="fixed" if len(typed) == 1 else role))


def _replace(axes: list[Axis], new: Axis) -> list[Axis]:
    """``new`` in place of the axis of its name, or appended (varying fastest)."""
    if any(axis.name == new.name for axis in axes):
        return [new if axis.name == new.name else axis for axis in axes]
    return [*axes, new]


def _fields(axis: Axis) -> set[str]:
    return {k for value in axis.values for k in value} if axis.joint else {axis.name}


def _pair(text: str, flag: str, form: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UserError(f"{flag} {text!r}: use {form}")
    return name.strip(), value.strip()


def _convert(kind: Any, text: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return text
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if text.lower() == "none" and len(options) < len(typing.get_args(kind)):
            return None
        return _convert(options[0], text)
    if origin is tuple:
        return tuple(part for part in text.split("+") if part)
    if kind is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError("use true or false")
        return lowered in ("true", "1", "yes", "on")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"not a{'n integer' if kind is int else ' number'}") from None
    return text

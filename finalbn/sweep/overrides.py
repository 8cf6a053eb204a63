"""Command-line changes to a declared sweep, Hydra-style, type-checked against the config dataclasses.

``--set train.lr=3e-3 model.backbone=resnet18`` changes the base config;
``--axis data.train_minority=5,10,20`` replaces (or adds) a field axis, or picks
labels of a joint axis (``--axis variant=plain,final_BN``); ``--seeds 3`` makes
the seed axis 0, 1, 2. The result is an ordinary SweepSpec: its trials get ids
from their resolved configs, so an override is a different trial, never a
silent reuse, and sweep.json records the overrides given. A contrast or derived
arm whose labels an override drops from its axis is dropped with them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from finalbn.config import SECTIONS, check_name, expected, field_adapter, field_types
from finalbn.errors import UserError
from finalbn.sweep.spec import Axis, Contrast, Derived, SweepSpec

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
    axis_pairs = [
        _pair(text, "--axis", "NAME=V1,V2 (e.g. --axis data.train_minority=5,10,20)") for text in overrides.axes
    ]
    set_pairs = [_pair(text, "--set", "SECTION.FIELD=VALUE (e.g. --set train.lr=3e-3)") for text in overrides.sets]
    _refuse_repeats(axis_pairs, set_pairs, overrides.seeds)
    axes = list(spec.axes)
    for name, values in axis_pairs:
        axes = _with_axis(axes, name, values.split(","), spec.derived)
    if overrides.seeds is not None:
        if overrides.seeds < 1:
            raise UserError(f"--seeds {overrides.seeds}: use 1 or more")
        axes = _replace(axes, Axis(SEED, tuple(range(overrides.seeds)), role="nuisance"))
    varied = {field for axis in axes for field in _fields(axis)}
    changes: dict[str, dict[str, Any]] = {}
    for (name, value), text in zip(set_pairs, overrides.sets, strict=True):
        if name in varied:
            raise UserError(f"--set {text}: {name} is an axis of this sweep; use --axis {name}={value}")
        section, field = name.split(".", 1)
        changes.setdefault(section, {})[field] = parse_value(name, value)
    base = spec.base.replace(**changes) if changes else spec.base
    derived, contrasts = _arms_left(spec, axes)
    return dataclasses.replace(
        spec,
        base=base,
        axes=tuple(axes),
        overrides=(*spec.overrides, *overrides.given()),
        contrasts=contrasts,
        derived=derived,
    )


def parse_value(name: str, text: str) -> Any:
    """``text`` as the type of config field ``name`` ("section.field"), or a one-line error.

    The text is read by the same pydantic type of the field that checks a config file's values (as strings,
    strictly: "3.5" is no integer, "maybe" no bool); bounds are validate()'s, as for every other input."""
    section, field = check_name(name).split(".", 1)
    kind = field_types()[name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and text.lower() == "none":
        return None
    if typing.get_origin(kind) is tuple:
        # A command line has no list syntax: names joined by "+".
        return tuple(part for part in text.split("+") if part)
    try:
        return field_adapter(SECTIONS[section], field, bounds=False).validate_strings(text, strict=True)
    except ValidationError:
        raise UserError(f"{name}={text!r}: {expected(kind, null='none')}") from None


def _refuse_repeats(axes: list[tuple[str, str]], sets: list[tuple[str, str]], seeds: int | None) -> None:
    """A name given twice is an error, not "the last one wins", which would drop the first without a word."""
    for name, count in Counter(name for name, _ in axes).items():
        if count > 1:
            values = ",".join(value for other, value in axes if other == name)
            raise UserError(f"--axis {name} is given twice: give all its values in one, --axis {name}={values}")
    for name, count in Counter(name for name, _ in sets).items():
        if count > 1:
            values = ", ".join(value for other, value in sets if other == name)
            raise UserError(f"--set {name} is given twice ({values}): keep one")
    if seeds is not None and SEED in (name for name, _ in axes):
        raise UserError(f"--seeds and --axis {SEED} both set the seeds: keep one")


def _arms_left(spec: SweepSpec, axes: list[Axis]) -> tuple[tuple[Derived, ...], tuple[Contrast, ...]]:
    """The derived arms whose source is still on its axis, and the contrasts whose two arms still are."""
    labels = {axis.name: {axis.label(i) for i in range(len(axis.values))} for axis in axes}
    derived = tuple(arm for arm in spec.derived if arm.source in labels.get(arm.axis, ()))
    for arm in derived:
        labels[arm.axis].add(arm.label)
    contrasts = tuple(c for c in spec.contrasts if {c.treated, c.control} <= labels.get(c.axis, set()))
    return derived, contrasts


def _with_axis(axes: list[Axis], name: str, values: list[str], derived: tuple[Derived, ...]) -> list[Axis]:
    existing = next((axis for axis in axes if axis.name == name), None)
    for arm in derived:
        if arm.axis == name and arm.label in values:
            # Derived arms train nothing: they are scored from their source's trials.
            raise UserError(
                f"--axis {name}={','.join(values)}: {arm.label} is scored from {arm.source}'s trials: "
                f"ask for {arm.source}"
            )
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

"""Flattened ``section.field`` values back to the types of the config dataclasses.

Tables hold a config as one column per field and MLflow holds it as text
params; analyses compare them with the typed values of a config, so both are
given their field's type here, read off the dataclasses rather than listed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def config_from_row(row: dict[str, Any]) -> TrialConfig:
    """Rebuild a trial's config from its flattened ``section.field`` columns."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in row.items():
        kind = field_type(key)
        if kind is None:
            continue
        if kind is tuple:
            value = tuple(str(value).split(",")) if value not in (None, "") else ()
        section, _, name = key.partition(".")
        sections[section][name] = value
    return TrialConfig.from_dict(sections)


def typed_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow keeps params as text; give each the type of its config field (unknown keys stay text)."""
    return {key: _typed(text, field_type(key) or str) for key, text in params.items()}


def field_type(key: str) -> type | None:
    """``"train.seed"`` -> int; None for a key that is no config field."""
    section, _, name = key.partition(".")
    return _FIELD_TYPES.get(section, {}).get(name)


def _typed(text: str, kind: type) -> Any:
    if text == "None":
        return None
    if kind is bool:
        return text == "True"
    if kind in (int, float):
        return kind(text)
    return text


def _field_types() -> dict[str, dict[str, type]]:
    found: dict[str, dict[str, type]] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        found[section] = {f.name: _plain(hints[f.name]) for f in dataclasses.fields(cls)}
    return found


def _plain(hint: Any) -> type:
    """``str | None`` -> str, ``tuple[str, ...]`` -> tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


_FIELD_TYPES = _field_types()

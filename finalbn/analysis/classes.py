"""What the report calls the sweep's data and classes: the thesis' names on PlantVillage, the user's own elsewhere.

A ``--source folder`` sweep names its classes by their folders (``--majority``,
``--minority``) and its data by the data root's folder name; it has one data
set, so no plant axis, and no thesis numbers stand beside its results. The
MNIST presets keep the thesis' comparison (they stand in for its Apple rows)
under the digits' names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

import polars as pl

from finalbn.sweep.spec import SweepSpec

Role = Literal["minority", "majority"]
# The thesis' classes: PlantVillage's diseased leaves (minority) and healthy ones.
THESIS_CLASSES = {"minority": "Unhealthy", "majority": "Healthy"}


@dataclass(frozen=True)
class DataNames:
    # The data source ("plantvillage", "folder", "mnist", ...); "" when the table does not say.
    source: str
    # The data root's folder name; "" for embedded data or when unknown.
    root: str
    minority: tuple[str, ...]
    majority: tuple[str, ...]

    @classmethod
    def of(cls, trials: pl.DataFrame, spec: SweepSpec | None = None) -> DataNames:
        """From the table's ``data.*`` columns (every trial trains on the same data and classes), else the spec."""

        def first(column: str) -> str:
            if column in trials.columns and trials.height and trials[column][0] is not None:
                return str(trials[column][0])
            if spec is not None:
                value = getattr(spec.base.data, column.removeprefix("data."))
                return ",".join(value) if isinstance(value, tuple) else str(value or "")
            return ""

        root = first("data.root")
        return cls(
            source=first("data.source"),
            root=PurePath(root).name if root else "",
            minority=tuple(n for n in first("data.minority").split(",") if n),
            majority=tuple(n for n in first("data.majority").split(",") if n),
        )

    @property
    def own(self) -> bool:
        """The user's own class folders: no thesis numbers to compare with, no plants."""
        return self.source == "folder"

    def name(self, role: Role) -> str:
        """``Unhealthy`` on PlantVillage, else the class folders or digits (``dogs+foxes``), else the role."""
        if self.source == "plantvillage":
            return THESIS_CLASSES[role]
        return "+".join(self.minority if role == "minority" else self.majority) or role

    def label(self, role: Role) -> str:
        """A table's class cell: ``Unhealthy (minority)``, ``dogs (minority)``."""
        return f"{self.name(role)} ({role})"

    def titles(self) -> dict[str, str]:
        """Figure titles and legends per metric column: ``minority class (dogs)``, ``minority class``."""
        titles = {}
        for role in ("minority", "majority"):
            name = self.name(role)
            name = name.lower() if self.source == "plantvillage" else name
            titles[f"f1_{role}"] = f"{role} class" + (f" ({name})" if name != role else "")
        return titles

    def data(self) -> str:
        """The data in a few words: ``digits: three vs eight`` for class folders, else the source."""
        if self.own:
            return f"{self.root or 'class folders'}: {self.name('minority')} vs {self.name('majority')}"
        return self.source or "the sweep's data"

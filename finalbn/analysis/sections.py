"""The report sections, one per kind of sweep, registered by name beside their analyses.

A sweep's ``sweep.json`` names its section (``SweepSpec.analysis``); the
section writes its part of the report into a ``Context`` and returns the
sweep's answer, one sentence per finding (``headline.Headline``). Sections live with what they
report: the imbalance threshold in ``imbalance``, the batch optimum in
``batch``, the factorial in ``factorial``, the thesis tables in ``tables``;
``generic`` is here. ``finalbn.analysis.report`` imports those modules, which
registers them, and assembles the document around the chosen one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis.classes import DataNames
from finalbn.analysis.grid import AXIS, GENERIC
from finalbn.analysis.headline import Headline
from finalbn.analysis.render import Document
from finalbn.analysis.sweep_data import SweepData
from finalbn.records import write_atomic
from finalbn.registry import Registry

METRICS = ("f1_minority", "f1_majority", "accuracy", "ece", "brier")
# Rows shown in a report table before it only points at the CSV.
MAX_ROWS = 60


@dataclass
class Context:
    """What a section writes into: the sweep, the document, where figures and tables go, and notes;
    beside them what the sweep's data and classes are called and its fewest runs per configuration."""

    data: SweepData
    doc: Document
    figures: Path
    tables: Path
    names: DataNames
    # Fewest runs of a configuration (``seeds.fewest_runs``): what per-configuration intervals rest on.
    seeds: int
    notes: list[str] = field(default_factory=list)

    def save_figure(self, figure: object, name: str, caption: str) -> None:
        path = fig.save(figure, self.figures / f"{name}.png")
        self.doc.figure(path, caption)

    def save_table(self, frame: pl.DataFrame, name: str) -> Path:
        path = self.tables / f"{name}.csv"
        write_atomic(path, frame.write_csv)
        return path

    def skip(self, what: str, why: str) -> None:
        line = f"{what} skipped: {why}"
        self.notes.append(line)
        self.doc.note(line)

    def groups(self, exclude: set[str]) -> list[str]:
        """Scientific axis columns other than ``exclude`` (e.g. frozen/unfrozen, plant)."""
        return [c for c in self.data.scientific_axes() if c.removeprefix(AXIS) not in exclude and c not in exclude]


Section = Callable[[Context], Headline]
SECTIONS: Registry[Section] = Registry("report section")


@SECTIONS.register(GENERIC)
def generic(ctx: Context) -> Headline:
    trials = ctx.data.trials
    return Headline("", (f"mean test minority F1 over {trials.height} trials: {num(trials['f1_minority'].mean())}",))


def group_text(group: dict[str, object]) -> str:
    """``{"axis.model.unfreeze": "all"}`` -> ``unfreeze=all``; "all" for no group."""
    return ", ".join(f"{k.removeprefix(AXIS).rsplit('.', 1)[-1]}={v}" for k, v in group.items()) or "all"


def num(value: object) -> str:
    """Three decimals, "-" for a missing or undefined value."""
    return "-" if value is None or value != value else f"{float(value):.3f}"

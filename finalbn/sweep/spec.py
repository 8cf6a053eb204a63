"""A sweep declared as named grid axes over a base trial config.

An axis either sets one config field (``Axis("data.train_minority", (5, 10))``)
or several at once (a joint axis whose values are ``{field: value}`` dicts,
e.g. a Table 4.8 row). ``finalbn.launch.ray_tune`` turns the same declaration
into Ray Tune's search space: one ``tune.grid_search`` per axis.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Any, Literal

from finalbn.config import TrialConfig

# tuning_playbook's vocabulary: scientific axes are what the sweep studies,
# nuisance axes (seeds) are averaged over, fixed ones are held constant.
AxisRole = Literal["scientific", "nuisance", "fixed"]


@dataclass(frozen=True)
class Axis:
    # A dotted config field ("model.final_norm") or, for a joint axis, a label.
    name: str
    # Field axis: the field's values. Joint axis: {dotted field: value} dicts.
    values: tuple[Any, ...]
    role: AxisRole = "scientific"
    # Readable names of the values (joint axes), shown in dry runs and run names.
    labels: tuple[str, ...] = ()

    @property
    def joint(self) -> bool:
        return "." not in self.name

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else _short(self.values[index])

    def overrides(self, index: int) -> dict[str, Any]:
        value = self.values[index]
        return dict(value) if self.joint else {self.name: value}


@dataclass(frozen=True)
class Derived:
    """An arm scored from other trials' saved outputs, with no training of its own: the trials whose
    axis ``axis`` has label ``source``, read through their final metrics under ``prefix`` (``nobn_``:
    the final BN removed at test; ``thr_``: the decision threshold chosen on the validation split)."""

    axis: str
    label: str
    source: str
    prefix: str


@dataclass(frozen=True)
class Contrast:
    """A paired comparison the sweep declares: ``treated`` against ``control``, two labels of axis
    ``axis`` (a declared value or a derived arm), every other axis held fixed and seeds paired."""

    axis: str
    treated: str
    control: str

    def text(self) -> str:
        return f"{self.treated} vs {self.control}"


FINAL_NORM = "model.final_norm"
# The arm every final-BN trial also gives: the final BN removed at test, read from its nobn_* metrics.
REMOVED = Derived(FINAL_NORM, "removed", "bn", "nobn_")
# The headline sweep's final_BN trials scored with the final BN removed at test.
HEADLINE_REMOVED = Derived("variant", "final_BN_removed", "final_BN", "nobn_")


@dataclass(frozen=True)
class PlannedTrial:
    config: TrialConfig
    # Axis name -> readable label of this trial's value.
    point: dict[str, str]

    def name(self) -> str:
        return " ".join(f"{axis.rsplit('.', 1)[-1]}={label}" for axis, label in self.point.items())


@dataclass(frozen=True)
class SweepSpec:
    # MLflow experiment name and results folder name.
    name: str
    base: TrialConfig
    axes: tuple[Axis, ...]
    description: str = ""
    # Thesis table or figure this sweep reproduces, e.g. "Figure 4.6".
    reproduces: str = ""
    # The declared experiment and preset it was built from ("" for a hand-made spec).
    experiment: str = ""
    preset: str = ""
    # The analysis that reads it (a registered report section, finalbn.analysis.sections).
    analysis: str = "generic"
    # Command-line overrides applied to the declaration (finalbn.sweep.overrides), as typed.
    overrides: tuple[str, ...] = ()
    # data.train_minority values --refine added to that axis (finalbn.sweep.refine), in the order added.
    refined: tuple[int, ...] = ()
    # The paired comparisons the analysis computes, the first one the sweep's headline; and the arms
    # scored from other arms' trials (finalbn.sweep.methods' post-hoc methods, final BN removed at test).
    contrasts: tuple[Contrast, ...] = ()
    derived: tuple[Derived, ...] = ()

    def size(self) -> int:
        total = 1
        for axis in self.axes:
            total *= len(axis.values)
        return total

    def trials(self) -> list[PlannedTrial]:
        """Every grid point in declared order (the last axis varies fastest)."""
        planned = []
        for indices in itertools.product(*(range(len(axis.values)) for axis in self.axes)):
            changes: dict[str, dict[str, Any]] = {}
            for axis, index in zip(self.axes, indices, strict=True):
                for dotted, value in axis.overrides(index).items():
                    section, name = dotted.split(".", 1)
                    changes.setdefault(section, {})[name] = value
            point = {axis.name: axis.label(index) for axis, index in zip(self.axes, indices, strict=True)}
            planned.append(PlannedTrial(config=self.base.replace(**changes), point=point))
        return planned


def flatten(config: TrialConfig) -> dict[str, Any]:
    """``{"data.train_minority": 10, ...}``: one column or MLflow param per field."""
    return {
        f"{section}.{name}": ",".join(map(str, value)) if isinstance(value, tuple | list) else value
        for section, fields in config.to_dict().items()
        for name, value in fields.items()
    }


# Past this, a name made of overrides ends in a hash of them: folder names and MLflow's runs table stay readable.
_NAME_LIMIT = 100


def own_name(spec: SweepSpec, name: str | None = None) -> SweepSpec:
    """``spec`` under its own results folder and MLflow experiment when it is not the declared grid:
    ``name`` when given, else the declared name and its overrides, sorted so the same overrides find
    the same folder again (``imbalance_ratio-laptop+seeds=3+train.lr=0.003``). A changed grid must
    never overwrite the preset sweep's tables, report, sweep.json or status."""
    if name is None and not spec.overrides:
        return spec
    if name is None:
        parts = sorted(
            text.removeprefix("--").replace(" ", "=", 1).removeprefix("set=").removeprefix("axis=")
            for text in spec.overrides
        )
        name = re.sub(r"[^\w.,=+-]", "_", "+".join([spec.name, *parts]))
        if len(name) > _NAME_LIMIT:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            name = f"{name[: _NAME_LIMIT - 9]}-{digest}"
    return dataclasses.replace(spec, name=name)


def _short(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "+".join(map(str, value))
    return str(value)

"""``sweep.json``: what a sweep folder holds, written down once by the driver.

Written before the first trial and updated when an invocation ends: the
experiment, preset and analysis, every axis (name, role, values, labels), the
base config, the data root and manifest fingerprints, the planned grid (trial
id -> axis labels), the declared contrasts and derived arms, the code version,
and one entry per invocation (backend, counts, status). Analysis reads it
instead of guessing the grid from folder names or the axes from run names.

A record written before contrasts were recorded (``contrasts`` and ``derived``
absent, read as None) gets them back from its axes: ``inferred_arms`` says how.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.records import RecordError, read_json, write_json
from finalbn.records.folders import SWEEP_RECORD
from finalbn.sweep.spec import FINAL_NORM, HEADLINE_REMOVED, REMOVED, Axis, AxisRole, Contrast, Derived, SweepSpec

# Bump when the layout changes; readers refuse other formats by name.
RECORD_FORMAT = 1


@dataclass(frozen=True)
class AxisRecord:
    name: str
    role: AxisRole
    # JSON forms of the axis values ({field: value} dicts for a joint axis).
    values: list[Any]
    labels: list[str]

    def axis(self) -> Axis:
        values = tuple(_hashable(v) for v in self.values)
        # Field axes label their values themselves; only joint axes store labels.
        joint = "." not in self.name
        return Axis(self.name, values, role=self.role, labels=tuple(self.labels) if joint else ())


@dataclass
class Invocation:
    started: str
    backend: str
    trials: int
    skipped: int
    pending: int
    ended: str = ""
    # FINISHED, FAILED, KILLED, or SUBMITTED (a detached backend returned while trials run).
    status: str = "RUNNING"
    finished: int = 0
    failed: int = 0
    # The driver process, so that `finalbn cancel` can stop a sweep run on this host.
    host: str = ""
    pid: int = 0

    def close(self, finished: list[str], failed: list[str]) -> None:
        self.ended = _now()
        self.finished, self.failed = len(finished), len(failed)


@dataclass
class SweepRecord:
    name: str
    experiment: str
    preset: str
    analysis: str
    description: str
    reproduces: str
    axes: list[AxisRecord]
    base: dict[str, Any]
    # The data root of the base config (None: an embedded data set).
    data_root: str | None
    # Trial id -> {axis name: label}: the planned grid, in declared order.
    trials: dict[str, dict[str, str]]
    # Trial id -> manifest fingerprint (the dataset version that trial sees).
    fingerprints: dict[str, str]
    code: dict[str, str]
    # Command-line overrides applied to the declared sweep (--set, --axis, --seeds).
    overrides: list[str] = field(default_factory=list)
    # data.train_minority values --refine added (already among the axes' values): a rerun reuses them.
    refined: list[int] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)
    format: int = RECORD_FORMAT
    # The declared contrasts (the first the headline) and derived arms; None in a record written before
    # they were recorded (the format is the same: older finalbn versions read on without them).
    contrasts: list[Contrast] | None = None
    derived: list[Derived] | None = None

    @classmethod
    def of(cls, spec: SweepSpec, planned: dict[str, tuple[dict[str, str], str]], code: dict[str, str]) -> SweepRecord:
        """``planned``: trial id -> (axis labels, manifest fingerprint), in grid order."""
        return cls(
            name=spec.name,
            experiment=spec.experiment,
            preset=spec.preset,
            analysis=spec.analysis,
            description=spec.description,
            reproduces=spec.reproduces,
            axes=[
                AxisRecord(a.name, a.role, [_jsonable(v) for v in a.values], [a.label(i) for i in range(len(a.values))])
                for a in spec.axes
            ],
            base=spec.base.to_dict(),
            data_root=spec.base.data.root,
            trials={tid: point for tid, (point, _) in planned.items()},
            fingerprints={tid: fingerprint for tid, (_, fingerprint) in planned.items()},
            code=dict(code),
            overrides=list(spec.overrides),
            refined=list(spec.refined),
            contrasts=list(spec.contrasts),
            derived=list(spec.derived),
        )

    def spec(self) -> SweepSpec:
        """The declaration this sweep ran, rebuilt exactly (no guessing from names); an older record's
        contrasts and derived arms inferred from its axes."""
        axes = tuple(a.axis() for a in self.axes)
        contrasts, derived = inferred_arms(axes, self.analysis)
        return SweepSpec(
            name=self.name,
            base=TrialConfig.from_dict(self.base),
            axes=axes,
            description=self.description,
            reproduces=self.reproduces,
            experiment=self.experiment,
            preset=self.preset,
            analysis=self.analysis,
            overrides=tuple(self.overrides),
            refined=tuple(self.refined),
            contrasts=contrasts if self.contrasts is None else tuple(self.contrasts),
            derived=derived if self.derived is None else tuple(self.derived),
        )

    def begin(self, backend: str, skipped: int, pending: int) -> Invocation:
        invocation = Invocation(
            _now(), backend, len(self.trials), skipped, pending, host=socket.gethostname(), pid=os.getpid()
        )
        self.invocations.append(invocation)
        return invocation

    def carry_history(self, earlier: SweepRecord | None) -> None:
        """Keep the invocations of an earlier record of the same sweep."""
        if earlier is not None:
            self.invocations = [*earlier.invocations, *self.invocations]

    def write(self, folder: Path) -> Path:
        return write_json(folder / SWEEP_RECORD, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> SweepRecord | None:
        """The folder's record; None when it has none (a folder of an older finalbn)."""
        path = folder / SWEEP_RECORD
        if not path.exists():
            return None
        try:
            record = read_json(path, cls)
            if record.format != RECORD_FORMAT:
                raise RecordError(f"format {record.format!r}, expected {RECORD_FORMAT}")
        except RecordError as error:
            raise UserError(
                f"{path} does not read as a finalbn sweep record ({error}): move it aside and rerun the sweep "
                "command to write it again"
            ) from None
        return record


def inferred_arms(axes: tuple[Axis, ...], analysis: str) -> tuple[tuple[Contrast, ...], tuple[Derived, ...]]:
    """The contrasts and derived arms of a sweep recorded before they were, from its axes (what the
    experiments declared then, finalbn.sweep.experiments):

    - a ``model.final_norm`` axis holding bn and none: bn vs none, and the derived arm ``removed`` (the
      bn trials' nobn_* metrics); the bn_removal analysis also bn vs removed and removed vs none;
    - a ``variant`` axis (the headline sweep): final_BN vs plain, then final_BN vs WL, those it holds, and
      the derived arm ``final_BN_removed``;
    - the batch_size analysis (final BN in every trial, no axis for it): bn vs removed.
    Any other sweep gets none.
    """
    contrasts: list[Contrast] = []
    derived: list[Derived] = []
    for axis in axes:
        labels = {axis.label(i) for i in range(len(axis.values))}
        if axis.name == FINAL_NORM and {"bn", "none"} <= labels:
            contrasts.append(Contrast(FINAL_NORM, "bn", "none"))
            derived.append(REMOVED)
            if analysis == "bn_removal":
                contrasts += [Contrast(FINAL_NORM, "bn", "removed"), Contrast(FINAL_NORM, "removed", "none")]
        elif axis.name == "variant" and "final_BN" in labels:
            contrasts += [Contrast("variant", "final_BN", other) for other in ("plain", "WL") if other in labels]
            derived.append(HEADLINE_REMOVED)
    if analysis == "batch_size":
        contrasts.append(Contrast(FINAL_NORM, "bn", "removed"))
        derived.append(REMOVED)
    return tuple(contrasts), tuple(derived)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _hashable(value: Any) -> Any:
    """JSON lists back to the tuples the frozen configs hold."""
    if isinstance(value, dict):
        return {k: _hashable(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value

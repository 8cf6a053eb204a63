"""``--refine``: find the imbalance threshold by bisecting its bracket on log ratio, in rounds of ordinary trials.

After the grid's trials finish, the analysis names, per group, the two swept
ratios the threshold lies between (``finalbn.analysis.imbalance.refine_brackets``,
passed in: the sweep core does not import the analysis). Each bracket wider
than ``factor`` (upper / lower) gets its geometric midpoint, rounded to whole
minority images, as a new value of the ``data.train_minority`` axis; the
widened sweep goes through ``run_sweep`` again, so the new points are trials
like any other (ids from their configs, resume, MLflow children, sweep.json)
on every backend. Rounds repeat until every bracket is narrower than
``factor``, cannot be split (adjacent integers), or the next point would
spend more than ``budget`` trials in all.

Why rounds of run_sweep and not a Ray Tune ``Searcher``: a Searcher runs only
inside Tune (the ray backend), while the serial and Slurm backends must refine
too, and its state would live in Tune's experiment restore, which this
package does not trust for resuming (finalbn.sweep.plan). Bisection is
sequential anyway (a round's midpoints depend on the last round's results);
within a round the backend runs the new points in parallel.

Resuming: the values added are recorded in sweep.json (``refined``) and a
rerun of the same command starts from the grid plus them, so their finished
trials are skipped; the budget counts them, so a rerun adds nothing new once
the search has stopped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finalbn.errors import UserError
from finalbn.launch.base import Backend
from finalbn.records.folders import SWEEP_RECORD
from finalbn.sweep.driver import SweepReport, run_sweep
from finalbn.sweep.options import SweepOptions
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import Tracker

MINORITY = "data.train_minority"
EXPERIMENT = "imbalance_ratio"

# (sweep folder, spec) -> the threshold's brackets in minority training images, one per group.
Brackets = Callable[[Path, SweepSpec], list[tuple[int, int]]]


@dataclass(frozen=True)
class Refinement:
    # Stop once every bracket's upper / lower ratio is below this.
    factor: float
    # Most trials the refined points may cost in all, earlier invocations' included.
    budget: int


def check(spec: SweepSpec, refinement: Refinement) -> None:
    """One-line errors for a sweep --refine cannot bisect or settings it cannot meet."""
    if spec.experiment != EXPERIMENT:
        raise UserError(
            f"--refine bisects the imbalance threshold: it applies to sweeps/{EXPERIMENT}.py only, not {spec.name}"
        )
    if refinement.factor <= 1:
        raise UserError(f"--refine-factor {refinement.factor}: use a ratio above 1 (e.g. 1.5)")
    if refinement.budget < 0:
        raise UserError(f"--refine-budget {refinement.budget}: use 0 or more trials")
    axis = _axis(spec)
    if axis.role != "scientific" or len(axis.values) < 2:
        raise UserError(f"--refine needs two or more values of {MINORITY}; this sweep has {len(axis.values)}")


def refine_sweep(
    spec: SweepSpec,
    options: SweepOptions,
    backend: Backend,
    tracker: Tracker,
    refinement: Refinement,
    brackets: Brackets,
) -> SweepReport:
    """The grid, then bisection rounds; the report sums the rounds (its spec: the last, widened one)."""
    check(spec, refinement)
    spec = recorded(spec, options.out / spec.name)
    reports = []
    while True:
        report = run_sweep(spec, options, backend, tracker)
        reports.append(report)
        if report.detached:
            stop = "the trials run on the cluster; rerun the command when they are done (or add --wait)"
        elif report.failed:
            stop = f"{len(report.failed)} trial(s) failed; rerun the command to retry them and refine on"
        else:
            added, stop = next_values(spec, brackets(report.folder, spec), refinement)
            if added:
                spec = widened(spec, added)
                cost = len(added) * trials_per_value(spec)
                print(f"--refine: bisecting, adding {MINORITY} {', '.join(map(str, added))} ({cost} trials)")
                continue
        # The caller prints the report's notes.
        return _combined(reports, f"--refine stopped: {stop}")


def recorded(spec: SweepSpec, folder: Path) -> SweepSpec:
    """``spec`` with the values an earlier --refine of the same sweep added (sweep.json), so a rerun resumes."""
    record = SweepRecord.read(folder) if folder.is_dir() else None
    if record is None or not record.refined:
        return spec
    if record.spec().base != spec.base or tuple(record.overrides) != spec.overrides:
        print(f"--refine: {folder / SWEEP_RECORD} records another base or overrides; its refined points are not reused")
        return spec
    return widened(spec, [v for v in record.refined if v not in _axis(spec).values])


def next_values(spec: SweepSpec, found: list[tuple[int, int]], refinement: Refinement) -> tuple[list[int], str]:
    """The midpoints to add next (widest bracket first) and, when none, why the search stops."""
    if not found:
        return [], "no threshold lies within the swept ratios (the headline says why), so there is no bracket"
    present = set(_axis(spec).values)
    wide = sorted({b for b in found if b[1] / b[0] >= refinement.factor}, key=lambda b: b[0] / b[1])
    if not wide:
        return [], f"every bracket is narrower than a factor {refinement.factor:g}"
    cost = trials_per_value(spec)
    spent = len(spec.refined) * cost
    added: list[int] = []
    for low, high in wide:
        middle = round(math.sqrt(low * high))
        if not low < middle < high or middle in present or middle in added:
            continue
        if spent + cost * (len(added) + 1) > refinement.budget:
            return added, f"the next point would pass the budget of {refinement.budget} trials ({spent} spent)"
        added.append(middle)
    if not added:
        return [], "the brackets wider than the factor hold no whole number of minority images between their ends"
    return added, ""


def widened(spec: SweepSpec, values: list[int]) -> SweepSpec:
    """``spec`` with ``values`` added to the minority axis (kept sorted, so tables and figures read in order)."""
    if not values:
        return spec
    axis = _axis(spec)
    axes = tuple(
        dataclasses.replace(a, values=tuple(sorted({*a.values, *values}))) if a is axis else a for a in spec.axes
    )
    return dataclasses.replace(spec, axes=axes, refined=(*spec.refined, *values))


def trials_per_value(spec: SweepSpec) -> int:
    """Trials one minority value costs: every combination of the other axes (final BN, seeds, ...)."""
    return spec.size() // len(_axis(spec).values)


def _axis(spec: SweepSpec) -> Axis:
    axis = next((a for a in spec.axes if a.name == MINORITY), None)
    if axis is None:
        raise UserError(f"--refine needs a {MINORITY} axis; this sweep has {', '.join(a.name for a in spec.axes)}")
    return axis


def _combined(reports: list[SweepReport], note: str) -> SweepReport:
    first, last = reports[0], reports[-1]
    return dataclasses.replace(
        last,
        skipped=first.skipped,
        finished=[t for r in reports for t in r.finished],
        notes=[*(n for r in reports for n in r.notes), note],
        seconds=sum(r.seconds for r in reports),
    )

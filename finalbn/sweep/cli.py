"""The command line every ``sweeps/<experiment>.py`` script shares.

Its flags are generated from the option dataclasses (finalbn.sweep.options, and finalbn.launch.slurm's
``SlurmOptions``), each field's comment its help; argv becomes a ``SweepCommand`` once, and only typed
options travel from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finalbn.config import field_docs
from finalbn.console import OneLineParser, guarded, table_format
from finalbn.errors import UserError
from finalbn.records import folders
from finalbn.sweep.experiments import PLANTS, build_sweeps
from finalbn.sweep.options import (
    AUTO,
    DataOptions,
    OverrideOptions,
    RayOptions,
    RefineOptions,
    ScriptOptions,
    SweepOptions,
    TrackingOptions,
)
from finalbn.sweep.overrides import apply
from finalbn.sweep.spec import SweepSpec, own_name

if TYPE_CHECKING:
    from finalbn.launch.base import Backend
    from finalbn.launch.slurm import SlurmOptions
    from finalbn.sweep.refine import Refinement


@dataclasses.dataclass(frozen=True)
class SweepCommand:
    """A sweep script's command line, parsed: one typed object per concern, in --help's order."""

    script: ScriptOptions
    data: DataOptions
    overrides: OverrideOptions
    refine: RefineOptions
    run: SweepOptions
    tracking: TrackingOptions
    ray: RayOptions
    slurm: SlurmOptions


# Each concern's heading in --help; None: among the script's own options, at the top.
TITLES = {
    "script": None,
    "data": "data (your own images: README, Your own images, and docs/own-data.md)",
    "overrides": f"overrides (recorded in {folders.SWEEP_RECORD}; they change trial ids)",
    "refine": "threshold search (sweeps/imbalance_ratio.py only)",
    "run": "running the trials",
    "tracking": "MLflow tracking",
    "ray": "--backend ray (README: Clusters, and docs/cluster.md)",
    "slurm": "--backend slurm (README: Clusters, and docs/cluster.md)",
}


@dataclasses.dataclass(frozen=True)
class Form:
    """A field whose flag reads another form than the field holds."""

    flag: str
    metavar: str
    # The flag's default as typed, shown by --help.
    default: Any
    parse: Callable[[Any], Any]
    repeat: Literal["append"] | None = None


def _forms() -> dict[str, Form]:
    """SlurmOptions' fields typed in Slurm's own forms (its time limits, sbatch's KEY=VALUE)."""
    from finalbn.launch.slurm import parse_extra, parse_time

    return {
        "time_minutes": Form("--time", "TIME", "60", parse_time),
        "extra": Form("--sbatch", "KEY=VALUE", [], lambda pairs: parse_extra(list(pairs)), repeat="append"),
    }


# How often --wait looks at an array is the code's choice, not a flag.
NOT_FLAGS = frozenset({"poll_seconds"})


def concerns() -> dict[str, type]:
    """SweepCommand's fields and the dataclass of each."""
    from finalbn.launch.slurm import SlurmOptions

    hints = typing.get_type_hints(SweepCommand, localns={"SlurmOptions": SlurmOptions})
    return {f.name: hints[f.name] for f in dataclasses.fields(SweepCommand)}


def flag_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name not in NOT_FLAGS]


def run_script(experiment: str, doc: str | None, argv: Sequence[str] | None = None) -> int:
    args = sweep_parser(experiment, doc).parse_args(argv)
    # Made inside the guard: an option's own check is a one-line error like any other.
    return guarded(lambda: _run(experiment, command_of(args)), debug=args.debug)


def sweep_parser(experiment: str, doc: str | None) -> argparse.ArgumentParser:
    """Everything here parses without importing torch, Ray or MLflow, so --help answers at once."""
    parser = OneLineParser(
        prog=f"python sweeps/{experiment}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    forms = _forms()
    for concern, cls in concerns().items():
        title = TITLES[concern]
        group = parser if title is None else parser.add_argument_group(title)
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for field in flag_fields(cls):
            # "%" is argparse's format character.
            help_text = docs[field.name].replace("%", "%%")
            _add_flag(group, field, hints[field.name], help_text, forms.get(field.name))
    return parser


def command_of(args: argparse.Namespace) -> SweepCommand:
    """The parsed flags as typed options; each dataclass checks its own values as it is made."""
    values = vars(args)
    forms = _forms()
    parts = {}
    for concern, cls in concerns().items():
        given = {}
        for field in flag_fields(cls):
            value = values[field.name]
            form = forms.get(field.name)
            given[field.name] = form.parse(value) if form else tuple(value) if isinstance(value, list) else value
        parts[concern] = cls(**given)
    return SweepCommand(**parts)


def _add_flag(
    group: argparse._ActionsContainer, field: dataclasses.Field[Any], hint: Any, help_text: str, form: Form | None
) -> None:
    """One field's flag, named after it (dest too), its type read from the field's type hint."""
    if form is not None:
        action = form.repeat or "store"
        group.add_argument(
            form.flag, dest=field.name, action=action, default=form.default, metavar=form.metavar, help=help_text
        )
        return
    flag = "--" + field.name.replace("_", "-")
    metavar, repeat = field.metadata.get("metavar"), field.metadata.get("repeat")
    kind = _value_type(hint)
    if kind is bool:
        group.add_argument(flag, action="store_true", help=help_text)
    elif typing.get_origin(kind) is Literal:
        group.add_argument(flag, default=field.default, choices=typing.get_args(kind), help=help_text)
    elif kind is tuple:
        nargs = None if repeat == "append" else "+"
        action = repeat or "store"
        group.add_argument(flag, nargs=nargs, action=action, default=[], metavar=metavar, help=help_text)
    else:
        group.add_argument(flag, type=kind, default=field.default, metavar=metavar, help=help_text)


def _value_type(hint: Any) -> Any:
    """What a flag's text becomes: str | None -> str; float | "auto" -> _gpus; tuple[str, ...] -> tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if any(typing.get_origin(arg) is Literal and AUTO in typing.get_args(arg) for arg in options):
            return _gpus
        [hint] = options
    origin = typing.get_origin(hint)
    return hint if origin in (None, Literal) else origin


def _run(experiment: str, command: SweepCommand) -> None:
    from finalbn.launch import BackendOptions, build_backend
    from finalbn.records import check_writable

    script, run = command.script, command.run
    declared = build_sweeps(experiment, script.preset, command.data.declared())
    overrides = command.overrides.overrides()
    specs = [own_name(apply(spec, overrides), command.overrides.folder(spec.name, len(declared))) for spec in declared]
    if script.strict:
        _refuse_unreadable(specs)
    if command.refine.refine:
        from finalbn.sweep.refine import check

        for spec in specs:
            check(spec, _refinement(spec, command.refine))
    # Built before any work, so a bad cluster flag fails first.
    backend = build_backend(script.backend, BackendOptions(out=run.out, ray=command.ray, slurm=command.slurm))
    if run.gpus_per_trial == AUTO:
        run = dataclasses.replace(run, gpus_per_trial=_pack_gpus(specs, backend))
    # After the flags' own checks, which need no cluster; the backend asks its cluster once, so the
    # driver's own preflight costs nothing.
    backend.preflight()
    # The smoke preset makes a few steps on purpose: it tests the plumbing, not the learning.
    if script.preset != "smoke":
        _warn_few_steps(specs)
    if script.dry_run:
        from finalbn.sweep.plan import check

        for spec in specs:
            print(dry_run(spec, run.out))
            # What planning checks, in memory: a dry run passes only where a real run would start.
            for note in check(spec, download=False).notes:
                print(f"  checked {note}")
            if script.calibrate:
                print(calibrated_estimate(spec, backend.slots(run.max_concurrent, run.cpus_per_trial), run))
        return
    if backend.runs_here:
        # Elsewhere the GPUs are on the cluster's nodes, not on this machine.
        _check_gpus(run.gpus_per_trial)
    # The last check, and before the MLflow store is opened: a bad --out leaves no mlruns.db behind.
    check_writable(run.out)
    failed = 0
    for spec in specs:
        failed += _run_one(spec, command, run, backend)
    if failed:
        raise SystemExit(1)


def _run_one(spec: SweepSpec, command: SweepCommand, run: SweepOptions, backend: Backend) -> int:
    from finalbn.sweep import run_sweep, summary_table
    from finalbn.tracking import MlflowTracker, NullTracker

    uri = command.tracking.uri()
    if uri is None:
        tracker = NullTracker()
    else:
        tracker = MlflowTracker(uri, artifact_root=run.out.resolve() / folders.MLFLOW_ARTIFACTS)
    if command.refine.refine:
        from finalbn.analysis.imbalance import refine_brackets
        from finalbn.sweep.refine import refine_sweep

        report = refine_sweep(spec, run, backend, tracker, _refinement(spec, command.refine), refine_brackets)
    else:
        report = run_sweep(spec, run, backend, tracker)
    # A refined sweep's spec holds the points the search added.
    spec = report.spec
    for line in report.notes:
        print(line)
    if report.detached:
        print(f"{spec.name}: {report.skipped} finished so far of {report.total}")
        return 0
    print(
        f"{spec.name}: {len(report.finished)} trained, {report.skipped} skipped (finished earlier), "
        + (f"{len(report.by_others)} trained by another driver, " if report.by_others else "")
        + f"{len(report.failed)} failed, in {report.seconds:.0f} s"
    )
    table = summary_table(report.folder, spec)
    if table is not None:
        with table_format():
            print(f"test F1 (final model) by scientific axis, mean over seeds:\n{table}")
    epochs, trials = report.folder / folders.EPOCHS_TABLE, report.folder / folders.TRIALS_TABLE
    print(f"results: {epochs} (trial x epoch), {trials} (trial)")
    for line in tracker.where():
        print(line)
    if report.finished or report.skipped:
        _report(report.folder, spec, uri)
    for trial_id in report.failed:
        print(f"failed: {report.folder / folders.TRIALS / trial_id / folders.FAILURE} (rerun the command to retry)")
    return len(report.failed)


def _refinement(spec: SweepSpec, options: RefineOptions) -> Refinement:
    from finalbn.sweep.refine import Refinement

    budget = spec.size() if options.refine_budget is None else options.refine_budget
    return Refinement(factor=options.refine_factor, budget=budget)


def _report(folder: Path, spec: SweepSpec, uri: str | None) -> None:
    """The analysis report of what is finished (thresholds, optimum, tables, figures).

    Grad-CAM is left to `python analysis/report.py`: it retrains two trials,
    which would double the main job's time.
    """
    from finalbn.analysis.report import write_report

    try:
        result = write_report(folder, spec, tracking_uri=uri, gradcam=False)
    except UserError as error:
        print(f"no report: {error}")
        return
    print(result.headline)
    print(f"report: {result.html}")


def dry_run(spec: SweepSpec, out: Path = Path("results")) -> str:
    """The grid, the trials per axis value and a cost estimate, without training."""
    from finalbn.sweep.costs import TRIAL_SETUP_SECONDS, assumed_sweep_seconds

    lines = [f"{spec.name} ({spec.reproduces or 'custom'}): {spec.size()} trials", f"  results: {out / spec.name}"]
    if spec.overrides:
        lines.append(f"  overrides: {' '.join(spec.overrides)}")
    data = spec.base.data
    if data.source == "folder":
        pooled = " (pooled into one class)" if data.pool_minority else ""
        lines.append(
            f"  data: the class folders in {data.root}: majority {', '.join(data.majority)}, minority "
            f"{', '.join(data.minority)}{pooled}; one data set in place of PlantVillage, so the thesis' plant "
            f"axis ({', '.join(PLANTS)}) does not apply"
        )
    for axis in spec.axes:
        labels = ", ".join(axis.label(i) for i in range(len(axis.values)))
        per_value = spec.size() // len(axis.values)
        lines.append(f"  {axis.name} [{axis.role}]: {labels}  ({len(axis.values)} values, {per_value} trials each)")
    if spec.derived:
        scored = ", ".join(f"{d.label} (from {d.source})" for d in spec.derived)
        lines.append(f"  scored from trained runs' outputs, no training: {scored}")
    if spec.contrasts:
        lines.append(f"  compared, paired by seed: {'; '.join(c.text() for c in spec.contrasts)}")
    for device, where in (("cpu", "one CPU core, measured on a 2-core machine"), ("gpu", "one H100, assumed")):
        seconds = assumed_sweep_seconds([trial.config for trial in spec.trials()], device)
        lines.append(f"  estimated cost on {device}: {_duration(seconds)} ({seconds:.0f} trial-seconds; {where})")
    setup = ", ".join(f"{TRIAL_SETUP_SECONDS[device]:g} s on {device}" for device in ("cpu", "gpu"))
    lines.append(
        "  (assumed per-image forward costs; frozen trials without DA/MX train on features extracted once per "
        f"image of each pool's largest draw; every trial adds {setup} for set-up, head and scoring, the whole "
        "cost of a trial on cached features; --calibrate measures instead)"
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """Hours, or minutes for a sweep under an hour, so that no estimate prints as zero."""
    return f"{seconds / 3600:.2f} hours" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def calibrated_estimate(spec: SweepSpec, workers: int, run: SweepOptions) -> str:
    """The sweep's predicted wall time on ``workers`` trial slots, from one trial timed for two epochs here."""
    from finalbn.sweep.costs import calibrate, epoch_work, makespan

    trials = list(spec.trials())
    probe = max(trials, key=lambda trial: epoch_work(trial.config)).config
    calibration = calibrate(probe, threads=max(1, int(run.cpus_per_trial)))
    seconds = [calibration.trial_seconds(trial.config) for trial in trials]
    wall = makespan(seconds, workers)
    return (
        f"  calibrated on this machine ({calibration.device}, the costliest trial for 2 epochs: "
        f"{calibration.setup_seconds:.1f} s set-up + {calibration.epoch_seconds:.2f} s per epoch):\n"
        f"  predicted {sum(seconds):.0f} trial-seconds on {workers} workers = {wall / 60:.1f} min wall"
    )


def _refuse_unreadable(specs: list[SweepSpec]) -> None:
    """--strict: the data's unreadable files stop the sweep before it starts, named by reason and count."""
    from finalbn.sweep.plan import check

    for spec in specs:
        for data, manifest in check(spec, download=False).manifests.items():
            if manifest.skipped:
                counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(manifest.skipped.items()))
                raise UserError(
                    f"--strict: {data.root or data.source} has unreadable files ({counts}): remove them, or drop "
                    "--strict to skip and count them"
                )


def _warn_few_steps(specs: list[SweepSpec]) -> None:
    """One line for all the trials that make too few optimizer steps to learn (a warning: they still run)."""
    from finalbn.config import class_counts
    from finalbn.train.recipe import MIN_STEPS, few_steps

    trials = [trial for spec in specs for trial in spec.trials()]
    few = [(t.config, *made) for t in trials if (made := few_steps(t.config, class_counts(t.config))) is not None]
    if not few:
        return
    example, steps, how = few[0]
    fix = (
        "raise --set train.steps=N"
        if example.train.steps is not None
        else "lower --set train.batch_size=N or raise --set train.epochs=N"
    )
    print(
        f"warning: {len(few)} of {len(trials)} trials will make fewer than {MIN_STEPS} optimizer steps "
        f"(e.g. {steps}: {how}), too few to learn: {fix}"
    )


def _gpus(text: str) -> float | str:
    """--gpus-per-trial: auto, or a finite number >= 0 (no number stands in for auto)."""
    if text == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto or a number >= 0, e.g. 0.25 packs four trials per GPU")
    return value


def _pack_gpus(specs: list[SweepSpec], backend: Backend) -> float:
    """--gpus-per-trial auto: 1/n of a GPU, n from the costliest trial's measured peak memory."""
    import torch

    from finalbn.sweep.costs import calibrate, epoch_work, trials_per_gpu

    if not backend.runs_here:
        raise UserError(
            "--gpus-per-trial auto calibrates on this machine's GPU: with a cluster backend give a fraction, "
            "e.g. --gpus-per-trial 0.25 (measure it once with --backend local on a GPU node)"
        )
    if not torch.cuda.is_available():
        print("--gpus-per-trial auto: no CUDA GPU here, trials run on CPU")
        return 0.0
    probe = max((t for spec in specs for t in spec.trials()), key=lambda t: epoch_work(t.config)).config
    calibration = calibrate(probe.replace(train={"device": "cuda"}))
    n = trials_per_gpu(calibration.peak_gpu_bytes, calibration.gpu_total_bytes)
    print(
        f"--gpus-per-trial auto: the costliest trial peaks at {calibration.peak_gpu_bytes / 2**30:.2f} GiB "
        f"of {calibration.gpu_total_bytes / 2**30:.0f} GiB: {n} trials per GPU ({1 / n:.3g} GPU each)"
    )
    return 1 / n


def _check_gpus(gpus_per_trial: float) -> None:
    if gpus_per_trial <= 0:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"--gpus-per-trial {gpus_per_trial} but this machine has no CUDA GPU: drop the flag to train on CPU"
        )

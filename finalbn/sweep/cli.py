"""The command line every ``sweeps/<experiment>.py`` script shares."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from finalbn.console import OneLineParser, guarded, table_format
from finalbn.errors import UserError
from finalbn.names import is_utf8
from finalbn.sweep.experiments import PLANTS, PRESETS, ClassFolders, Data, build_sweeps
from finalbn.sweep.overrides import Overrides, apply
from finalbn.sweep.spec import SweepSpec, own_name

if TYPE_CHECKING:
    from finalbn.launch.base import Backend
    from finalbn.sweep.refine import Refinement


def run_script(experiment: str, doc: str | None, argv: Sequence[str] | None = None) -> int:
    parser = sweep_parser(experiment, doc)
    args = parser.parse_args(argv)
    return guarded(lambda: _run(experiment, args), debug=args.debug)


def sweep_parser(experiment: str, doc: str | None) -> argparse.ArgumentParser:
    """Everything here parses without importing torch, Ray or MLflow, so --help answers at once."""
    parser = OneLineParser(
        prog=f"python sweeps/{experiment}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="laptop", choices=PRESETS, help="grid size (default: laptop)")
    parser.add_argument("--data", help="data root (PlantVillage folder; full MNIST folder for mnist --preset paper)")
    _source_flags(parser.add_argument_group("your own images (README: Your own images, and docs/own-data.md)"))
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its estimated cost, train nothing")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse to start when any image under --data is unreadable (zero-byte, corrupt, too small) instead of "
        "skipping and counting it",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="with --dry-run: time one trial for two epochs here and predict the sweep's wall time from it",
    )
    _override_flags(parser.add_argument_group("overrides (recorded in sweep.json; they change trial ids)"))
    _refine_flags(parser.add_argument_group("threshold search (sweeps/imbalance_ratio.py only)"))
    _run_flags(parser)
    _cluster_flags(parser.add_argument_group("clusters (--backend ray / slurm; README: Clusters, and docs/cluster.md)"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser


def _source_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--source",
        default="plantvillage",
        choices=("plantvillage", "folder"),
        help="what --data holds: PlantVillage's <Plant>___<condition> folders (default), or any tree of one "
        "folder per class, named with --majority and --minority",
    )
    group.add_argument("--majority", nargs="+", default=[], metavar="FOLDER", help="--source folder: majority classes")
    group.add_argument("--minority", nargs="+", default=[], metavar="FOLDER", help="--source folder: minority classes")
    group.add_argument(
        "--pool-minority",
        action="store_true",
        help="--source folder: merge the minority folders into one class, as PlantVillage pools its diseases",
    )


def _override_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change the base config, e.g. --set train.lr=3e-3 model.backbone=resnet18 (tuples: a+b)",
    )
    group.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="replace or add an axis, e.g. --axis data.train_minority=5,10,20; a joint axis by label: "
        "--axis variant=plain,final_BN",
    )
    group.add_argument("--seeds", type=int, metavar="N", help="seed axis 0..N-1 instead of the preset's")
    group.add_argument(
        "--name",
        help="results folder and MLflow experiment of this sweep (default: the preset's name, plus the overrides "
        "when any are given, so an overridden grid never overwrites the preset's tables and report; finished "
        "trials with the same id are reused from the other sweeps under --out)",
    )


def _refine_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--refine",
        action="store_true",
        help="after the grid, bisect the threshold's bracket of data.train_minority on log ratio, in rounds",
    )
    group.add_argument(
        "--refine-factor",
        type=float,
        default=1.5,
        help="stop once every bracket's upper / lower ratio is below this (default 1.5)",
    )
    group.add_argument(
        "--refine-budget",
        type=int,
        metavar="N",
        help="most trials the refined points may cost in all (default: as many as the grid)",
    )


def _run_flags(parser: argparse.ArgumentParser) -> None:
    from finalbn.launch import BACKENDS

    parser.add_argument("--backend", default="local", choices=BACKENDS.names(), help="where trials run")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as resources allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU cores per trial (default 1)")
    parser.add_argument(
        "--gpus-per-trial",
        type=_gpus,
        default=0.0,
        help="GPUs per trial; 0.25 packs four per GPU; auto packs by a calibration trial's peak memory",
    )
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed trial (default 2)")
    parser.add_argument(
        "--keep-stale",
        action="store_true",
        help="reuse finished trials computed by other code (a file of finalbn's data, models, train or metrics "
        "changed since) instead of retraining them; trials.parquet then says which code made each",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs and tables")


def _cluster_flags(cluster: argparse._ArgumentGroup) -> None:
    cluster.add_argument("--address", help="--backend ray: the cluster's HOST:PORT (default: $RAY_ADDRESS)")
    cluster.add_argument("--partition", help="--backend slurm: partition (default: the cluster's default)")
    cluster.add_argument("--time", default="60", help="--backend slurm: time limit per array task (default 60 min)")
    cluster.add_argument("--account", help="--backend slurm: account to charge")
    cluster.add_argument("--qos", help="--backend slurm: quality of service")
    cluster.add_argument(
        "--array-parallelism", type=int, default=64, help="--backend slurm: array tasks at once (default 64)"
    )
    cluster.add_argument(
        "--trials-per-task",
        type=int,
        help="--backend slurm: trials per array task (default: fill half the time limit by the cost estimate)",
    )
    cluster.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--backend slurm: extra sbatch option, repeatable (e.g. --sbatch mem=16G --sbatch constraint=a100)",
    )
    cluster.add_argument(
        "--wait", action="store_true", help="--backend slurm: follow the array until it is done, then tabulate"
    )


def _run(experiment: str, args: argparse.Namespace) -> None:
    from finalbn.launch import build_backend
    from finalbn.records import check_writable

    _check_numbers(args)
    overrides = Overrides(sets=tuple(args.set), axes=tuple(args.axis), seeds=args.seeds)
    declared = build_sweeps(experiment, args.preset, _data(args))
    specs = [own_name(apply(spec, overrides), _name(args.name, spec, len(declared))) for spec in declared]
    if args.strict:
        _refuse_unreadable(specs)
    if args.refine:
        from finalbn.sweep.refine import check

        for spec in specs:
            check(spec, _refinement(spec, args))
    # Built before any work, so a bad cluster flag fails first.
    backend = build_backend(args.backend, args)
    if args.gpus_per_trial == AUTO:
        args.gpus_per_trial = _pack_gpus(specs, backend)
    # After the flags' own checks, which need no cluster.
    _check_reachable(args)
    # The smoke preset makes a few steps on purpose: it tests the plumbing, not the learning.
    if args.preset != "smoke":
        _warn_few_steps(specs)
    if args.dry_run:
        from finalbn.sweep.plan import check

        for spec in specs:
            print(dry_run(spec, args.out))
            # What planning checks, in memory: a dry run passes only where a real run would start.
            for note in check(spec, download=False).notes:
                print(f"  checked {note}")
            if args.calibrate:
                print(calibrated_estimate(spec, backend.slots(args.max_concurrent, args.cpus_per_trial), args))
        return
    if backend.runs_here:
        # Elsewhere the GPUs are on the cluster's nodes, not on this machine.
        _check_gpus(args.gpus_per_trial)
    # The last check, and before the MLflow store is opened: a bad --out leaves no mlruns.db behind.
    check_writable(args.out)
    failed = 0
    for spec in specs:
        failed += _run_one(spec, args, backend)
    if failed:
        raise SystemExit(1)


def _run_one(spec: SweepSpec, args: argparse.Namespace, backend: Backend) -> int:

    from finalbn.sweep import SweepOptions, run_sweep, summary_table
    from finalbn.tracking import MlflowTracker, NullTracker, default_tracking_uri

    options = SweepOptions(
        out=args.out,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        retries=args.retries,
        verbose=args.verbose,
        keep_stale=args.keep_stale,
    )
    uri = None if args.no_tracking else args.tracking_uri or default_tracking_uri(Path.cwd())
    if uri is None:
        tracker = NullTracker()
    else:
        tracker = MlflowTracker(uri, artifact_root=args.out.resolve() / "mlartifacts")
    if args.refine:
        from finalbn.analysis.imbalance import refine_brackets
        from finalbn.sweep.refine import refine_sweep

        report = refine_sweep(spec, options, backend, tracker, _refinement(spec, args), refine_brackets)
    else:
        report = run_sweep(spec, options, backend, tracker)
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
    print(f"results: {report.folder / 'epochs.parquet'} (trial x epoch), {report.folder / 'trials.parquet'} (trial)")
    for line in tracker.where():
        print(line)
    if report.finished or report.skipped:
        _report(report.folder, spec, uri)
    for trial_id in report.failed:
        print(f"failed: {report.folder / 'trials' / trial_id / 'failure.json'} (rerun the command to retry)")
    return len(report.failed)


def _refinement(spec: SweepSpec, args: argparse.Namespace) -> Refinement:
    from finalbn.sweep.refine import Refinement

    budget = spec.size() if args.refine_budget is None else args.refine_budget
    return Refinement(factor=args.refine_factor, budget=budget)


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


def calibrated_estimate(spec: SweepSpec, workers: int, args: argparse.Namespace) -> str:
    """The sweep's predicted wall time on ``workers`` trial slots, from one trial timed for two epochs here."""
    from finalbn.sweep.costs import calibrate, epoch_work, makespan

    trials = list(spec.trials())
    probe = max(trials, key=lambda trial: epoch_work(trial.config)).config
    calibration = calibrate(probe, threads=max(1, int(args.cpus_per_trial)))
    seconds = [calibration.trial_seconds(trial.config) for trial in trials]
    wall = makespan(seconds, workers)
    return (
        f"  calibrated on this machine ({calibration.device}, the costliest trial for 2 epochs: "
        f"{calibration.setup_seconds:.1f} s set-up + {calibration.epoch_seconds:.2f} s per epoch):\n"
        f"  predicted {sum(seconds):.0f} trial-seconds on {workers} workers = {wall / 60:.1f} min wall"
    )


def _name(given: str | None, spec: SweepSpec, declared: int) -> str | None:
    """--name, checked to be one folder name; an experiment that declares several sweeps puts each under its own."""
    if given is None:
        return None
    if not given.strip(". ") or "/" in given or not given.isprintable() or not is_utf8(given):
        raise UserError(f"--name {given!r}: give one folder name (no '/', not '.' or '..', printable UTF-8)")
    return given if declared == 1 else f"{given}-{spec.name}"


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


def _data(args: argparse.Namespace) -> Data:
    """What --data names, checked to be a folder before any sweep is declared on it."""
    if args.data is not None and not Path(args.data).expanduser().is_dir():
        raise UserError(f"--data {args.data} is not a folder: point --data at the data root")
    root = str(Path(args.data).expanduser().resolve()) if args.data else None
    if args.source == "plantvillage":
        named = [flag for flag in ("majority", "minority", "pool_minority") if getattr(args, flag)]
        if named:
            flag = f"--{named[0].replace('_', '-')}"
            raise UserError(f"{flag} names class folders of --source folder: add --source folder, or drop {flag}")
        return root
    if root is None or not args.majority or not args.minority:
        raise UserError(
            "--source folder needs --data DIR --majority A [...] --minority B [...], class folders under DIR"
        )
    return ClassFolders(root, tuple(args.majority), tuple(args.minority), args.pool_minority)


def _check_reachable(args: argparse.Namespace) -> None:
    """The cluster a backend submits to answers (before planning, in a dry run too)."""
    if args.backend == "slurm":
        from finalbn.launch.slurm.submit import max_array_size

        # scontrol: a UserError when the Slurm client is missing or slurmctld does not answer.
        max_array_size()
    elif args.backend == "ray":
        address = args.address or os.environ.get("RAY_ADDRESS", "")
        host, _, port = address.removeprefix("ray://").rpartition(":")
        # "auto" and other forms without a port are Ray's own to resolve.
        if port.isdigit() and not _answers(host, int(port)):
            raise UserError(
                f"--address {address}: nothing answers at {host}:{port}; start the Ray head there "
                "(ray start --head) or use --backend local"
            )


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


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


def _check_numbers(args: argparse.Namespace) -> None:
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent {args.max_concurrent}: use 1 or more")
    if not args.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial {args.cpus_per_trial}: use a number > 0, e.g. 1 or 0.5")
    if args.retries < 0:
        raise UserError(f"--retries {args.retries}: use 0 or more")
    for flag in ("array_parallelism", "trials_per_task"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} {value}: use 1 or more")


AUTO = "auto"


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

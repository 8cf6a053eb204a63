"""The command line every ``sweeps/<experiment>.py`` script shares."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from finalbn.cli import OneLineParser, guarded
from finalbn.config import TrialConfig
from finalbn.errors import UserError
from finalbn.experiments import PRESETS, build_sweeps
from finalbn.spec import SweepSpec

# Dry-run cost model: seconds per image for one forward pass at 224 px, by
# backbone and device. CPU numbers were measured on this project's 2-core
# machines; GPU numbers are assumptions for one H100 with mixed precision.
# A backward pass is counted as two forwards; a frozen backbone skips it.
FORWARD_SECONDS = {
    "resnet18": {"cpu": 0.030, "gpu": 0.0002},
    "resnet34": {"cpu": 0.060, "gpu": 0.0003},
    "vgg19": {"cpu": 0.200, "gpu": 0.0008},
    "vgg19_bn": {"cpu": 0.210, "gpu": 0.0009},
    # simple_cnn and fc128 are costed at their own input size, not 224 px.
    "simple_cnn": {"cpu": 0.0003, "gpu": 0.00002},
    "fc128": {"cpu": 0.00002, "gpu": 0.000005},
}
SMALL_INPUT_BACKBONES = ("simple_cnn", "fc128")


def run_script(experiment: str, doc: str | None, argv: Sequence[str] | None = None) -> int:
    parser = sweep_parser(experiment, doc)
    args = parser.parse_args(argv)
    return guarded(lambda: _run(experiment, args), debug=args.debug)


def sweep_parser(experiment: str, doc: str | None) -> argparse.ArgumentParser:
    from finalbn.launch import BACKENDS

    parser = OneLineParser(
        prog=f"python sweeps/{experiment}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="laptop", choices=PRESETS, help="grid size (default: laptop)")
    parser.add_argument("--data", help="data root (PlantVillage folder; full MNIST folder for mnist --preset paper)")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its estimated cost, train nothing")
    parser.add_argument("--backend", default="local", choices=BACKENDS.names(), help="where trials run")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as resources allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU cores per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; 0.25 packs four per GPU")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed trial (default 2)")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs and tables")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser


def _run(experiment: str, args: argparse.Namespace) -> None:
    _check_numbers(args)
    data = str(Path(args.data).resolve()) if args.data else None
    specs = build_sweeps(experiment, args.preset, data)
    if args.dry_run:
        for spec in specs:
            print(dry_run(spec))
        return
    _check_gpus(args.gpus_per_trial)
    failed = 0
    for spec in specs:
        failed += _run_one(spec, args)
    if failed:
        raise SystemExit(1)


def _run_one(spec: SweepSpec, args: argparse.Namespace) -> int:
    from finalbn.launch import BACKENDS
    from finalbn.sweep import SweepOptions, run_sweep, summary_table
    from finalbn.tracking import MlflowTracker, NullTracker, default_tracking_uri

    options = SweepOptions(
        out=args.out,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        retries=args.retries,
        verbose=args.verbose,
    )
    uri = None if args.no_tracking else args.tracking_uri or default_tracking_uri(Path.cwd())
    if uri is None:
        tracker = NullTracker()
    else:
        tracker = MlflowTracker(uri, artifact_root=args.out.resolve() / "mlartifacts")
    report = run_sweep(spec, options, BACKENDS.get(args.backend)(), tracker)
    print(
        f"{spec.name}: {len(report.finished)} trained, {report.skipped} skipped (finished earlier), "
        f"{len(report.failed)} failed, in {report.seconds:.0f} s"
    )
    table = summary_table(report.folder, spec)
    if table is not None:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(f"test F1 (final model) by scientific axis, mean over seeds:\n{table}")
    print(f"results: {report.folder / 'epochs.parquet'} (trial x epoch), {report.folder / 'trials.parquet'} (trial)")
    for line in tracker.where():
        print(line)
    if report.finished or report.skipped:
        _report(report.folder, spec, uri)
    for trial_id in report.failed:
        print(f"failed: {report.folder / 'trials' / trial_id / 'failure.json'} (rerun the command to retry)")
    return len(report.failed)


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


def dry_run(spec: SweepSpec) -> str:
    """The grid, the trials per axis value and a cost estimate, without training."""
    lines = [f"{spec.name} ({spec.reproduces or 'custom'}): {spec.size()} trials"]
    for axis in spec.axes:
        labels = ", ".join(axis.label(i) for i in range(len(axis.values)))
        per_value = spec.size() // len(axis.values)
        lines.append(
            f"  {axis.name} [{axis.role}]: {labels}  ({len(axis.values)} values, {per_value} trials each)"
        )
    for device, where in (("cpu", "one CPU core, measured on a 2-core machine"), ("gpu", "one H100, assumed")):
        seconds = sum(estimate_trial_seconds(trial.config, device) for trial in spec.trials())
        lines.append(f"  estimated cost on {device}: {seconds / 3600:.2f} hours ({seconds:.0f} trial-seconds; {where})")
    lines.append("  (assumed per-image forward costs, data loading excluded; not a calibration)")
    return "\n".join(lines)


def estimate_trial_seconds(config: TrialConfig, device: str) -> float:
    d, m, t = config.data, config.model, config.train
    majority, minority = _class_counts(config)
    train = d.train_majority * majority + d.train_minority * minority
    evaluated = (d.val_majority + d.test_majority) * majority + (d.val_minority + d.test_minority) * minority
    scale = 1.0 if m.backbone in SMALL_INPUT_BACKBONES else (d.image_size / 224) ** 2
    forward = FORWARD_SECONDS[m.backbone][device] * scale
    train_passes = 1 if m.unfreeze == "none" else 3
    return t.epochs * (train * train_passes + evaluated) * forward


def _class_counts(config: TrialConfig) -> tuple[int, int]:
    """(majority classes, minority classes) the data config will produce."""
    d = config.data
    if d.source == "plantvillage":
        return 1, 1
    return len(d.majority), 1 if d.pool_minority else len(d.minority)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent {args.max_concurrent}: use 1 or more")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.retries < 0:
        raise UserError(f"--retries {args.retries}: use 0 or more")


def _check_gpus(gpus_per_trial: float) -> None:
    if gpus_per_trial <= 0:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"--gpus-per-trial {gpus_per_trial} but this machine has no CUDA GPU: drop the flag to train on CPU"
        )


"""Command lines of the scripts in analysis/: report, threshold, batch optimum, Grad-CAM.

Every script reads a sweep the same way: ``--results results/NAME`` (or a
``trials.parquet`` path), or ``--experiment NAME``: the folder
``results/NAME`` when it exists, else the MLflow experiment of that name in
``--tracking-uri`` (default: $MLFLOW_TRACKING_URI, else ./mlruns.db, the
sweep scripts' default). A mistake prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finalbn.console import OneLineParser, guarded, table_format
from finalbn.errors import UserError
from finalbn.records.folders import (
    ANALYSIS_MODELS,
    CONFIG,
    FIGURES,
    GRADCAM,
    MLFLOW_STORE,
    MODEL,
    REPORT,
    SWEEP_RECORD,
    TRIALS_TABLE,
)

# The readers import the sweep driver and with it torch: loaded when a command runs, so --help answers at once.
if TYPE_CHECKING:
    from finalbn.analysis.load import SweepData


@dataclass(frozen=True)
class Source:
    data: SweepData
    # Tracking store that holds the sweep's MLflow experiment, when there is one to log to.
    tracking_uri: str | None


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, help=f"a sweep folder (results/NAME) or its {TRIALS_TABLE}")
    parser.add_argument("--results", type=Path, help="same as PATH")
    parser.add_argument("--experiment", help="sweep name, e.g. imbalance_ratio-laptop: results/NAME or MLflow")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow store to read --experiment from (default: $MLFLOW_TRACKING_URI, else "
        f"./{MLFLOW_STORE} if present)",
    )
    parser.add_argument(
        "--results-root", type=Path, default=Path("results"), help="where --experiment looks for NAME/ first"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")


def load_source(args: argparse.Namespace) -> Source:
    from finalbn.analysis.load import from_folder, from_mlflow, load_sweep

    path = args.results or args.path
    if path is not None and args.experiment:
        raise UserError("give either a results path or --experiment, not both")
    default_store = Path.cwd() / MLFLOW_STORE
    uri = args.tracking_uri or (f"sqlite:///{default_store}" if default_store.exists() else None)
    if path is not None:
        data = load_sweep(path)
        return Source(data, uri if _has_experiment(uri, data.mlflow_experiment) else None)
    if not args.experiment:
        raise UserError(f"nothing to analyse: pass results/NAME, a {TRIALS_TABLE} path, or --experiment NAME")
    folder = args.results_root / args.experiment
    if args.tracking_uri is None and folder.is_dir():
        data = from_folder(folder)
        return Source(data, uri if _has_experiment(uri, data.mlflow_experiment) else None)
    if uri is None:
        raise UserError(
            f"unknown experiment {args.experiment!r}: no {folder} folder and no MLflow store "
            f"(./{MLFLOW_STORE} or --tracking-uri); run the sweep first or pass its results folder"
        )
    return Source(from_mlflow(args.experiment, uri), uri)


def report_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python analysis/report.py",
        description=(
            "Write one self-contained HTML report (and a Markdown twin) of a sweep: the imbalance threshold or "
            "batch optimum with CIs, the thesis' tables with its numbers beside them, and its figures. "
            "Logged to the sweep's latest parent MLflow run when the sweep's MLflow experiment is found."
        ),
    )
    add_source_arguments(parser)
    parser.add_argument("--out", type=Path, help="report folder (default: <sweep folder>/report or reports/NAME)")
    cam = parser.add_mutually_exclusive_group()
    cam.add_argument("--gradcam", dest="gradcam", action="store_true", default=None, help="always draw Grad-CAM")
    cam.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="never draw Grad-CAM")
    parser.add_argument("--no-log", action="store_true", help="do not attach the report to MLflow")
    args = parser.parse_args(argv)
    return guarded(lambda: _report(args), debug=args.debug)


def _report(args: argparse.Namespace) -> None:
    from finalbn.analysis.report import build_report, log_report

    source = load_source(args)
    data = source.data
    out = args.out or (data.folder / REPORT if data.folder is not None else Path("reports") / data.name)
    result = build_report(data, out, gradcam=args.gradcam)
    if source.tracking_uri and not args.no_log:
        result = log_report(result, data.mlflow_experiment, source.tracking_uri)
    print(result.headline)
    for note in result.notes:
        print(f"note: {note}")
    print(f"report: {result.html}")
    print(f"markdown: {result.markdown}")
    if result.mlflow_run_id:
        print(f"logged to MLflow run {result.mlflow_run_id} (artifacts report/) in {source.tracking_uri}")


def threshold_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python analysis/threshold.py",
        description="The imbalance ratio beyond which the final-BN gain stops being meaningful, with its 95% CI.",
    )
    add_source_arguments(parser)
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="in F1 units: a gain is resolved while its 95%% CI lies above this (default 0: above no gain)",
    )
    args = parser.parse_args(argv)
    return guarded(lambda: _threshold(args), debug=args.debug)


def _threshold(args: argparse.Namespace) -> None:
    from finalbn.analysis.contrasts import NO_CONTRAST, arms_of, headline_contrast
    from finalbn.analysis.grid import AXIS
    from finalbn.analysis.imbalance import studied
    from finalbn.analysis.threshold import thresholds

    data = load_source(args).data
    contrast = headline_contrast(data.spec)
    if contrast is None:
        raise UserError(f"{data.name}: {NO_CONTRAST}; pass a sweep folder whose {SWEEP_RECORD} declares one")
    groups = [c for c in data.scientific_axes() if c.removeprefix(AXIS) not in studied(contrast)]
    for found in thresholds(arms_of(data.trials, data.spec).trials, contrast, by=groups, margin=args.margin):
        print(found.describe())
        with table_format():
            print(found.curve)


def batch_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python analysis/batch_optimum.py",
        description="The batch size with the best minority F1, its CI, and whether its neighbours are worse.",
    )
    add_source_arguments(parser)
    parser.add_argument("--metric", default="f1_minority", help="final test metric to maximise")
    args = parser.parse_args(argv)
    return guarded(lambda: _batch(args), debug=args.debug)


def _batch(args: argparse.Namespace) -> None:
    from finalbn.analysis.batch import batch_optima

    data = load_source(args).data
    groups = [c for c in data.scientific_axes() if c != "axis.train.batch_size"]
    for found in batch_optima(data.trials, metrics=(args.metric,), by=groups):
        print(found.describe())
        with table_format():
            print(found.curve)


def gradcam_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python analysis/gradcam.py",
        description=(
            "Grad-CAM maps of the minority class for a trial with final BN and one without, side by side "
            f"(Figure 4.4). Trials are trained again from their {CONFIG} when no {MODEL} is kept."
        ),
    )
    add_source_arguments(parser)
    parser.add_argument("--trial", help="trial id with final BN (default: the report's choice)")
    parser.add_argument("--against", help="trial id without final BN (default: --trial with its BN removed)")
    parser.add_argument("--count", type=int, default=4, help="minority test images to show")
    parser.add_argument("--out", type=Path, help=f"PNG path (default: <sweep folder>/{REPORT}/{FIGURES}/{GRADCAM})")
    parser.add_argument(
        "--cache", type=Path, help=f"where retrained models go (default: <sweep>/{'/'.join(ANALYSIS_MODELS)})"
    )
    args = parser.parse_args(argv)
    return guarded(lambda: _gradcam(args), debug=args.debug)


def _gradcam(args: argparse.Namespace) -> None:
    import tempfile

    from finalbn.analysis.compare import Arm, Comparison, choose_comparison
    from finalbn.analysis.figures import save
    from finalbn.analysis.gradcam import gradcam_figure
    from finalbn.sweep.spec import REMOVED, Contrast

    data = load_source(args).data
    if args.count < 1:
        raise UserError(f"--count {args.count}: show at least 1 image")
    known = set(data.trials["trial_id"].to_list())
    for trial in (args.trial, args.against):
        if trial is not None and trial not in known:
            raise UserError(f"trial {trial} is not a finished trial of {data.name}: see its {TRIALS_TABLE}")
    if args.trial:
        treated = Arm("final BN", [args.trial], "")
        control = (
            Arm("no final BN", [args.against], "")
            if args.against
            else Arm("final BN removed at test", [args.trial], REMOVED.prefix)
        )
        contrast = Contrast("trial", treated.label, control.label)
        comparison = Comparison(contrast, {"trial": args.trial}, treated, control)
    else:
        comparison = choose_comparison(data)
        if comparison is None:
            raise UserError(f"{data.name} declares no contrast with both arms finished to explain: pass --trial ID")
    cache = args.cache or (data.folder.joinpath(*ANALYSIS_MODELS) if data.folder else Path(tempfile.mkdtemp()))
    out = args.out or (data.folder or Path("reports") / data.name) / REPORT / FIGURES / GRADCAM
    figure, caption = gradcam_figure(data, comparison, cache, count=args.count)
    print(f"{save(figure, out)}: {caption}")


def _has_experiment(uri: str | None, name: str) -> bool:
    if uri is None:
        return False
    from finalbn.tracking import latest_parent_run

    try:
        return latest_parent_run(uri, name) is not None
    except Exception:  # noqa: BLE001 - an unreadable store only means nothing to log to
        return False


def reproduction_main(argv: Sequence[str] | None = None) -> int:
    """python analysis/reproduction.py: docs/reproduction.md from the cpu sweeps (running them first with --data)."""
    import shlex

    parser = OneLineParser(
        prog="python analysis/reproduction.py",
        description="Write docs/reproduction.md from the cpu sweeps; with --data, run (or resume) them first.",
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder of the <experiment>-cpu sweeps")
    parser.add_argument("--out", type=Path, default=Path("docs/reproduction.md"), help="the document to write")
    parser.add_argument(
        "--data", help="PlantVillage root: run every cpu sweep first (finished trials are skipped), then write"
    )
    parser.add_argument(
        "--sweep-args",
        default="",
        metavar="ARGS",
        help="with --data: extra flags for every sweep, e.g. --sweep-args '--backend serial --no-tracking'",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    args = parser.parse_args(argv)

    def run() -> None:
        from finalbn.analysis.reproduction import run_cpu_sweeps, write_reproduction

        if args.data:
            run_cpu_sweeps(args.data, args.results, shlex.split(args.sweep_args))
        print(f"reproduction: {write_reproduction(args.results, args.out)}")

    return guarded(run, debug=args.debug)

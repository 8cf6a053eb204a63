"""The ``finalbn`` command: train one trial, prefetch weights and data, show or stop a sweep.

``finalbn train`` is ``python -m finalbn.train`` (finalbn.train.cli). Errors a user can cause
print one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finalbn.console import OneLineParser, guarded
from finalbn.train.cli import train_main


def main(argv: Sequence[str] | None = None) -> int:
    """The ``finalbn`` console script."""
    parser = OneLineParser(
        prog="finalbn",
        description="Train one trial, fetch what trials need, and show or stop a sweep. "
        "Sweeps themselves run from sweeps/*.py (python sweeps/imbalance_ratio.py --help).",
        epilog="Each command has its own --help, e.g. finalbn train --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    commands.add_parser("train", help="train one trial and write its result folder", add_help=False)
    prefetch = commands.add_parser(
        "prefetch", help="download what trials need (ImageNet weights, full MNIST) on a machine with network"
    )
    prefetch.add_argument("--backbone", nargs="+", default=[], help="backbone name(s), e.g. resnet34 vgg19_bn")
    prefetch.add_argument("--mnist", type=Path, metavar="DIR", help="download full MNIST into DIR (MNIST/raw)")
    for name, text in (
        ("status", "what a sweep has done: trials done, running, failed, pending, per axis value"),
        ("cancel", "stop a running sweep: its driver on this host, its Slurm arrays"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("sweep", metavar="PATH|NAME", help="a sweep folder, or its name under --results-root")
        command.add_argument("--results-root", type=Path, default=Path("results"), metavar="DIR")
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        return train_main(rest, prog="finalbn train")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in ("status", "cancel"):
        return guarded(lambda: _sweep_command(args.command, args.sweep, args.results_root), debug=False)
    if not args.backbone and args.mnist is None:
        prefetch.error("say what to fetch: --backbone NAME..., --mnist DIR, or both")
    return guarded(lambda: _prefetch(args.backbone, args.mnist), debug=False)


def _sweep_command(command: str, target: str, results_root: Path) -> None:
    from finalbn.sweep import status

    folder = status.find_sweep(target, results_root)
    lines = [status.render(status.sweep_status(folder))] if command == "status" else status.cancel(folder)
    print("\n".join(lines))


def _prefetch(backbones: list[str], mnist: Path | None) -> None:
    from finalbn.data.sources import prefetch_mnist
    from finalbn.models import prefetch_weights

    for name in backbones:
        print(f"{name}: {prefetch_weights(name)}")
    if mnist is not None:
        print(f"MNIST: {prefetch_mnist(mnist)} (use --source torchvision-mnist --root {mnist.expanduser()})")


if __name__ == "__main__":
    raise SystemExit(main())

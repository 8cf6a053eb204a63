"""``finalbn train`` (also ``python -m finalbn.train``): one trial from flags, printing each epoch.

Every field of the trial dataclasses is a flag (``--train-minority 20``, ``--final-norm none``,
``--no-augment``), generated from the dataclasses so the command line can never drift from the
config. Trial code only: it reaches nothing of the sweep side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finalbn.config import SECTIONS, TrialConfig, choice_fields, field_docs, validate
from finalbn.console import OneLineParser, guarded
from finalbn.errors import UserError
from finalbn.train.presets import base_config


def train_main(argv: Sequence[str] | None = None, prog: str = "python -m finalbn.train") -> int:
    """Train one trial from flags (and an optional JSON config), printing each epoch."""
    parser = train_parser(prog)
    args = parser.parse_args(argv)
    return guarded(lambda: _train(args), debug=args.debug)


def train_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description=(
            "Train one trial and write its result folder. With no flags: the embedded MNIST "
            "default (3 vs 8, 1% minority, simple CNN, final BN), no download needed. "
            "--source picks the starting preset: mnist sources start from that default, "
            "plantvillage/folder from the thesis protocol (1000+10 / 150+7 / 150+150, ResNet34)."
        ),
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="JSON file with data/model/train sections; flags override it"
    )
    parser.add_argument(
        "--ratio",
        type=float,
        help="set train_minority to round(ratio x train_majority), at least 1 (e.g. 0.01)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs"), metavar="DIR", help="results go to DIR/<trial id>/ (default: runs)"
    )
    parser.add_argument("--no-save-model", action="store_true", help="do not write model.pt")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__name__})")
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for field in dataclasses.fields(cls):
            _add_field(group, section, field, hints[field.name], choice_fields(cls).get(field.name), docs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    """Base preset (or --config file), then every flag the user gave."""
    given = {
        section: {
            f.name: getattr(args, f"{section}__{f.name}")
            for f in dataclasses.fields(cls)
            if getattr(args, f"{section}__{f.name}") is not None
        }
        for section, cls in SECTIONS.items()
    }
    if args.config is not None:
        base = _read_config_file(args.config)
    else:
        base = base_config(given["data"].get("source", "mnist"))
    config = base.replace(**given)
    if args.ratio is not None:
        config = _apply_ratio(config, args.ratio)
    return config


def _apply_ratio(config: TrialConfig, ratio: float) -> TrialConfig:
    if not 0 < ratio <= 1:
        raise UserError(f"--ratio {ratio} is outside (0, 1]: give the minority:majority ratio, e.g. 0.01")
    count = max(1, round(ratio * config.data.train_majority))
    return config.replace(data={"train_minority": count})


def _train(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    # Impossible numbers fail before torch is even imported.
    validate(config)
    from finalbn.config import class_counts
    from finalbn.train.recipe import few_steps
    from finalbn.train.results import run_config

    print(
        f"trial: {config.data.source} {'/'.join(config.data.minority) or config.data.plant} "
        f"train {config.data.train_majority}+{config.data.train_minority}, "
        f"{config.model.backbone}, final norm {config.model.final_norm}, seed {config.train.seed}"
    )
    few = few_steps(config, class_counts(config))
    if few is not None:
        fix = "raise --steps" if config.train.steps is not None else "lower --batch-size or raise --epochs"
        steps = f"{few[0]} optimizer step{'s' if few[0] > 1 else ''}"
        print(f"warning: this trial makes only {steps} ({few[1]}), too few to learn: {fix}")
    result, folder = run_config(
        config,
        args.out,
        on_epoch=lambda row: print(format_epoch(row, config.train.epochs)),
        save_model=not args.no_save_model,
    )
    final = result.final
    line = f"test minority F1 {final['f1_minority']:.4f}, majority F1 {final['f1_majority']:.4f}"
    if "nobn_f1_minority" in final:
        line += (
            f"; final BN removed: minority F1 {final['nobn_f1_minority']:.4f}, "
            f"majority F1 {final['nobn_f1_majority']:.4f}"
        )
    print(line)
    print(f"results: {folder}  ({result.seconds:.1f} s on {result.device})")


def format_epoch(row: dict[str, float], epochs: int) -> str:
    """One readable line per epoch: losses, accuracies and per-class test F1."""
    parts = [f"epoch {int(row['epoch']):>3}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    for key in ("val_loss", "val_accuracy", "test_accuracy"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts += [
        f"test_f1[{key.removeprefix('test_f1_')}] {value:.4f}"
        for key, value in row.items()
        if key.startswith("test_f1_") and key not in ("test_f1_minority", "test_f1_majority")
    ]
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def _read_config_file(path: Path) -> TrialConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: check the --config path") from None
    except json.JSONDecodeError as error:
        raise UserError(
            f"config file {path} is not valid JSON ({error.msg}, line {error.lineno}): fix the file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config file {path} ({error}): check the --config path") from None
    # A trial's own config.json nests the config under "config": accept it as is.
    if isinstance(raw, dict) and "config" in raw:
        raw = raw["config"]
    try:
        return TrialConfig.from_dict(raw)
    except UserError as error:
        raise UserError(f"config file {path}: {error}") from None


def _add_field(
    group: argparse._ArgumentGroup,
    section: str,
    field: dataclasses.Field[Any],
    hint: Any,
    choices: tuple[str, ...] | None,
    docs: dict[str, str],
) -> None:
    flag = "--" + field.name.replace("_", "-")
    dest = f"{section}__{field.name}"
    kind = _flag_type(hint)
    default = field.default if field.default is not dataclasses.MISSING else None
    # The help is the field's own comment in config.py; "%" is argparse's format character.
    doc = docs.get(field.name, "").replace("%", "%%")
    help_text = f"{doc} [{section}.{field.name}; default {default!r}]".strip()
    metavar = {int: "N", float: "X"}.get(kind, "TEXT")
    # default=None everywhere: only flags the user typed override the base config.
    if kind is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif kind is tuple:
        group.add_argument(flag, dest=dest, nargs="+", default=None, metavar="NAME", help=help_text)
    elif choices is not None:
        # Shown, not enforced by argparse: the config's own check rejects a wrong
        # name with the same one-line message a config file or a sweep gets.
        group.add_argument(
            flag, dest=dest, type=str, metavar="{" + ",".join(choices) + "}", default=None, help=help_text
        )
    else:
        group.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=help_text)


def _flag_type(hint: Any) -> type:
    """str | None -> str, tuple[str, ...] -> tuple, plain types as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint

"""The trial command line: flags, presets and config files (rejected input: test_bad_input.py)."""

import dataclasses
import json
import math
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from finalbn.cli import main
from finalbn.config import ModelConfig, TrialConfig, check_field, choice_fields, trial_id, validate
from finalbn.errors import UserError
from finalbn.sweep.experiments import EXPERIMENTS, PRESETS, build_sweeps
from finalbn.train.cli import SECTIONS, config_from_args, train_parser
from finalbn.train.presets import EMBEDDED_MNIST, THESIS

REPO = Path(__file__).resolve().parents[1]


def test_flags_override_the_preset_and_ratio_sets_minority_count() -> None:
    parser = train_parser("test")
    config = config_from_args(parser.parse_args(["--ratio", "0.05", "--no-final-bias", "--minority", "2", "5"]))
    assert config.data.train_minority == 15  # 5% of 300
    assert config.data.minority == ("2", "5")
    assert config.model.final_bias is False
    assert config.model.backbone == EMBEDDED_MNIST.model.backbone
    plant = config_from_args(parser.parse_args(["--source", "plantvillage", "--root", "/data"]))
    assert plant.data.train_majority == THESIS.data.train_majority == 1000
    assert plant.model.backbone == "resnet34"


def test_a_trials_own_config_json_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"trial_id": "x", "config": {"train": {"epochs": 7}}}')
    config = config_from_args(train_parser("test").parse_args(["--config", str(path), "--seed", "3"]))
    assert config.train.epochs == 7 and config.train.seed == 3


def test_console_script_help_lists_every_section() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "finalbn.cli", "train", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0
    for flag in ("--train-minority", "--final-norm", "--mixup-alpha", "--unfreeze", "--ratio"):
        assert flag in done.stdout
    # A choice field's flag names its values, from the config's Literal.
    assert "--final-norm {bn,none,selu}" in done.stdout


def test_prefetch_needs_something_to_fetch() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "finalbn.cli", "prefetch"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--backbone NAME..., --mnist DIR" in done.stderr


def test_prefetch_mnist_offline_names_the_fix(tmp_path, monkeypatch) -> None:
    from finalbn.data import sources

    monkeypatch.setattr(sources, "can_reach", lambda *a, **k: False)
    with pytest.raises(UserError, match=f"run `finalbn prefetch --mnist {tmp_path}` on a machine with network"):
        sources.prefetch_mnist(tmp_path)


CHOICES = [(section, name, valid) for section, cls in SECTIONS.items() for name, valid in choice_fields(cls).items()]


@pytest.mark.parametrize("section, name, valid", CHOICES, ids=[f"{s}.{n}" for s, n, _ in CHOICES])
def test_validate_checks_every_choice_field_against_its_literal(section: str, name: str, valid: tuple) -> None:
    for value in valid:
        config = EMBEDDED_MNIST.replace(**{section: {name: value}})
        # (output sigmoid is valid, with loss bce only.)
        if (name, value) != ("output", "sigmoid"):
            validate(config)
    with pytest.raises(UserError) as error:
        validate(EMBEDDED_MNIST.replace(**{section: {name: "nope"}}))
    assert str(error.value) == f"unknown {name} 'nope': choose one of {', '.join(valid)}"


def test_the_closed_choices_are_those_the_thesis_ablates() -> None:
    fields = {name for _, name, _ in CHOICES}
    assert {"final_norm", "output", "pool", "unfreeze", "loss", "optimizer", "schedule", "device"} <= fields
    assert choice_fields(ModelConfig)["final_norm"] == ("bn", "none", "selu")


# ------------------------------------------------------------------ --config values, as strictly as flags


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a command that exits 2 and trains nothing."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and not out, (out, err)
    return lines[0].removeprefix("finalbn: error: ")


BAD_CONFIGS = [
    # A non-empty string is truthy: this trained WITH weights.
    ({"train": {"weighted_loss": "false"}}, 'train.weighted_loss is "false": use true or false'),
    # A string is a sequence: this trained the three classes "3", "5" and... the characters.
    ({"data": {"minority": "35"}}, 'data.minority is "35": use a list of names, e.g. ["3", "5"]'),
    ({"data": {"minority": [3, 5]}}, 'data.minority is [3, 5]: use a list of names, e.g. ["3", "5"]'),
    # bool is an int subclass.
    ({"train": {"epochs": True}}, "train.epochs is true: use an integer"),
    ({"train": {"epochs": None}}, "train.epochs is null: use an integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs is 2.5: use an integer"),
    ({"train": {"lr": "1e-3"}}, 'train.lr is "1e-3": use a number'),
    ({"model": {"final_bias": 0}}, "model.final_bias is 0: use true or false"),
    ({"train": {"steps": "none"}}, 'train.steps is "none": use an integer, or null'),
    ({"model": {"final_norm": None}}, "unknown final_norm None: choose one of bn, none, selu"),
    ([{"train": {"epochs": 3}}], 'a config is [{"train": {"epochs": 3}}]: use a JSON object of sections'),
    ({"config": "x"}, 'a config is "x": use a JSON object of sections'),
    ({"train": [3]}, "config section train is [3]: use a JSON object of its fields"),
    ({"trian": {"epochs": 3}}, 'unknown config section "trian": did you mean train? use data, model, train'),
    ({"train": {"epoch": 3}}, "unknown config field 'train.epoch': did you mean train.epochs? valid fields are"),
]


@pytest.mark.parametrize("content, message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_a_config_file_value_of_the_wrong_type_is_one_line(
    content: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    line = refused(["train", "--config", str(path), "--out", str(tmp_path / "runs")], capsys)
    assert line.startswith(f"config file {path}: {message}"), line
    assert not (tmp_path / "runs").exists()


def test_a_config_file_of_well_typed_values_is_taken_as_written(tmp_path: Path) -> None:
    """null where the field takes it, lists for names, an integer for a number: the types JSON has."""
    path = tmp_path / "config.json"
    content = {"data": {"root": None, "minority": ["5"]}, "train": {"steps": None, "weighted_loss": True, "lr": 1}}
    path.write_text(json.dumps(content))
    config = config_from_args(train_parser("test").parse_args(["--config", str(path)]))
    assert config.data.minority == ("5",) and config.data.root is None and config.train.steps is None
    assert config.train.weighted_loss is True and config.train.lr == 1
    validate(config)


def every_planned_config() -> list[TrialConfig]:
    """Every trial of every preset of every experiment, with and without a data root."""
    configs = []
    for experiment in EXPERIMENTS.names():
        for preset in PRESETS:
            for data in (None, "/nonexistent/plantvillage"):
                try:
                    specs = build_sweeps(experiment, preset, data)
                except UserError:  # a preset that needs data, or that this experiment does not have
                    continue
                configs += [trial.config for spec in specs for trial in spec.trials()]
    return configs


def test_every_planned_config_reads_back_from_its_records_as_the_same_trial() -> None:
    """config.json and sweep.json hold configs as JSON: read back strictly, each is the same config, same id."""
    configs = every_planned_config()
    assert len(configs) > 1000
    for config in configs:
        validate(config)
        again = TrialConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and trial_id(again, "f") == trial_id(config, "f")


# ------------------------------------------------------------------ bounds of the numeric fields


def limits(section: str, name: str) -> dict[str, float]:
    """The bounds of field ``section.name`` as its annotation declares them: {"ge": 8, "le": 1024}."""
    hint = typing.get_type_hints(SECTIONS[section], include_extras=True)[name]
    annotated = next(a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Annotated)
    metadata = typing.get_args(annotated)[1].metadata
    return {key: getattr(m, key) for m in metadata for key in ("ge", "gt", "le", "lt") if hasattr(m, key)}


def number_type(section: str, name: str) -> type | None:
    """int or float for a numeric field (also one that takes None), else None."""
    hint = typing.get_type_hints(SECTIONS[section])[name]
    return next((kind for kind in (hint, *typing.get_args(hint)) if kind in (int, float)), None)


NUMERIC = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
NUMERIC = [(section, name) for section, name in NUMERIC if number_type(section, name) is not None]


def test_every_numeric_field_has_a_lower_and_an_upper_bound() -> None:
    # 6 counts, split_seed, image_size; final_bn_momentum; epochs, batch_size, steps, lr, mixup_alpha,
    # weight_decay, label_smoothing, tau, focal_gamma, focal_alpha, seed.
    assert len(NUMERIC) == 20
    for section, name in NUMERIC:
        assert len(limits(section, name)) == 2 and set(limits(section, name)) not in ({"ge", "gt"}, {"le", "lt"})


@pytest.mark.parametrize("section, name", NUMERIC, ids=[f"{s}.{n}" for s, n in NUMERIC])
def test_validate_takes_a_number_at_each_bound_and_refuses_one_past_it(section: str, name: str) -> None:
    kind, bound = number_type(section, name), limits(section, name)
    nudge = 1 if kind is int else 1e-6
    inside = (
        bound["ge"] if "ge" in bound else bound["gt"] + nudge,
        bound["le"] if "le" in bound else bound["lt"] - nudge,
    )
    outside = (
        bound["ge"] - nudge if "ge" in bound else bound["gt"],
        bound["le"] + nudge if "le" in bound else bound["lt"],
        *([] if kind is int else [math.nan, math.inf]),
    )
    for value in inside:
        check_field(SECTIONS[section], name, kind(value), bounds=True)
    for value in outside:
        with pytest.raises(UserError) as caught:
            validate(EMBEDDED_MNIST.replace(**{section: {name: kind(value)}}))
        assert str(caught.value).startswith(f"{section}.{name} is "), caught.value


BAD_NUMBERS = [
    # 100000 px asked for a cache of 28 GiB per image.
    (["--image-size", "100000"], "data.image_size is 100000: use an integer >= 8 and <= 1,024 (side in px:"),
    (["--lr", "1e308"], "train.lr is 1e+308: use a number > 0 and <= 10 (the peak learning rate;"),
    (["--lr", "nan"], "train.lr is NaN: use a number > 0 and <= 10"),
    (["--epochs", "0"], "train.epochs is 0: use an integer >= 1 and <= 10,000 (train at least 1 epoch;"),
    (["--batch-size", "-1"], "train.batch_size is -1: use an integer >= 1 and <= 65,536"),
    (["--final-bn-momentum", "1.5"], "model.final_bn_momentum is 1.5: use a number > 0 and <= 1"),
    (["--val-minority", "-1"], "data.val_minority is -1: use an integer >= 0 and <= 10,000,000"),
    (["--seed", "-1"], "train.seed is -1: use an integer >= 0 and <= 9,223,372,036,854,775,807"),
]


@pytest.mark.parametrize("flags, message", BAD_NUMBERS, ids=[m.split(":")[0] for _, m in BAD_NUMBERS])
def test_a_number_out_of_bounds_is_one_line_and_trains_nothing(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(["train", *flags, "--out", str(tmp_path / "runs")], capsys)
    assert line.startswith(message), line
    assert not (tmp_path / "runs").exists()


def test_finalbn_help_lists_every_command_with_a_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "prefetch", "status", "cancel"):
        [line] = [line for line in out.splitlines() if line.split()[:1] == [command]]
        assert len(line.split()) > 3, line
    assert "``" not in out

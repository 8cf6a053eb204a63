"""The trial command line: flags, presets and config files (rejected input: test_bad_input.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from finalbn.cli import SECTIONS, config_from_args, train_parser
from finalbn.config import ModelConfig, choice_fields, validate
from finalbn.errors import UserError
from finalbn.presets import EMBEDDED_MNIST, THESIS

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

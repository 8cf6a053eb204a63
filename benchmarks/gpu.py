"""The GPU path, measured in one run of under 5 minutes on one lent GPU (issue 12 item 8).

    python benchmarks/gpu.py [--data PLANTVILLAGE_ROOT] [--json gpu.json]

Rows (one table, also written as JSON):

* images/s of feature extraction (frozen trunk, eval, no grad) and of full
  training steps (forward, backward, AdamW step; the whole network trains) for
  efficientnet_lite0 and resnet34 at 224 px, under torch.autocast (bf16 where
  the GPU has it, else fp16 with loss scaling), on synthetic images;
* trials/hour of a real sweep (bn_removal, laptop preset, embedded MNIST, 12
  trials) run one at a time (``--backend local --gpus-per-trial 1``) and with K
  trials packed on the GPU (``--gpus-per-trial 1/K``);
* the Table 4.2 ``cpu`` preset (headline, frozen Lite0, cached features) for
  Apple on the GPU (``--set train.device=cuda``): wall time and mean minority
  F1 per column; needs ``--data`` (default $FINALBN_PLANTVILLAGE).

Without a CUDA device every GPU row is printed as "skipped: no CUDA device"
and the script still succeeds; ``--devices cpu`` adds CPU rows of the
throughput benchmarks (small sizes via the flags), which is what the tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script from anywhere: finalbn sits beside benchmarks/.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from finalbn.config import ModelConfig, TrainConfig  # noqa: E402
from finalbn.models import create_model  # noqa: E402
from finalbn.records.folders import TRIALS_TABLE  # noqa: E402
from finalbn.train.recipe import amp_dtype  # noqa: E402

NO_CUDA = "skipped: no CUDA device"
MODELS = ("efficientnet_lite0", "resnet34")
# The packed sweep: small trials, where one trial leaves most of a GPU idle.
PACKED_SWEEP = ("bn_removal", "laptop")


@dataclass(frozen=True)
class Row:
    benchmark: str
    device: str
    # None when skipped; the unit says what the number counts.
    value: float | None
    unit: str
    detail: str


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    rows: list[Row] = []
    for device in args.devices:
        for model in args.models:
            for kind in ("extraction", "training"):
                name = f"{kind} {model} {args.image_size}px"
                if device == "cuda" and not cuda:
                    rows.append(Row(name, device, None, "images/s", NO_CUDA))
                    continue
                rows.append(_throughput(kind, model, device, args))
    if "cuda" in args.devices:
        rows += _packing(args.pack, cuda) + [_headline_on_gpu(args.data, cuda)]
    _print(rows)
    if args.json is not None:
        machine = torch.cuda.get_device_name(0) if cuda else f"CPU only ({os.cpu_count()} cores)"
        payload = {"machine": machine, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=lambda s: s.split(","), default=["cuda"], help="cuda, cpu or cpu,cuda")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128, help="images per timed batch")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per throughput row (after 3 warm-up)")
    parser.add_argument("--pack", type=int, default=4, help="K: trials packed on one GPU (--gpus-per-trial 1/K)")
    parser.add_argument("--data", type=Path, default=_env_path("FINALBN_PLANTVILLAGE"), help="PlantVillage root")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here as JSON")
    return parser


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


# ------------------------------------------------------------- throughput


def _throughput(kind: str, backbone: str, device_name: str, args: argparse.Namespace) -> Row:
    """Images/s of one model at one size; random weights (throughput does not depend on them)."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    train = kind == "training"
    config = ModelConfig(backbone=backbone, weights="none", unfreeze="all" if train else "none")  # type: ignore[arg-type]
    model = create_model(config, num_classes=2, in_channels=3, image_size=args.image_size).to(device)
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    precision = amp_dtype(device, TrainConfig(amp=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None)

    def extract() -> None:
        with torch.inference_mode(), autocast():
            model.forward_features(images)

    def step() -> None:
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train(train)
    seconds = _timed(step if train else extract, args.steps, device)
    what = "fwd+bwd+AdamW, whole network" if train else "frozen trunk forward, eval"
    dtype = "float32" if precision is None else str(precision).removeprefix("torch.")
    return Row(
        f"{kind} {backbone} {args.image_size}px",
        device_name,
        args.batch * args.steps / seconds,
        "images/s",
        f"{what}, batch {args.batch}, {dtype}",
    )


def _timed(work: Callable[[], None], steps: int, device: torch.device) -> float:
    for _ in range(3):
        work()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        work()
    _sync(device)
    return time.perf_counter() - started


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------- whole sweeps


def _packing(k: int, cuda: bool) -> list[Row]:
    """Trials/hour of the same sweep one trial per GPU and K per GPU, each in a fresh results folder."""
    experiment, preset = PACKED_SWEEP
    rows = []
    for per_gpu in (1, k):
        name = f"trials/hour, {experiment} {preset}, {per_gpu} per GPU"
        if not cuda:
            rows.append(Row(name, "cuda", None, "trials/hour", NO_CUDA))
            continue
        extra = ["--backend", "local", "--gpus-per-trial", f"{1 / per_gpu:g}", "--set", "train.device=cuda"]
        seconds, out = _sweep(experiment, preset, extra)
        trials = pl.read_parquet(next(out.glob(f"*/{TRIALS_TABLE}"))).height
        rows.append(Row(name, "cuda", trials * 3600 / seconds, "trials/hour", f"{trials} trials in {seconds:.0f} s"))
    return rows


def _headline_on_gpu(data: Path | None, cuda: bool) -> Row:
    name = "Table 4.2 cpu preset, Apple, on the GPU"
    if not cuda:
        return Row(name, "cuda", None, "s", NO_CUDA)
    if data is None or not data.is_dir():
        return Row(name, "cuda", None, "s", "skipped: no PlantVillage root (--data or FINALBN_PLANTVILLAGE)")
    extra = ["--data", str(data), "--axis", "data.plant=Apple", "--set", "train.device=cuda", "--backend", "serial"]
    seconds, out = _sweep("headline", "cpu", extra)
    trials = pl.read_parquet(next(out.glob(f"*/{TRIALS_TABLE}")))
    means = trials.group_by("axis.variant").agg(pl.col("f1_minority").mean()).sort("axis.variant")
    f1 = ", ".join(f"{v} {f:.3f}" for v, f in means.iter_rows())
    return Row(name, "cuda", seconds, "s", f"{trials.height} trials incl. extraction; minority F1: {f1}")


def _sweep(experiment: str, preset: str, extra: list[str]) -> tuple[float, Path]:
    """Wall seconds of one real sweep script run, and its results folder."""
    out = Path(tempfile.mkdtemp(prefix=f"gpu-bench-{experiment}-"))
    command = [sys.executable, str(REPO / "sweeps" / f"{experiment}.py"), "--preset", preset, "--no-tracking"]
    started = time.perf_counter()
    subprocess.run([*command, "--out", str(out), *extra], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, out


def _print(rows: list[Row]) -> None:
    header = ("benchmark", "device", "value", "unit", "detail")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        value = "-" if r.value is None else f"{r.value:,.1f}"
        print(f"| {r.benchmark} | {r.device} | {value} | {r.unit} | {r.detail} |")


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu.py on a CPU-only machine: GPU rows skipped with the reason, CPU rows measured, JSON written."""

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


def test_gpu_rows_are_skipped_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.json"
    assert gpu.main(["--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    # 2 models x (extraction, training), 1 and 4 trials per GPU, the cpu preset on the GPU.
    assert len(rows) == 7
    assert all(r["value"] is None and r["detail"] == gpu.NO_CUDA and r["device"] == "cuda" for r in rows)
    table = capsys.readouterr().out
    assert table.count(gpu.NO_CUDA) == 7 and "trials/hour, bn_removal laptop, 4 per GPU" in table


@pytest.mark.slow
def test_cpu_rows_measure_images_per_second(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--devices", "cpu", "--models", "resnet34", "--image-size", "32", "--batch", "2", "--steps", "1"]
    assert gpu.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["benchmark"] for r in rows] == ["extraction resnet34 32px", "training resnet34 32px"]
    assert all(r["value"] > 0 and r["unit"] == "images/s" and "float32" in r["detail"] for r in rows)

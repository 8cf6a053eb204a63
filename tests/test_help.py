"""--help answers at once: no script imports torch, Ray, MLflow or scikit-learn before parsing.

(No wall-clock assertion: these machines are shared. What makes --help slow is
importing those libraries, so that is what is checked.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("sweeps/*.py"), *REPO.glob("analysis/*.py")])
HEAVY = ("torch", "torchvision", "ray", "mlflow", "sklearn", "matplotlib")

PROBE = """
import runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
sys.argv = [target, *argv]
try:
    if target == "finalbn":
        from finalbn.cli import main
        main(argv)
    elif target == "finalbn.train":
        # python -m imports the package before its __main__: that import must be light too.
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
except SystemExit as done:
    assert done.code in (0, None), done.code
print(sorted(m for m in {heavy} if m in sys.modules))
"""


@pytest.mark.parametrize("script", [*SCRIPTS, "finalbn", "finalbn.train"])
def test_help_imports_nothing_heavy(script: str) -> None:
    argv = ["train", "--help"] if script == "finalbn" else ["--help"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), script, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]
    assert "usage:" in done.stdout
    assert "(default: None)" not in done.stdout

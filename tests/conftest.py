"""Shared fixtures."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Decoded images and frozen-backbone features are cached on disk (finalbn.data.cache):
# tests, and the sweeps they start as subprocesses, keep theirs out of ~/.cache.
if "FINALBN_CACHE_DIR" not in os.environ:
    os.environ["FINALBN_CACHE_DIR"] = tempfile.mkdtemp(prefix="finalbn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FINALBN_CACHE_DIR"], ignore_errors=True)

# The finished sweeps many files read, trained once per session (tests/fixtures_sweep.py).
from fixtures_sweep import finished_sweep, imbalance_smoke, smoke_results  # noqa: E402, F401


@pytest.fixture(scope="session")
def plantvillage_root() -> Path:
    """The real PlantVillage subset named by FINALBN_PLANTVILLAGE.

    Skips the test without it, except where FINALBN_REQUIRE_DATA=1 (CI): there a
    missing folder must fail the run instead of quietly skipping real-data tests.
    """
    value = os.environ.get("FINALBN_PLANTVILLAGE")
    problem = None
    if not value:
        problem = (
            "FINALBN_PLANTVILLAGE is not set: point it at the PlantVillage subset "
            "(e.g. ../shared/data/plantvillage) to run real-data tests"
        )
    elif not Path(value).is_dir():
        problem = f"FINALBN_PLANTVILLAGE={value} is not a directory: point it at the subset"
    if problem is not None:
        if os.environ.get("FINALBN_REQUIRE_DATA") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return Path(value)

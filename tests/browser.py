"""Headless Chromium for the tests that look at a page: the report's figures, MLflow's runs table."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        problem = "chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)"
        # CI sets this: there the browser check must run, never quietly skip.
        if os.environ.get("FINALBN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


def headless(work: Path, window: str, budget_ms: int) -> list[str]:
    """Chromium's command line without network chatter, a profile of its own under ``work``, and
    ``budget_ms`` of virtual time for the page's scripts before the DOM dump or the screenshot."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={work / 'profile'}",
        f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}",
    ]

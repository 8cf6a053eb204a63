"""Headless Chromium for the tests that look at a page: the report's figures, MLflow's runs table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

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


# Set by the probe script once the page has loaded: how many <img> decoded to a real picture.
MARKER = re.compile(r"figures-loaded:(\d+)/(\d+)")
# The probe copy shows only the figures, so the screenshot holds all of them and nothing else.
PROBE = """<style>body > :not(figure) { display: none !important; }</style>
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const ok = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  document.title = "figures-loaded:" + ok + "/" + images.length;
});
</script>"""


def render(html: Path, work: Path) -> tuple[tuple[int, int], np.ndarray]:
    """Open ``html`` in headless Chromium: (images decoded, images in page) and a screenshot."""
    page = work / f"probe-{html.stem}.html"
    page.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    # Virtual time lets the load handler run before the DOM is dumped.
    flags = headless(work, "1200,4000", 5000)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = MARKER.search(dom.stdout)
    assert found, f"the probe never ran: {dom.stderr[-500:]}"
    shot = work / f"{html.stem}.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    return (int(found.group(1)), int(found.group(2))), imread(shot)


def colourful_pixels(screenshot: np.ndarray) -> int:
    """Pixels of strong colour: the plotted lines, bands and heat maps; text and tables are grey."""
    rgb = screenshot[..., :3].astype(np.float64)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 0.35).sum())

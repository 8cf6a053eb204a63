"""A finished smoke sweep as a person sees it: a real ``mlflow server`` on its SQLite store, the runs page
rendered by headless Chromium (the table is drawn by JavaScript), a screenshot kept under tmp_path."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import headless, require_chromium
from fixtures_sweep import FinishedSweep
from matplotlib.image import imread

from finalbn.tracking.layout import RUNS_VIEW

pytestmark = pytest.mark.slow

# A loaded machine takes a minute or more to start MLflow's server.
SERVER_START_SECONDS = 300


@pytest.fixture(scope="module")
def smoke(imbalance_smoke: FinishedSweep, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The session's imbalance-ratio smoke sweep (8 trials, tests/fixtures_sweep.py), which the server only reads:
    (a folder of this module's own for the server's files, store URI, experiment id)."""
    experiment = imbalance_smoke.client().get_experiment_by_name(imbalance_smoke.spec.name)
    return tmp_path_factory.mktemp("mlflow-ui"), imbalance_smoke.uri, experiment.experiment_id


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(smoke: tuple[Path, str, str]) -> Iterator[str]:
    """``mlflow server`` on the sweep's store, on a free loopback port; stopped by its process group."""
    root, uri, _ = smoke
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        # Its own group: the server starts uvicorn workers, all stopped with it.
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{address}/health", timeout=5)
                break
            except (urllib.error.URLError, OSError):
                assert process.poll() is None, (root / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not answer /health"
                time.sleep(1)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def chromium(url: str, work: Path, *action: str) -> subprocess.CompletedProcess[str]:
    # Wide enough for the axis columns beside the metric ones; virtual time lets the page's
    # fetches and rendering finish before the dump or the picture.
    flags = headless(work, "2800,900", 30000)
    return subprocess.run([*flags, *action, url], capture_output=True, text=True, timeout=240)


def test_the_runs_page_lists_the_parent_its_children_and_the_axes(
    smoke: tuple[Path, str, str], server: str, tmp_path: Path
) -> None:
    require_chromium()
    _, _, experiment_id = smoke
    # The link the sweep prints (MlflowTracker.where): the runs table with the sweep's columns.
    url = f"{server}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW}"
    dom = chromium(url, tmp_path, "--dump-dom").stdout
    text = re.sub(r"<[^>]+>", "\n", dom)
    cells = {line.strip() for line in text.splitlines() if line.strip()}
    children = {f"minority={m} norm={n} seed={s}" for m in (1, 4) for n in ("bn", "none") for s in (0, 1)}
    assert children <= cells, sorted(cells)[:80]
    assert any(re.fullmatch(r"imbalance_ratio-smoke \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cell) for cell in cells)
    # The axis and headline columns, with the parent's axis values and the children's own.
    assert {"data.train_minority", "model.final_norm", "final_f1_minority", "final_nobn_f1_minority"} <= cells
    assert {"1, 4", "bn, none"} <= cells
    assert "You're viewing a shared view" in dom
    shot = tmp_path / "runs.png"
    chromium(url, tmp_path, f"--screenshot={shot}")
    picture = imread(shot)
    assert picture.shape[:2] == (900, 2800)
    print(f"MLflow runs page screenshot: {shot}")

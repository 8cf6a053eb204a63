"""A real smoke sweep (serial backend, MLflow in SQLite) analysed end to end, the report opened in headless
Chromium. The analysis reads folders and runs, whichever backend trained them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from browser import colourful_pixels, render, require_chromium
from fixtures_sweep import FinishedSweep
from mlflow.tracking import MlflowClient

from finalbn.analysis.cli import report_main
from finalbn.analysis.load import from_folder
from finalbn.analysis.mlflow_source import from_mlflow
from finalbn.analysis.report import ReportResult, write_report
from finalbn.tracking.layout import HEADLINE_TAG, PARENT_TAG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(imbalance_smoke: FinishedSweep) -> tuple[Path, str, object]:
    """The imbalance-ratio smoke sweep (8 trials, 2 epochs) in its SQLite store, the session's
    (tests/fixtures_sweep.py). The report below adds itself to the sweep's folder and parent run, and
    nothing else: the other readers of this sweep (MLflow's runs page, the Slurm comparison) see no
    difference. Not a copy: a copied parent run keeps its id, under which MLflow has already cached
    the original's artifact folder in this process (see fixtures_sweep.copy_sweep)."""
    return imbalance_smoke.folder, imbalance_smoke.uri, imbalance_smoke.spec


@pytest.fixture(scope="module")
def result(sweep: tuple[Path, str, object]) -> ReportResult:
    folder, uri, spec = sweep
    # gradcam=True: retrain the two compared smoke trials (seconds) so Figure 4.4 is drawn too.
    return write_report(folder, spec, tracking_uri=uri, gradcam=True)


def test_report_answers_the_sweep_and_draws_every_figure(result: ReportResult) -> None:
    assert result.kind == "imbalance_ratio"
    # Two seeds: the headline leads with that (issue 19), then one sentence per class.
    assert result.headline.startswith("Imbalance threshold: 2 seeds per ratio: too few to locate a threshold;")
    assert "Imbalance threshold: f1_minority: " in result.headline
    names = {path.name for path in result.figures}
    assert names == {
        "imbalance_ratio.png",
        "loss_curves.png",
        "softmax_outputs.png",
        "reliability.png",
        "gradcam.png",
    }
    html = result.html.read_text()
    assert html.count("data:image/png;base64,") == 5
    for needle in ("Provenance", "trials finished", "Declared contrasts, paired by seed", "Per configuration"):
        assert needle in html
    # The trials' own code version is shown, and the smoke sweep is complete.
    assert "0.1.0" in html and "partial" not in result.headline


def test_report_is_logged_to_the_sweeps_parent_run(sweep: tuple[Path, str, object], result: ReportResult) -> None:
    _, uri, spec = sweep
    client = MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert PARENT_TAG not in run.data.tags
    assert run.data.tags[HEADLINE_TAG] == result.headline
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= logged


def test_mlflow_and_the_folder_give_the_same_tables(sweep: tuple[Path, str, object]) -> None:
    folder, uri, spec = sweep
    files, runs = from_folder(folder, spec), from_mlflow(spec.name, uri)
    assert set(files.trials.columns) == set(runs.trials.columns)
    left = files.trials.sort("trial_id")
    right = runs.trials.select(left.columns).sort("trial_id")
    assert left.equals(right), "MLflow runs -> Arrow -> Polars must rebuild trials.parquet exactly"
    assert runs.epochs is not None and runs.epochs.height == files.epochs.height
    assert runs.missing == [] and runs.failed == {}
    # Both read the sweep.json the driver wrote (folder) and logged with the parent run (MLflow).
    assert files.analysis == runs.analysis == "imbalance_ratio" and runs.planned() == files.planned() == 8


def test_the_report_script_runs_on_the_folder(
    sweep: tuple[Path, str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """analysis/report.py's entry, in this process (test_user_path runs the script itself on a terminal)."""
    folder, _, _ = sweep
    monkeypatch.chdir(tmp_path)
    assert report_main([str(folder), "--out", str(tmp_path), "--no-gradcam"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Imbalance threshold:")
    assert f"report: {tmp_path / 'report.html'}" in out
    assert (tmp_path / "report.md").exists() and (tmp_path / "figures" / "imbalance_ratio.png").exists()


# ------------------------------------------------------------------ browser


def test_figures_render_in_headless_chromium(result: ReportResult, tmp_path: Path) -> None:
    require_chromium()
    (loaded, total), screenshot = render(result.html, tmp_path)
    assert total == 5 and loaded == total
    assert screenshot.shape[1] == 1200 and colourful_pixels(screenshot) > 20000
    # The same check on a copy whose figures cannot decode must fail: it can tell.
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", result.html.read_text()))
    (loaded, total), screenshot = render(broken, tmp_path)
    assert total == 5 and loaded == 0
    assert colourful_pixels(screenshot) < 5000


def test_a_partial_sweep_reports_what_is_missing(sweep: tuple[Path, str, object], tmp_path: Path) -> None:
    folder, _, spec = sweep
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("ray", "analysis", "report"))
    trials = pl.read_parquet(copy / "trials.parquet")
    dropped = trials.row(0, named=True)
    trials.slice(1).write_parquet(copy / "trials.parquet")
    shutil.rmtree(copy / "trials" / dropped["trial_id"])
    # No spec passed: the copy's sweep.json plans the grid, whatever the folder is called.
    result = write_report(copy, gradcam=False)
    assert result.kind == "imbalance_ratio"
    assert "partial sweep: 7 of 8 trials" in result.headline
    assert "Grid points with no finished trial (1)" in result.html.read_text()
    missing = from_folder(copy, spec).missing
    assert missing == [{k.removeprefix("axis."): v for k, v in dropped.items() if k.startswith("axis.")}]

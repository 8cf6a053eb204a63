"""Sweeps into a real MLflow SQLite store, on embedded MNIST.

The driver's logic (resume, retries, the MLflow layout, the tables, sweep.json)
runs on the serial backend, in this process, in seconds; the same driver
through real Ray Tune, with Tune's own view of it, is checked where a person
runs it: tests/test_user_path.py::test_a_private_ray_listens_on_loopback_only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from faults import env
from fixtures_sweep import FinishedSweep, copy_sweep, runs, spec, sweep

from finalbn.sweep import SweepRecord
from finalbn.tracking import TRIAL_TAG


@pytest.fixture
def finished(finished_sweep: FinishedSweep) -> tuple:
    """The session's finished sweep (tests/fixtures_sweep.py), read only."""
    return finished_sweep.root, finished_sweep.report, finished_sweep.client()


@pytest.fixture
def copied(finished_sweep: FinishedSweep, tmp_path: Path) -> tuple:
    """A copy of it for one test to rerun or change."""
    copy = copy_sweep(finished_sweep, tmp_path / "copy")
    return copy.root, copy.report, copy.client()


def test_every_trial_finishes_once(finished: tuple) -> None:
    root, report, _ = finished
    assert report.total == 8 and len(report.finished) == 8 and report.failed == [] and report.skipped == 0
    epochs = pl.read_parquet(report.folder / "epochs.parquet")
    assert epochs.height == 16
    assert epochs.select("trial_id", "epoch").is_duplicated().sum() == 0
    assert set(epochs["data.train_minority"]) == {3, 6}
    assert set(epochs["axis.model.final_norm"]) == {"bn", "none"}
    trials = pl.read_parquet(report.folder / "trials.parquet")
    assert trials.height == 8
    with_bn = trials.filter(pl.col("model.final_norm") == "bn")
    assert with_bn["nobn_f1_minority"].is_not_null().all()


def test_mlflow_holds_one_parent_and_a_child_per_trial(finished: tuple) -> None:
    _, report, client = finished
    all_runs = runs(client, "smoke")
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "sweep.json" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags[TRIAL_TAG] for r in children} == set(report.finished)
    child = children[0]
    assert child.info.status == "FINISHED"
    assert child.data.params["data.source"] == "mnist"
    # Short names in the runs table, the full one as the run's description.
    assert re.fullmatch(r"minority=[36] norm=(bn|none) seed=[01]", child.info.run_name)
    assert child.data.tags[TRIAL_TAG] in child.data.tags["mlflow.note.content"]
    assert child.data.metrics["final_f1_minority"] == pytest.approx(
        json.loads((report.folder / "trials" / child.data.tags[TRIAL_TAG] / "summary.json").read_text())["test"][
            "f1_minority"
        ]
    )
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    history = client.get_metric_history(child.info.run_id, "test_f1_minority")
    assert sorted(m.step for m in history) == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"config.json", "manifest.parquet", "predictions.parquet", "confusion.csv"} <= artifacts


def test_rerun_trains_nothing_and_adds_no_child_run(copied: tuple) -> None:
    root, first, _ = copied
    again, client = sweep(spec("smoke"), root)
    assert again.skipped == 8 and again.finished == [] and again.failed == []
    children = [r for r in runs(client, "smoke") if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8
    # A grown grid runs only the new points.
    grown, _ = sweep(spec("smoke", minority_counts=(3, 6, 9)), root)
    assert grown.skipped == 8 and len(grown.finished) == 4
    assert pl.read_parquet(grown.folder / "trials.parquet").height == 12


def test_finished_trial_without_a_finished_run_is_logged_again(copied: tuple) -> None:
    """A driver killed between a trial's last file and closing its run leaves the
    run KILLED; the next invocation logs that trial again from its folder."""
    root, report, client = copied
    victim = report.finished[0]
    [run] = [r for r in runs(client, "smoke") if r.data.tags.get(TRIAL_TAG) == victim]
    client.set_terminated(run.info.run_id, "KILLED")
    again, client = sweep(spec("smoke"), root)
    assert again.finished == [] and again.skipped == 8
    [relogged] = [r for r in runs(client, "smoke") if r.data.tags.get(TRIAL_TAG) == victim]
    assert relogged.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(relogged.info.run_id, "test_f1_minority")) == [1, 2]
    assert "config.json" in {a.path for a in client.list_artifacts(relogged.info.run_id)}


def test_failing_trial_is_retried_then_recorded_and_rerun_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faulty = spec("faulty", minority_counts=(3,))
    for key, value in env("raise:final_norm=none seed=1").items():
        monkeypatch.setenv(key, value)
    report, client = sweep(faulty, tmp_path, retries=1)
    assert len(report.finished) == 3 and len(report.failed) == 1
    [bad] = report.failed
    failure = json.loads((report.folder / "trials" / bad / "failure.json").read_text())
    assert failure["attempts"] == 2  # the first try and one retry
    assert "fault injected" in failure["traceback"]
    [failed_run] = [r for r in runs(client, "faulty") if r.data.tags.get(TRIAL_TAG) == bad]
    assert failed_run.info.status == "FAILED"
    assert "fault injected" in failed_run.data.tags["finalbn.error"]

    monkeypatch.delenv("FINALBN_FAULT")
    rerun, client = sweep(faulty, tmp_path)
    assert rerun.finished == [bad] and rerun.skipped == 3
    trial_runs = [r for r in runs(client, "faulty") if r.data.tags.get(TRIAL_TAG) == bad]
    assert [r.info.status for r in trial_runs] == ["FINISHED"]
    assert not any(r.info.status == "RUNNING" for r in runs(client, "faulty"))


def test_sweep_json_records_the_declaration_and_each_invocation(finished: tuple) -> None:
    root, report, _ = finished
    record = SweepRecord.read(report.folder)
    assert record is not None and record.name == "smoke" and record.spec() == spec("smoke")
    assert set(record.trials) == set(report.finished)
    assert [a.name for a in record.axes] == ["data.train_minority", "model.final_norm", "train.seed"]
    assert record.axes[2].role == "nuisance" and record.axes[0].labels == ["3", "6"]
    assert len(record.code["git_commit"]) in (40, len("unknown"))
    first = record.invocations[0]
    assert (first.backend, first.status, first.finished, first.skipped) == ("serial", "FINISHED", 8, 0)
    # Every trial's config.json names the same commit as the sweep.
    configs = [json.loads((report.folder / "trials" / t / "config.json").read_text()) for t in report.finished]
    assert {c["versions"]["git_commit"] for c in configs} == {record.code["git_commit"]}


def test_the_worker_trains_from_the_planned_manifest(finished: tuple) -> None:
    """One manifest per dataset, built by the planner; trial folders carry the same bytes."""
    root, report, _ = finished
    planned = {m.name[:16]: m.read_bytes() for m in (report.folder / "manifests").glob("*.parquet")}
    used = set()
    for trial in report.finished:
        fingerprint = json.loads((report.folder / "trials" / trial / "config.json").read_text())["manifest_fingerprint"]
        assert (report.folder / "trials" / trial / "manifest.parquet").read_bytes() == planned[fingerprint[:16]]
        used.add(fingerprint)
    assert len(used) == 2  # train_minority 3 and 6: two datasets, each manifest built once


# A live driver between a trial's last file and closing its run, as under Ray: the worker releases the
# trial's claim when it returns, the driver closes the run when Tune reports the trial complete.
OTHER_DRIVER = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[4])
from fixtures_sweep import spec

from finalbn.sweep.claims import acquire, driver_claim
from finalbn.provenance import code_versions
from finalbn.records import read_metrics
from finalbn.sweep.plan import plan
from finalbn.tracking import MlflowTracker

root, name, victim = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
swept, folder = spec(name), root / "results" / name
[job] = [j for j in plan(swept, folder, code_versions()["git_commit"]) if j.trial_id == victim]
tracker = MlflowTracker(f"sqlite:///{root / 'mlruns.db'}", artifact_root=root / "artifacts")
tracker.start_sweep(swept, "x", pending=1, skipped=7)
claim = acquire(driver_claim(folder), run=tracker.parent_id)
for row in read_metrics(job.folder / "metrics.parquet", victim).drop("trial_id").to_dicts():
    tracker.log_epoch(job, row)
print(tracker.parent_id, flush=True)
sys.stdin.readline()
tracker.finish_trial(job, failed=False)
tracker.end_sweep("FINISHED")
claim.release()
"""


def test_a_driver_starting_while_another_closes_a_finished_trial_leaves_that_run_to_it(copied: tuple) -> None:
    root, first, _ = copied
    name = first.spec.name
    victim = first.finished[0]
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_DRIVER, str(root), name, victim, str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        other_parent = other.stdout.readline().strip()
        assert other_parent, "the other driver did not start"
        again, client = sweep(spec(name), root)
        assert again.skipped == 8 and again.finished == []
        # Neither killed under the other driver nor logged a second time.
        [open_run] = [r for r in runs(client, name) if r.data.tags.get(TRIAL_TAG) == victim]
        assert open_run.info.status == "RUNNING" and open_run.data.tags["mlflow.parentRunId"] == other_parent
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.wait(timeout=120) == 0
    finally:
        other.kill()
        other.wait()
    [closed] = [r for r in runs(client, name) if r.data.tags.get(TRIAL_TAG) == victim]
    assert closed.info.status == "FINISHED"

"""Finished sweeps that tests share, trained once per test session, and copies of them to change.

``finished_sweep``: the 8-trial grid of ``spec()`` (2 epochs, embedded MNIST) on the serial backend,
tracked in a real MLflow SQLite store. ``imbalance_smoke``: the imbalance-ratio smoke preset the same
way, for the report and MLflow's own UI. ``smoke_results``: the headline, bn_removal, baselines and mnist
sweep commands at their smoke preset, untracked, for the documents built from several sweeps. All are
registered in conftest.py. A test that only reads
a finished sweep takes the fixture; a test that reruns, damages or re-tags one works on
``copy_sweep(fixture, tmp_path)``, so no test sees another's changes.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from backends import serial
from mlflow.tracking import MlflowClient

from finalbn.sweep import SweepOptions, SweepReport, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import MlflowTracker
from finalbn.train.presets import EMBEDDED_MNIST

TINY = EMBEDDED_MNIST.replace(train={"epochs": 2})
STORE = "mlruns.db"


def spec(name: str, minority_counts: tuple[int, ...] = (3, 6)) -> SweepSpec:
    return SweepSpec(
        name=name,
        base=TINY,
        axes=(
            Axis("data.train_minority", minority_counts),
            Axis("model.final_norm", ("bn", "none")),
            Axis("train.seed", (0, 1), role="nuisance"),
        ),
    )


def uri(root: Path) -> str:
    return f"sqlite:///{root / STORE}"


def tracker(root: Path) -> MlflowTracker:
    """The tracker of a sweep under ``root``: its store ``root/mlruns.db``, its artifacts beside it."""
    return MlflowTracker(uri(root), artifact_root=root / "artifacts")


def sweep(spec_: SweepSpec, root: Path, backend: object = None, **options: object) -> tuple[SweepReport, MlflowClient]:
    """``spec_`` run into ``root/results``, tracked in ``root/mlruns.db`` (serial unless ``backend``)."""
    report = run_sweep(spec_, SweepOptions(out=root / "results", **options), backend or serial(), tracker(root))
    return report, MlflowClient(uri(root))


def runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id])


@dataclass(frozen=True)
class FinishedSweep:
    """A sweep run once: ``root`` holds results/, mlruns.db and artifacts/; ``report`` is what that run returned."""

    root: Path
    report: SweepReport

    @property
    def spec(self) -> SweepSpec:
        return self.report.spec

    @property
    def folder(self) -> Path:
        return self.report.folder

    @property
    def uri(self) -> str:
        return uri(self.root)

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


def finish(spec_: SweepSpec, root: Path) -> FinishedSweep:
    report, _ = sweep(spec_, root)
    assert len(report.finished) == report.total and report.failed == [], report.failed
    return FinishedSweep(root, report)


def copy_sweep(finished: FinishedSweep, into: Path) -> FinishedSweep:
    """A copy of ``finished`` under ``into`` that shares nothing with it: MLflow's store records each
    experiment's artifact folder by absolute URI, so the copy's store is pointed at the copy's.

    Log artifacts into new runs of a copy only (a rerun's parent, a trial logged again): a copied run
    keeps its id, and MLflow caches a run's artifact folder by id in this process, so this process may
    write or list a copied run's artifacts at the original's folder."""
    shutil.copytree(finished.root, into, dirs_exist_ok=True)
    old, new = (root.resolve().as_uri() for root in (finished.root, into))
    with sqlite3.connect(into / STORE) as db:
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    folder = into / finished.folder.relative_to(finished.root)
    return FinishedSweep(into, replace(finished.report, folder=folder))


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    """``spec("smoke")``: 8 trials, finished; never changed after (copy_sweep it to change it)."""
    return finish(spec("smoke"), tmp_path_factory.mktemp("finished-sweep"))


@pytest.fixture(scope="session")
def imbalance_smoke(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    """The imbalance-ratio smoke preset (8 trials, 2 epochs), finished on the serial backend."""
    from finalbn.sweep.experiments import build_sweeps

    [smoke] = build_sweeps("imbalance_ratio", "smoke", None)
    return finish(smoke, tmp_path_factory.mktemp("imbalance-smoke"))


# The sweep scripts' flags for a fast, untracked run in this process.
SMOKE_FLAGS = ["--preset", "smoke", "--backend", "serial", "--no-tracking"]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--out`` of the headline, bn_removal, baselines and mnist sweep commands at the smoke preset (embedded
    MNIST, serial, no tracking): real trials, seconds each; each folder holds its report."""
    from finalbn.sweep.cli import run_script

    results = tmp_path_factory.mktemp("smoke-results")
    for experiment in ("headline", "bn_removal", "baselines", "mnist"):
        assert run_script(experiment, None, [*SMOKE_FLAGS, "--out", str(results)]) == 0
    return results

"""A new SQLite MLflow store is a copy of an empty one kept in finalbn's cache per MLflow version, not a fresh
run of MLflow's schema migrations (1.6 s for every sweep and test that opens a store)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.store.db.utils
import pytest
from mlflow.tracking import MlflowClient

from finalbn.tracking import MlflowTracker


def migrations_refused(engine: object) -> None:
    raise AssertionError("MLflow migrated a store that was seeded from the template")


def test_a_second_new_store_is_seeded_and_gets_mlflows_default_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINALBN_CACHE_DIR", str(tmp_path / "cache"))
    first = MlflowTracker(f"sqlite:///{tmp_path / 'first.db'}", artifact_root=tmp_path / "artifacts")
    first.client.search_experiments()
    template = tmp_path / "cache" / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    assert template.is_file()
    # The second store: no migration at all, and MLflow's Default experiment where MLflow itself puts it.
    monkeypatch.setattr(mlflow.store.db.utils, "_upgrade_db", migrations_refused)
    monkeypatch.chdir(tmp_path)
    second = MlflowTracker(f"sqlite:///{tmp_path / 'second.db'}", artifact_root=tmp_path / "artifacts")
    [default] = second.client.search_experiments()
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.artifact_location == str(tmp_path / "mlruns" / "0")
    experiment = second.client.create_experiment("a sweep")
    run = second.client.create_run(experiment)
    second.client.log_metric(run.info.run_id, "f1", 0.5)
    assert MlflowClient(second.uri).get_run(run.info.run_id).data.metrics == {"f1": 0.5}


def test_a_store_that_exists_is_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINALBN_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    MlflowClient(uri).create_experiment("kept")
    tracker = MlflowTracker(uri, artifact_root=tmp_path / "artifacts")
    assert "kept" in {e.name for e in tracker.client.search_experiments()}


def test_a_cache_folder_that_takes_no_file_leaves_the_store_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("FINALBN_CACHE_DIR", str(blocked))
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlruns.db'}", artifact_root=tmp_path / "artifacts")
    [default] = tracker.client.search_experiments()
    assert default.name == "Default" and blocked.is_file()

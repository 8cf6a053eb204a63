"""How a sweep looks in MLflow: run names, params, the parent's numbers, the PNGs, and what is not logged."""

from __future__ import annotations

import typing
from pathlib import Path

import polars as pl
import pytest
from backends import crashing_serial, serial, slurm
from matplotlib.image import imread
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from finalbn.config import Source, TrialConfig
from finalbn.errors import UserError
from finalbn.launch.slurm import SlurmOptions, submit
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.spec import Axis, SweepSpec, flatten
from finalbn.tracking import MlflowTracker, redact
from finalbn.tracking.layout import (
    COUNT_TAGS,
    NOTE_TAG,
    PARENT_TAG,
    RUNS_VIEW_TAG,
    SOURCE_FIELDS,
    TRIAL_NAME_TAG,
    TRIAL_TAG,
    RunNames,
    axis_keys,
    config_params,
    with_unlogged_params,
)
from finalbn.tracking.reader import experiment_runs
from finalbn.train.presets import EMBEDDED_MNIST


def test_credentials_in_a_tracking_uri_never_reach_the_output() -> None:
    assert redact("https://alice:s3cret@mlflow.example.org/") == "https://***@mlflow.example.org/"
    assert redact("http://token@host:5000") == "http://***@host:5000"
    assert redact("sqlite:////home/alice/mlruns.db") == "sqlite:////home/alice/mlruns.db"


# The short run names of grid(): 3 and 30 stay apart and sort as numbers, the fixed axes are left out.
NAMES = ["minority=03 norm=bn", "minority=03 norm=none", "minority=30 norm=bn", "minority=30 norm=none"]


def grid(name: str = "ui", minority: tuple[int, ...] = (3, 30)) -> SweepSpec:
    return SweepSpec(
        name=name,
        base=EMBEDDED_MNIST.replace(train={"epochs": 2}),
        axes=(
            Axis("data.train_minority", minority),
            Axis("model.final_norm", ("bn", "none")),
            Axis("model.unfreeze", ("all",), role="fixed"),
            Axis("train.seed", (0,), role="nuisance"),
        ),
    )


def test_short_run_names_hold_the_values_that_vary_and_stay_distinct() -> None:
    spec = grid()
    names = RunNames.of(spec)
    assert [names.name(trial.point) for trial in spec.trials()] == NAMES
    # Two axes ending alike keep one more word each.
    both = SweepSpec("x", TrialConfig(), (Axis("data.train_minority", (1, 2)), Axis("data.val_minority", (3, 4))))
    assert axis_keys(both) == {"data.train_minority": "train_minority", "data.val_minority": "val_minority"}


def test_run_names_sort_as_their_numbers_with_rounded_values() -> None:
    """The runs table sorts names as text: numbers are padded to one width, floats rounded to one precision."""
    lrs = (0.003, 3e-4, 0.00030000000000000003 * 10, 1e-3, 0.1)
    spec = SweepSpec(
        "x",
        TrialConfig(),
        (Axis("data.train_minority", (100, 3, 30)), Axis("train.lr", lrs), Axis("model.final_norm", ("bn", "none"))),
    )
    names = RunNames.of(spec)
    assert [names.value("data.train_minority", str(m)) for m in (100, 3, 30)] == ["100", "003", "030"]
    written = [names.value("train.lr", spec.axes[1].label(i)) for i in range(len(lrs))]
    assert written == ["0.0030", "0.0003", "0.0030", "0.0010", "0.1000"]
    assert sorted(written) == [written[i] for i in sorted(range(len(lrs)), key=lambda i: lrs[i])]
    every = [names.name(trial.point) for trial in spec.trials()]
    assert every[0] == "minority=100 lr=0.0030 norm=bn" and every == [names.name(t.point) for t in spec.trials()]
    # Text and booleans are left as they are.
    assert names.value("model.final_norm", "bn") == "bn"


def test_params_a_data_source_does_not_read_are_not_logged() -> None:
    mnist = EMBEDDED_MNIST
    logged = config_params(mnist)
    assert {"data.plant", "data.group_by_leaf", "data.pool_minority", "data.root"}.isdisjoint(logged)
    assert logged["data.minority"] == ",".join(mnist.data.minority)
    plants = config_params(TrialConfig())
    assert "data.plant" in plants and "data.majority" not in plants
    # Set away from its default it is logged all the same: someone chose it.
    assert config_params(mnist.replace(data={"plant": "Tomato"}))["data.plant"] == "Tomato"
    # The reader puts the left-out fields back: every field, as the trial folder's config has it.
    assert with_unlogged_params(logged) == {k: str(v) for k, v in flatten(mnist).items()}
    assert set(SOURCE_FIELDS) <= set(flatten(mnist))
    assert set().union(*SOURCE_FIELDS.values()) <= set(typing.get_args(Source))


def sweep(spec: SweepSpec, root: Path) -> tuple[object, MlflowClient]:
    uri = f"sqlite:///{root / 'mlruns.db'}"
    tracker = MlflowTracker(uri, artifact_root=root / "artifacts")
    report = run_sweep(spec, SweepOptions(out=root / "results", retries=0), serial(), tracker)
    return report, MlflowClient(uri)


def parents_and_children(client: MlflowClient, name: str) -> tuple[list, list]:
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if PARENT_TAG not in r.data.tags], [r for r in runs if PARENT_TAG in r.data.tags]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, MlflowClient]:
    root = tmp_path_factory.mktemp("tracked")
    report, client = sweep(grid(), root)
    return root, report, client


def test_the_parent_carries_the_axes_and_the_sweeps_numbers(tracked: tuple) -> None:
    _, report, client = tracked
    [parent], children = parents_and_children(client, "ui")
    assert len(children) == len(report.finished) == 4
    params = parent.data.params
    assert params["data.train_minority"] == "3, 30" and params["model.final_norm"] == "bn, none"
    assert params["model.unfreeze"] == "all"
    metrics = parent.data.metrics
    groups = {f"minority:{m} norm:{n}" for m in ("03", "30") for n in ("bn", "none")}
    assert {key.split("/", 1)[1] for key in metrics} == groups
    assert {key.split("/", 1)[0] for key in metrics} == {"minority F1", "majority F1", "trials"}
    assert all(metrics[f"trials/{group}"] == 1 for group in groups)
    # Its counts are those of the end, not of the start.
    tags = parent.data.tags
    assert [tags[COUNT_TAGS[k]] for k in ("finished", "failed", "unfinished")] == ["4", "0", "0"]
    assert tags["finalbn.trials_to_run"] == "4" and tags["finalbn.trials_skipped"] == "0"


def test_children_show_short_names_metrics_and_pictures(tracked: tuple) -> None:
    _, report, client = tracked
    _, children = parents_and_children(client, "ui")
    by_name = {run.info.run_name: run for run in children}
    assert set(by_name) == set(NAMES)
    child = by_name["minority=30 norm=bn"]
    full = "train_minority=30 final_norm=bn unfreeze=all seed=0"
    assert child.data.tags[TRIAL_NAME_TAG] == full
    assert child.data.tags[NOTE_TAG] == f"{full} (trial {child.data.tags[TRIAL_TAG]})"
    assert "data.plant" not in child.data.params
    assert {"final_f1_minority", "final_nobn_f1_minority", "final_accuracy"} <= set(child.data.metrics)
    pictures = {a.path for a in client.list_artifacts(child.info.run_id) if a.path.endswith(".png")}
    assert pictures == {"confusion.png", "learning_curves.png"}
    for name in pictures:
        local = client.download_artifacts(child.info.run_id, name, str(report.folder.parent / child.info.run_id))
        image = imread(local)
        # A real picture: wider than tall for the curves, and not one flat colour.
        assert image.shape[0] > 100 and image.shape[1] > 100 and image[..., :3].std() > 0.05
    # The reader gives analysis every config field back and the full name.
    [record] = [r for r in experiment_runs(client.tracking_uri, "ui") or [] if r.run_id == child.info.run_id]
    assert record.trial_name == full and record.params["data.plant"] == "Apple"


def test_a_rerun_that_trains_nothing_adds_no_parent(tracked: tuple) -> None:
    root, report, client = tracked
    again, client = sweep(grid(), root)
    assert again.skipped == 4 and again.finished == []
    parents, children = parents_and_children(client, "ui")
    assert len(parents) == 1 and len(children) == 4
    # A finished trial whose run was cut short is logged again, under a parent of its own.
    victim = next(run for run in children if run.info.run_name == "minority=03 norm=bn")
    client.set_terminated(victim.info.run_id, "KILLED")
    sweep(grid(), root)
    parents, children = parents_and_children(client, "ui")
    assert len(parents) == 2 and len(children) == 4
    [relogged] = [run for run in children if run.data.tags[TRIAL_TAG] == victim.data.tags[TRIAL_TAG]]
    newest = max(parents, key=lambda run: run.info.start_time)
    assert relogged.data.tags[PARENT_TAG] == newest.info.run_id and newest.info.status == "FINISHED"


def test_a_refused_slurm_launch_records_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.shutil, "which", lambda name: None)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = MlflowTracker(uri, artifact_root=tmp_path / "artifacts")
    backend = slurm(SlurmOptions())
    with pytest.raises(UserError, match="scontrol not found"):
        run_sweep(grid("refused"), SweepOptions(out=tmp_path / "results"), backend, tracker)
    assert MlflowClient(uri).get_experiment_by_name("refused") is None
    assert not (tmp_path / "results" / "refused" / "sweep.json").exists()


def test_a_joint_axis_is_a_param_of_each_child_and_a_column(tmp_path: Path) -> None:
    """headline's ``variant`` sets two fields at once: its label is a param of each child, a column of the
    runs view and of trials.parquet, beside the fields it set."""
    variants = ({"model.final_norm": "none", "train.weighted_loss": True}, {"model.final_norm": "bn"})
    spec = SweepSpec(
        name="joint",
        base=EMBEDDED_MNIST.replace(train={"epochs": 1}),
        axes=(Axis("variant", variants, labels=("WL", "final_BN")), Axis("train.seed", (0,), role="nuisance")),
    )
    report, client = sweep(spec, tmp_path)
    [parent], children = parents_and_children(client, "joint")
    assert parent.data.params["variant"] == "WL, final_BN"
    params = {run.info.run_name: run.data.params for run in children}
    assert params["variant=WL"]["variant"] == "WL" and params["variant=WL"]["train.weighted_loss"] == "True"
    assert params["variant=final_BN"]["variant"] == "final_BN"
    view = client.get_experiment(parent.info.experiment_id).tags[RUNS_VIEW_TAG]
    assert "params.`variant`" in view
    trials = pl.read_parquet(report.folder / "trials.parquet")
    assert sorted(trials["axis.variant"].to_list()) == ["WL", "final_BN"]


def test_a_crash_before_any_trial_leaves_no_empty_parent(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = MlflowTracker(uri, artifact_root=tmp_path / "artifacts")
    with pytest.raises(TypeError, match="pickle"):
        run_sweep(grid("crash"), SweepOptions(out=tmp_path / "results"), crashing_serial(), tracker)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("crash")
    assert client.search_runs([experiment.experiment_id]) == []
    # It was made (another driver needs its id from the start) and is deleted, not left FAILED.
    [deleted] = client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert deleted.info.status == "FAILED" and PARENT_TAG not in deleted.data.tags
    # The next run trains and keeps its own parent.
    report, _ = sweep(grid("crash"), tmp_path)
    assert len(report.finished) == 4
    [parent], _ = parents_and_children(client, "crash")
    assert parent.info.status == "FINISHED"

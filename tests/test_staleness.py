"""Results computed by other code are never reused silently (finalbn.provenance, finalbn.sweep.plan).

The fingerprint is read from a real copy of the source tree, edited for real; the sweeps run on the
serial backend into a real MLflow store, with the planner's fingerprint swapped for the edited copy's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from backends import serial
from mlflow.tracking import MlflowClient

from finalbn import provenance
from finalbn.records import CONFIG, SUMMARY, read_finished
from finalbn.sweep import SweepOptions, run_sweep
from finalbn.sweep.cli import sweep_parser
from finalbn.sweep.plan import plan, set_aside_unusable
from finalbn.sweep.spec import Axis, SweepSpec
from finalbn.tracking import TRIAL_TAG, MlflowTracker, NullTracker
from finalbn.train.presets import EMBEDDED_MNIST

RECIPE = "finalbn/train/recipe.py"
# The functions under their caches: each test reads its own tree.
fingerprint_of = provenance.code_fingerprint.__wrapped__
changed_since = provenance.changed_since.__wrapped__


def spec(minority: tuple[int, ...] = (3,), norms: tuple[str, ...] = ("bn", "none")) -> SweepSpec:
    return SweepSpec(
        name="stale",
        base=EMBEDDED_MNIST.replace(train={"epochs": 1}),
        axes=(Axis("data.train_minority", minority), Axis("model.final_norm", norms)),
    )


def source_copy(into: Path) -> Path:
    """The folder holding a copy of the package's sources, as an install or a checkout holds them."""
    shutil.copytree(provenance.SOURCE_ROOT / "finalbn", into / "finalbn", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def edit(root: Path, name: str) -> None:
    with (root / name).open("a") as handle:
        handle.write("\n# an edit\n")


def git(root: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *arguments]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def test_an_edit_on_the_trial_path_changes_the_fingerprint_and_one_elsewhere_does_not(tmp_path: Path) -> None:
    root = source_copy(tmp_path)
    before = fingerprint_of(root)
    assert before.dirty is None  # no git checkout: the bytes alone decide
    assert {RECIPE, "finalbn/metrics.py", "finalbn/data/images.py", "finalbn/models/net.py"} <= dict(
        before.files
    ).keys()
    for elsewhere in (
        "finalbn/analysis/report.py",
        "finalbn/config.py",
        "finalbn/train/results.py",
        "finalbn/train/__main__.py",
    ):
        edit(root, elsewhere)
    assert fingerprint_of(root) == before
    edit(root, RECIPE)
    (root / "finalbn/models/extra.py").write_text("WIDTH = 2\n")
    after = fingerprint_of(root)
    assert after.digest != before.digest
    assert after.changed_from(dict(before.files)) == ["finalbn/models/extra.py", RECIPE]


def test_git_names_the_files_changed_since_a_commit_and_a_dirty_path(tmp_path: Path) -> None:
    root = source_copy(tmp_path)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "sources")
    commit = git(root, "rev-parse", "HEAD").strip()
    assert fingerprint_of(root).dirty is False and changed_since(commit, root) == ()
    edit(root, "finalbn/analysis/report.py")
    assert fingerprint_of(root).dirty is False and changed_since(commit, root) == ()
    edit(root, RECIPE)
    assert fingerprint_of(root).dirty is True and changed_since(commit, root) == (RECIPE,)
    # Only a revision reaches git's command line: a record is anyone's file.
    for foreign in ("unknown", "--output=/tmp/x", "HEAD", "0" * 40):
        assert changed_since(foreign, root) is None


@pytest.fixture
def edited_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], provenance.CodeFingerprint]]:
    """Swaps the planner's fingerprint for that of a copy of the sources with recipe.py edited."""
    root = source_copy(tmp_path / "edited")
    edit(root, RECIPE)
    edited = fingerprint_of(root)

    def switch() -> provenance.CodeFingerprint:
        monkeypatch.setattr(provenance, "code_fingerprint", lambda: edited)
        # sweep.json's versions are computed once per process: again, from the edited code.
        provenance.code_versions.cache_clear()
        return edited

    yield switch
    provenance.code_versions.cache_clear()


def finished_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("stale")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` != ''")
    return [run for run in children if run.info.status == "FINISHED"]


# Three one-epoch trials and a real MLflow store: about 35 s on 2 busy cores.
@pytest.mark.slow
def test_a_rerun_after_a_code_change_names_the_stale_trials_and_retrains_them_or_keeps_them(
    tmp_path: Path,
    edited_code: Callable[[], provenance.CodeFingerprint],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = tmp_path / "results"

    def sweep(minority: tuple[int, ...], keep_stale: bool = False):
        tracker = MlflowTracker(uri, artifact_root=tmp_path / "artifacts")
        options = SweepOptions(out=out, keep_stale=keep_stale)
        return run_sweep(spec(minority, norms=("bn",)), options, serial(), tracker)

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    first = sweep((3,))
    old = provenance.code_fingerprint().digest
    summary = json.loads((first.folder / "trials" / first.finished[0] / SUMMARY).read_text())
    assert summary["threads"]["env"] == {"OMP_NUM_THREADS": "1"} and summary["threads"]["torch"] >= 1
    assert summary["precision"] in ("float32", "bfloat16")
    capsys.readouterr()

    new = edited_code().digest
    kept = sweep((3, 6), keep_stale=True)
    said = capsys.readouterr().out
    assert "1 trial was computed by other code (finalbn/train/recipe.py changed since): kept (--keep-stale)" in said
    assert kept.skipped == 1 and len(kept.finished) == 1
    trials = pl.read_parquet(kept.folder / "trials.parquet")
    assert sorted(trials["code_fingerprint"]) == sorted([old, new])
    assert set(trials["threads"]) == {summary["threads"]["torch"]}
    # The report says so in its headline.
    from finalbn.analysis.report import write_report

    assert "This sweep mixes 2 code versions" in write_report(kept.folder, gradcam=False, progress=False).headline

    retrained = sweep((3, 6))
    said = capsys.readouterr().out
    assert (
        "1 trial was computed by other code (finalbn/train/recipe.py changed since): retraining them "
        f"(old folders moved to {retrained.folder / 'stale'}); --keep-stale keeps them"
    ) in said
    assert retrained.skipped == 1 and retrained.finished == first.finished
    for trial_id in first.finished:
        record = json.loads((retrained.folder / "trials" / trial_id / CONFIG).read_text())
        assert record["code"]["fingerprint"] == record["versions"]["code_fingerprint"] == new
    aside = sorted(p.name for p in (retrained.folder / "stale").iterdir())
    assert [name.split("-")[0] for name in aside if not name.endswith(".txt")] == sorted(first.finished)
    assert sum(name.endswith(".reason.txt") for name in aside) == 1
    assert set(pl.read_parquet(retrained.folder / "trials.parquet")["code_fingerprint"]) == {new}
    # One finished run per trial: the stale trial's old run went when it was retrained.
    runs = finished_runs(MlflowClient(uri))
    assert sorted(run.data.tags[TRIAL_TAG] for run in runs) == sorted(set(first.finished) | set(kept.finished))

    again = sweep((3, 6))
    assert again.skipped == 2 and again.finished == []
    assert "computed by other code" not in capsys.readouterr().out
    assert len(finished_runs(MlflowClient(uri))) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    run_sweep(spec(), SweepOptions(out=out), serial(), NullTracker())
    return out


def without_code(folder: Path, commit: str) -> None:
    """The trial's records as a finalbn from before fingerprints and thread counts wrote them."""
    record = json.loads((folder / CONFIG).read_text())
    record.pop("code", None)
    record["versions"].pop("code_fingerprint", None)
    record["versions"]["git_commit"] = commit
    (folder / CONFIG).write_text(json.dumps(record))
    summary = json.loads((folder / SUMMARY).read_text())
    summary.pop("threads", None)
    (folder / SUMMARY).write_text(json.dumps(summary))


def test_a_trial_from_before_fingerprints_is_judged_by_its_commit_or_kept_and_said_so(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = shutil.copytree(trained, tmp_path / "out")
    jobs = plan(spec(), out / "stale", git_commit="unknown")
    changed, unchanged = "c" * 40, "d" * 40
    without_code(jobs[0].folder, changed)
    without_code(jobs[1].folder, unchanged)
    for job in jobs:
        read_finished(job.folder, job.trial_id, 1)  # old records still validate
    monkeypatch.setattr(provenance, "changed_since", lambda commit: {changed: (RECIPE,), unchanged: ()}[commit])
    assert set_aside_unusable(jobs, keep_stale=True) == [
        f"1 trial was computed by other code ({RECIPE} changed since): kept (--keep-stale); "
        "trials.parquet's code_fingerprint column tells them apart"
    ]
    assert set_aside_unusable(jobs)[0].startswith(f"1 trial was computed by other code ({RECIPE} changed since)")
    assert not jobs[0].folder.exists() and jobs[1].folder.exists()

    without_code(jobs[1].folder, "unknown")
    monkeypatch.setattr(provenance, "changed_since", lambda commit: None)
    assert set_aside_unusable(jobs) == [
        "1 trial was finished before finalbn recorded which code trains a trial, and git cannot compare their "
        f"commit with this code: kept; move their folders out of {jobs[1].folder.parent} to retrain them"
    ]
    assert jobs[1].folder.exists()


def test_keep_stale_is_a_sweep_flag() -> None:
    parser = sweep_parser("imbalance_ratio", None)
    assert parser.parse_args(["--keep-stale"]).keep_stale is True
    assert parser.parse_args([]).keep_stale is False

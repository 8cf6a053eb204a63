"""Registries carry their metadata: every registered backbone has its cost entry (and the dry run works for it),
and the cost entries, off the code fingerprint's path, mark no finished trial stale."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from finalbn.errors import UserError
from finalbn.models import BACKBONES
from finalbn.models.costs import FORWARD_COSTS, forward_cost
from finalbn.provenance import CODE_PATH, OFF_PATH, SOURCE_ROOT, code_fingerprint
from finalbn.sweep.cli import dry_run, run_script
from finalbn.sweep.experiments import build_sweeps

COSTS = "finalbn/models/costs.py"


def test_every_registered_backbone_has_a_cost_entry_and_every_entry_a_backbone() -> None:
    assert set(FORWARD_COSTS) == set(BACKBONES)
    for name in BACKBONES:
        cost = forward_cost(name)
        assert 0 < cost.gpu < cost.cpu, name


def test_a_backbone_without_a_cost_entry_is_one_user_error_naming_it_and_the_file() -> None:
    with pytest.raises(UserError) as raised:
        forward_cost("resnet152")
    message = str(raised.value)
    assert "'resnet152'" in message and COSTS in message and "\n" not in message


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_the_dry_run_costs_every_registered_backbone(backbone: str) -> None:
    [spec] = build_sweeps("headline", "laptop", None)
    spec = dataclasses.replace(spec, base=spec.base.replace(model={"backbone": backbone}))
    text = dry_run(spec)
    assert "estimated cost on cpu" in text and "(0 trial-seconds" not in text


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_the_headline_scripts_dry_run_works_for_every_registered_backbone(
    backbone: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_script("headline", None, ["--dry-run", "--set", f"model.backbone={backbone}"]) == 0
    out = capsys.readouterr().out
    assert f"headline-laptop+model.backbone={backbone}" in out and "estimated cost on gpu" in out


def test_a_backbone_missing_its_cost_entry_fails_the_dry_run_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(FORWARD_COSTS, "resnet18")
    assert run_script("headline", None, ["--dry-run", "--set", "model.backbone=resnet18"]) == 2
    err = capsys.readouterr().err
    assert "'resnet18' has no cost entry" in err and COSTS in err and "KeyError" not in err


def _copy_code_path(destination: Path, leave_out: str | None = None) -> Path:
    for entry in CODE_PATH:
        source = SOURCE_ROOT / entry
        if source.is_dir():
            shutil.copytree(source, destination / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / entry)
    if leave_out is not None:
        (destination / leave_out).unlink()
    return destination


def test_the_cost_entries_are_off_the_code_fingerprints_path(tmp_path: Path) -> None:
    assert COSTS in OFF_PATH
    here = code_fingerprint()
    assert COSTS not in dict(here.files)
    without = code_fingerprint(_copy_code_path(tmp_path / "without", leave_out=COSTS))
    assert without.digest == here.digest
    # The comparison can fail: a models file that is on the path changes the digest.
    planted = _copy_code_path(tmp_path / "planted")
    (planted / "finalbn/models/extra.py").write_text("X = 1\n")
    assert code_fingerprint(planted).digest != here.digest

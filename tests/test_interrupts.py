"""Ctrl-C is never lost, even when Python swallows it in a finalizer.

CI caught it for real: the SIGINT landed inside a SQLAlchemy weakref callback,
Python printed "Exception ignored in", and the sweep trained to the end and
exited 0. These tests swallow one on purpose, in the driver's own process.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from faults import env, swallow_an_interrupt
from fixtures_sweep import runs, spec, sweep
from mlflow.tracking import MlflowClient

from finalbn.console import guarded, interrupts
from finalbn.launch.ray_tune import _Relay


@pytest.fixture
def swallowed(monkeypatch: pytest.MonkeyPatch) -> list[type[BaseException]]:
    """What Python swallowed in finalizers during the test (it hands those to sys.unraisablehook)."""
    seen: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_type))
    return seen


def test_a_swallowed_interrupt_still_exits_130(swallowed: list[type[BaseException]]) -> None:
    reached = []

    def action() -> None:
        swallow_an_interrupt()
        reached.append("after")

    # Whatever SIGINT did before is put back: Python's default handler in a terminal, SIG_IGN where a
    # non-interactive shell started this process in the background (bash ignores SIGINT for such jobs).
    before = signal.getsignal(signal.SIGINT)
    assert guarded(action, debug=False) == 130
    assert swallowed == [KeyboardInterrupt] and reached == ["after"]
    assert signal.getsignal(signal.SIGINT) is before
    # The next command starts clean.
    assert guarded(lambda: None, debug=False) == 0


def test_a_serial_sweep_stops_at_the_next_event_and_resumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    swallowed: list[type[BaseException]],
) -> None:
    # Four trials: the interrupt lands in the first, and the rest never start.
    name, grid = "swallowed", spec("swallowed", minority_counts=(3,))
    for key, value in env("sigint:seed=0:1").items():
        monkeypatch.setenv(key, value)
    assert guarded(lambda: sweep(grid, tmp_path), debug=False) == 130
    assert swallowed == [KeyboardInterrupt]
    out = capsys.readouterr().out
    assert "interrupted: 0 trials finished in this run, 4 did not" in out
    folder = tmp_path / "results" / name
    assert not list(folder.glob("trials/*/summary.json"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert sorted({r.info.status for r in runs(client, name)}) == ["KILLED"]

    monkeypatch.delenv("FINALBN_FAULT")
    report, client = sweep(grid, tmp_path)
    assert len(report.finished) == 4 and report.skipped == 0
    assert not [r for r in runs(client, name) if r.info.status == "RUNNING"]


def test_tune_steps_raise_a_swallowed_interrupt(swallowed: list[type[BaseException]]) -> None:
    relay = _Relay({}, events=None)  # type: ignore[arg-type]
    relay.on_step_begin(iteration=0, trials=[])
    previous = signal.signal(signal.SIGINT, interrupts.handle)
    try:
        swallow_an_interrupt()
        assert swallowed == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            relay.on_step_begin(iteration=1, trials=[])
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts.reset()

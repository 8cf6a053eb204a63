"""The product as a person runs it: the README's commands in a real pseudo-terminal (pexpect),
stopped by Ctrl-C, SIGTERM and ``finalbn cancel``, piped into ``head``.

Everything else in the suite runs commands with their output piped, where rich's live display,
the terminal's width and its signals never come into play; the README's first command crashed in
every terminal (Tune pickled the live display) while those tests passed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import polars as pl
import pytest
from fixtures_sweep import FinishedSweep
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "sweeps" / "imbalance_ratio.py"
FINALBN = str(Path(sys.executable).parent / "finalbn")
NAME = "imbalance_ratio-smoke"
# Trials of the smoke preset: 2 minority counts x final BN on/off x 2 seeds.
TRIALS = 8
# What a crashed or aborted process prints, never a stopped sweep.
CRASH = ("Traceback", "SIGTERM received", "Aborted", "core dumped", "Exception ignored")

pytestmark = pytest.mark.slow


def terminal(args: list[str], cwd: Path, timeout: float = 300) -> pexpect.spawn:
    """``args`` on a pseudo-terminal of 40 x 120, as a person's shell runs it (its own session, the
    terminal's foreground process group, so the terminal's Ctrl-C reaches it as a person's would)."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    return pexpect.spawn(
        args[0], args[1:], cwd=str(cwd), env=env, encoding="utf-8", timeout=timeout, dimensions=(40, 120)
    )


def finish(child: pexpect.spawn) -> tuple[int | None, str]:
    """Wait for the command to end; its exit status (None if a signal killed it) and everything it drew."""
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before if isinstance(child.before, str) else ""


def sweep_args(out: Path, *extra: str) -> list[str]:
    uri = f"sqlite:///{out / 'mlruns.db'}"
    return [sys.executable, str(SWEEP), "--preset", "smoke", "--out", str(out), "--tracking-uri", uri, *extra]


def all_runs(out: Path) -> list:
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    return client.search_runs([client.get_experiment_by_name(NAME).experiment_id])


def child_runs(out: Path) -> list:
    return [r for r in all_runs(out) if r.data.tags.get("finalbn.trial_id")]


def listening_sockets(root_pid: int) -> dict[int, list[str]]:
    """pid -> "address:port" of each TCP socket it listens on, for ``root_pid`` and its descendants,
    read from /proc (what ``ss -ltnp`` shows, without needing iproute2 or psutil)."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                listening[fields[9]] = f"{_address(address)}:{int(port, 16)}"
    found: dict[int, list[str]] = {}
    for pid in _descendants(root_pid):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # it ended meanwhile
            continue
        inodes = [link[len("socket:[") : -1] for link in links if link.startswith("socket:[")]
        found[pid] = [listening[inode] for inode in inodes if inode in listening]
    return {pid: sockets for pid, sockets in found.items() if sockets}


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp's address: 32-bit words in the host's (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def test_the_readme_main_command_runs_in_a_terminal_and_listens_on_no_port(tmp_path: Path) -> None:
    """``bash scripts/dev main`` (the smoke preset, to keep it short) with rich's live display on a terminal;
    while its workers train, no process of the sweep's tree listens on any TCP port (the workers talk to the
    driver over socket pairs; MLflow is a SQLite file)."""
    out = tmp_path / "results"
    child = terminal(["bash", str(REPO / "scripts" / "dev"), "main", *sweep_args(out)[2:]], cwd=tmp_path)
    child.expect(r"done 1 ")
    tree, sockets = _descendants(child.pid), listening_sockets(child.pid)
    status, drawn = finish(child)
    assert status == 0, drawn[-3000:]
    assert not [word for word in CRASH if word in drawn]
    # The driver and its two workers were up when the check looked, and none of them listened.
    assert len(tree) >= 3, tree
    assert sockets == {}, f"listening: {sockets}"
    # The live display drew (cursor movement), and the table is the whole table, not squeezed to the terminal.
    assert "\x1b[" in drawn and f"[{TRIALS}/{TRIALS}]" in drawn
    assert "data.train_minority" in drawn and "minority F1" in drawn
    assert f"{NAME}: {TRIALS} trained, 0 skipped" in drawn
    assert {r.info.status for r in child_runs(out)} == {"FINISHED"} and len(child_runs(out)) == TRIALS


def test_a_private_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    """``--backend ray`` without a cluster's address: while its private Ray runs, every socket of the sweep's
    process tree listens on 127.0.0.1 only; the README's Ray Tune recipe, as written, opens the sweep after,
    and Tune's own view holds the axes, each trial's id and final metrics, the numbers of trials.parquet."""
    out = tmp_path / "results"
    env_address = os.environ.pop("RAY_ADDRESS", None)
    try:
        child = terminal([*sweep_args(out, "--backend", "ray")], cwd=tmp_path)
        child.expect(r"done 1 ")
        sockets = listening_sockets(child.pid)
        status, drawn = finish(child)
    finally:
        if env_address is not None:
            os.environ["RAY_ADDRESS"] = env_address
    assert status == 0, drawn[-3000:]
    # Ray's servers (GCS, raylet, workers, agents) were up: the check saw them.
    assert len(sockets) >= 3, sockets
    open_beyond = {pid: s for pid, s in sockets.items() if not all(_loopback(a) for a in s)}
    assert not open_beyond, f"listening beyond loopback: {open_beyond}"
    recipe = _readme_block("**Ray Tune's view.**").replace("imbalance_ratio-laptop", NAME)
    view = "import json\nprint(json.dumps({'columns': list(frame.columns), 'rows': frame.to_dict('records')}))"
    shown = subprocess.run([sys.executable, "-c", f"{recipe}\n{view}"], cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    tune = json.loads(shown.stdout.strip().splitlines()[-1])
    for column in (
        "config/data.train_minority",
        "config/model.final_norm",
        "config/train.seed",
        "config/finalbn.trial_id",
        "final_f1_minority",
        "final_nobn_f1_minority",
    ):
        assert column in tune["columns"], column
    f1 = {row["config/finalbn.trial_id"]: row["final_f1_minority"] for row in tune["rows"]}
    trials = pl.read_parquet(out / NAME / "trials.parquet")
    assert len(tune["rows"]) == TRIALS and sorted(f1) == sorted(trials["trial_id"])
    assert [f1[t] for t in trials["trial_id"]] == pytest.approx(trials["f1_minority"].to_list())
    # The parent and one finished child run per trial, logged by the driver from what Tune reported.
    assert len(all_runs(out)) == TRIALS + 1 and {r.info.status for r in child_runs(out)} == {"FINISHED"}


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback


def _readme_block(after: str) -> str:
    """The first python code block of the README after the line holding ``after``."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after) :]
    start = rest.index("```python\n") + len("```python\n")
    return rest[start : rest.index("```", start)]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "finalbn cancel"])
def test_a_local_sweep_stopped_by_a_person_exits_130_and_resumes(tmp_path: Path, stop: str) -> None:
    out = tmp_path / "results"
    child = terminal(sweep_args(out), cwd=tmp_path)
    child.expect(r"done 1 ")
    workers = [pid for pid in _descendants(child.pid) if pid != child.pid]
    if stop == "ctrl-c":
        child.sendintr()
    elif stop == "sigterm":
        os.kill(child.pid, signal.SIGTERM)
    else:
        cancelled = subprocess.run(
            [FINALBN, "cancel", NAME, "--results-root", str(out)], capture_output=True, text=True
        )
        assert cancelled.returncode == 0 and f"sent SIGTERM to the sweep's driver, pid {child.pid}" in cancelled.stdout
    started = time.monotonic()
    status, drawn = finish(child)
    stopped_in = time.monotonic() - started
    assert status == 130, drawn[-3000:]
    assert not [word for word in CRASH if word in drawn], drawn[-3000:]
    assert re.search(r"interrupted: \d+ trials finished in this run, \d+ did not; rerun the same command", drawn)
    # The invocation's parent run is KILLED; so is any trial's run that had begun (a run starts at its first epoch).
    states = [r.info.status for r in all_runs(out)]
    assert "FAILED" not in states and "RUNNING" not in states and "KILLED" in states, states
    # The workers went with their sweep: none of them is left.
    assert len(workers) >= 2
    assert not _alive_after(workers, seconds=15), f"left running {stopped_in:.0f} s after the stop"
    if stop == "finalbn cancel":
        # It sent the driver the SIGTERM of the "sigterm" case (asserted above): the resume is that case's.
        return

    again = terminal(sweep_args(out), cwd=tmp_path)
    status, drawn = finish(again)
    assert status == 0, drawn[-3000:]
    done_before = int(re.search(rf"{NAME}: {TRIALS} trials, (\d+) finished earlier \(skipped\)", drawn).group(1))
    assert 1 <= done_before < TRIALS
    runs = child_runs(out)
    by_trial = {r.data.tags["finalbn.trial_id"] for r in runs}
    # One finished run per trial: the killed runs of the trials it retrained are gone.
    assert len(runs) == len(by_trial) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}


def _alive_after(pids: list[int], seconds: float) -> list[int]:
    """Of ``pids``, those still running (not zombies) after up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_status_into_a_reader_that_stops_early_is_quiet(imbalance_smoke: FinishedSweep, tmp_path: Path) -> None:
    """``finalbn status`` of a finished smoke sweep (the session's, tests/fixtures_sweep.py, which status only
    reads) piped into readers that stop early or read nothing."""
    out = imbalance_smoke.folder.parent
    assert imbalance_smoke.folder.name == NAME
    for reader in ("head -1", "true"):
        piped = subprocess.run(
            f"{FINALBN} status {NAME} --results-root {out} | {reader}",
            shell=True,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    first = subprocess.run(
        f"{FINALBN} status {NAME} --results-root {out} | head -1", shell=True, capture_output=True, text=True
    )
    assert first.stdout.startswith(f"{NAME}: {TRIALS} trials: {TRIALS} done")


def test_serial_sweep_train_and_report_work_in_a_terminal(tmp_path: Path) -> None:
    """The in-process backend's live display, ``finalbn train`` and an analysis script, each on a terminal."""
    out = tmp_path / "results"
    status, drawn = finish(terminal(sweep_args(out, "--backend", "serial"), cwd=tmp_path))
    assert status == 0 and f"[{TRIALS}/{TRIALS}]" in drawn and "report:" in drawn, drawn[-3000:]
    status, drawn = finish(terminal([FINALBN, "train", "--epochs", "1", "--out", str(tmp_path / "runs")], tmp_path))
    assert status == 0 and "test" in drawn, drawn[-3000:]
    analysis = REPO / "analysis"
    for script in ("threshold.py", "batch_optimum.py"):
        status, drawn = finish(terminal([sys.executable, str(analysis / script), "--help"], tmp_path))
        assert status == 0 and "usage:" in drawn, drawn[-3000:]
    status, drawn = finish(terminal([sys.executable, str(analysis / "threshold.py"), str(out / NAME)], tmp_path))
    assert status == 0 and "f1_minority" in drawn, drawn[-3000:]
    status, drawn = finish(terminal([FINALBN, "status", NAME, "--results-root", str(out)], tmp_path))
    assert status == 0 and f"{NAME}: {TRIALS} trials: {TRIALS} done" in drawn, drawn[-3000:]
    report = [
        sys.executable,
        str(REPO / "analysis" / "report.py"),
        str(out / NAME),
        "--out",
        str(tmp_path / "r"),
        "--no-gradcam",
        "--no-log",
    ]
    status, drawn = finish(terminal(report, cwd=tmp_path))
    assert status == 0 and (tmp_path / "r" / "report.html").exists(), drawn[-3000:]
    assert not [word for word in CRASH if word in drawn]

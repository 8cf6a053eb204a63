"""Claims: a trial trains once, whichever driver or worker starts it.

A claim is a small JSON file, ``<sweep>/claims/<name>.json``, naming its owner
(host, pid, Slurm task, when it started); the process holding it refreshes the
file's mtime every ``HEARTBEAT_SECONDS``. Workers claim a trial just before it
trains, so two drivers on one folder share the trials instead of each training
all of them; drivers claim themselves (``driver-<host>-<pid>``) so that another
driver knows which MLflow parent run is still alive.

A claim is taken over only when its owner is gone: its pid is dead on this
host, it is the same Slurm array task (requeued), or its heartbeat is older
than ``STALE_SECONDS`` (an owner on another node cannot be asked). A
heartbeat's age is read on the file system's clock, not this host's (see
``_file_system_now``): nodes whose clocks disagree still agree on it. Every
decision is made under one file lock per sweep folder, so two processes that
find the same stale claim do not both take it.

Lives outside finalbn.sweep because the workers (finalbn.launch) take the
trial claims and the driver (finalbn.sweep) waits on them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock

from finalbn.records import RecordError, read_json, write_json
from finalbn.records.folders import CLAIMS

HEARTBEAT_SECONDS = 5.0
# Twelve missed heartbeats: a loaded node or a slow shared file system is not a dead owner.
STALE_SECONDS = 60.0
_DRIVER_PREFIX = "driver-"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    # "<array job>_<task>" inside a Slurm array task, else "".
    slurm_task: str
    started: float
    # A driver's MLflow parent run id ("" for a trial's claim, or with tracking off).
    run: str = ""

    @classmethod
    def me(cls, run: str = "") -> Owner:
        env = os.environ
        job = env.get("SLURM_ARRAY_JOB_ID", "")
        task = f"{job}_{env.get('SLURM_ARRAY_TASK_ID', '')}" if job else ""
        return cls(socket.gethostname(), os.getpid(), task, time.time(), run)

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


class ClaimedElsewhere(Exception):
    """The trial is not this process's to train: ``owner`` trains it, or (None) another owner finished it."""

    def __init__(self, claim: Path, owner: Owner | None) -> None:
        self.owner = owner
        super().__init__(f"{claim.stem}: {'finished by another driver' if owner is None else f'claimed by {owner}'}")


@dataclass(frozen=True)
class Claim:
    """A claim this process holds, kept alive by a heartbeat thread until ``release``."""

    path: Path
    owner: Owner
    stop: threading.Event

    def release(self) -> None:
        self.stop.set()
        with _lock(self.path.parent):
            if _owner(self.path) == self.owner:
                self.path.unlink()


def trial_claim(trial_folder: Path) -> Path:
    """The claim file of the trial whose result folder is ``<sweep>/trials/<trial id>``."""
    return trial_folder.parent.parent / CLAIMS / f"{trial_folder.name}.json"


def driver_claim(sweep_folder: Path) -> Path:
    return sweep_folder / CLAIMS / f"{_DRIVER_PREFIX}{socket.gethostname()}-{os.getpid()}.json"


def acquire(
    path: Path, run: str = "", heartbeat: float = HEARTBEAT_SECONDS, stale_after: float = STALE_SECONDS
) -> Claim:
    """Claim ``path`` for this process, taking it over from an owner that is gone;
    ``ClaimedElsewhere`` when a live owner holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Owner.me(run)
    with _lock(path.parent):
        holder = live_owner(path, stale_after)
        if holder is not None and not _is_me(holder, me):
            raise ClaimedElsewhere(path, holder)
        write_json(path, asdict(me))
    claim = Claim(path, me, threading.Event())
    threading.Thread(target=_beat, args=(claim, heartbeat), name=f"claim {path.stem}", daemon=True).start()
    return claim


@contextmanager
def hold(path: Path, heartbeat: float = HEARTBEAT_SECONDS, stale_after: float = STALE_SECONDS) -> Iterator[Claim]:
    """The claim for the duration of the block; released however the block ends (SIGTERM arrives as
    KeyboardInterrupt, see finalbn.console); a SIGKILLed owner's claim goes stale instead."""
    claim = acquire(path, heartbeat=heartbeat, stale_after=stale_after)
    try:
        yield claim
    finally:
        claim.release()


def live_owner(path: Path, stale_after: float = STALE_SECONDS) -> Owner | None:
    """Who holds the claim at ``path``; None when nobody does or its owner is gone."""
    owner = _owner(path)
    if owner is None:
        return None
    try:
        age = _file_system_now(path.parent) - path.stat().st_mtime
    except FileNotFoundError:
        return None
    return None if _gone(owner, age, stale_after) else owner


def _file_system_now(folder: Path) -> float:
    """Now, by the clock that stamps the heartbeats in ``folder``: the mtime of a file made there this instant.

    The heartbeat touches its claim without explicit times, which a shared file system's server stamps
    by its own clock (NFS: SET_TO_SERVER_TIME), as it stamps a new file; ``time.time()`` on a node whose
    clock runs a minute ahead would call every live claim stale. On a local disk both are this host's clock.
    """
    with tempfile.TemporaryFile(dir=folder) as probe:
        return os.fstat(probe.fileno()).st_mtime


def live_drivers(sweep_folder: Path, stale_after: float = STALE_SECONDS) -> list[Owner]:
    """The other drivers running on this sweep folder now."""
    me = Owner.me()
    found = (live_owner(path, stale_after) for path in (sweep_folder / CLAIMS).glob(f"{_DRIVER_PREFIX}*.json"))
    return [owner for owner in found if owner is not None and not _is_me(owner, me)]


@contextmanager
def sweep_lock(sweep_folder: Path) -> Iterator[None]:
    """Serialise a driver's start (closing stale MLflow runs, opening its parent, claiming itself) with others'."""
    folder = sweep_folder / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder):
        yield


def _lock(folder: Path) -> filelock.BaseFileLock:
    # One instance per path: a driver that holds the sweep lock claims itself under it (reentrant).
    return filelock.FileLock(folder / ".lock", is_singleton=True)


def _owner(path: Path) -> Owner | None:
    """The recorded owner; None for no claim or a record that does not validate (nobody can be waited on)."""
    try:
        return read_json(path, Owner)
    except RecordError:
        return None


def _is_me(owner: Owner, me: Owner) -> bool:
    return (owner.host, owner.pid) == (me.host, me.pid)


def _gone(owner: Owner, age: float, stale_after: float) -> bool:
    me = Owner.me()
    if owner.slurm_task and owner.slurm_task == me.slurm_task and not _is_me(owner, me):
        return True  # this very array task, requeued after preemption or a time-out
    if age > stale_after:
        return True
    return owner.host == me.host and not _pid_alive(owner.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _beat(claim: Claim, interval: float) -> None:
    """Refresh the claim's mtime until released, or until it is no longer ours (taken over while we stalled)."""
    while not claim.stop.wait(interval):
        if _owner(claim.path) != claim.owner:
            return
        try:
            os.utime(claim.path)
        except FileNotFoundError:
            return

"""Fault injection for tests, loaded into workers through FINALBN_TRIAL_HOOK=faults:inject.

FINALBN_FAULT="MODE:SELECTOR[:N]". MODE "raise" raises in the trial, "exit"
kills its worker process (os._exit), "sigint" sends the worker process a
Ctrl-C that a finalizer swallows (Python prints "Exception ignored in" and
goes on; under the serial backend the worker is the driver), "memory" raises
MemoryError, "readonly" remounts the file system at FINALBN_FAULT_PATH
read-only (a real EROFS, which root cannot write past either), "remove"
deletes the file FINALBN_FAULT_PATH; the trial then goes on and meets what
the fault left. SELECTOR "p=0.3" hits that fraction of
trials (by trial-id hash, so the same ones every run), any other text hits
trials whose readable name contains it. N limits the fault to a trial's first
N attempts. Workers import this module from tests/ (on PYTHONPATH, see ``env``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from finalbn.launch.base import TRIAL_HOOK_ENV, failed_attempts
from finalbn.sweep.jobs import TrialJob

FAULT_ENV = "FINALBN_FAULT"
# The file system or file a "readonly" or "remove" fault acts on.
PATH_ENV = "FINALBN_FAULT_PATH"
TESTS = Path(__file__).resolve().parent


def env(rule: str, target: Path | None = None) -> dict[str, str]:
    """The environment that injects ``rule`` into every worker of a sweep started with it; ``target``:
    what a "readonly" or "remove" fault acts on."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {FAULT_ENV: rule, TRIAL_HOOK_ENV: "faults:inject", "PYTHONPATH": path} | (
        {PATH_ENV: str(target)} if target is not None else {}
    )


def inject(job: TrialJob) -> None:
    rule = os.environ.get(FAULT_ENV, "")
    if not rule:
        return
    mode, selector, *limit = rule.split(":", 2)
    if limit and failed_attempts(job) >= int(limit[0]):
        return
    if selector.startswith("p="):
        hit = int(hashlib.sha256(job.trial_id.encode()).hexdigest()[:8], 16) / 16**8 < float(selector[2:])
    else:
        hit = selector in job.name
    if not hit:
        return
    if mode == "exit":
        os._exit(3)
    if mode == "sigint":
        swallow_an_interrupt()
        return
    if mode == "memory":
        raise MemoryError(f"fault injected by {FAULT_ENV}={rule}")
    if mode == "readonly":
        subprocess.run(["mount", "-o", "remount,ro", os.environ[PATH_ENV]], check=True)
        return
    if mode == "remove":
        Path(os.environ[PATH_ENV]).unlink()
        return
    raise RuntimeError(f"fault injected by {FAULT_ENV}={rule}")


def swallow_an_interrupt() -> None:
    """Send this process a SIGINT from inside a finalizer, where Python can only print what its handler raises."""
    _Finalizer()


class _Finalizer:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        # The handler runs at the next bytecode, still inside __del__, which can only print it.
        for _ in range(3):
            pass


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``mount``, unmounted afterwards; skips the test where mount is refused."""
    mount.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        import pytest  # here: workers import this module too, and need no pytest

        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}); CI runs as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

"""Faults every later trial would repeat (a full disk, a read-only folder, a lost MLflow store, no memory,
no threads), told apart once: what the driver catches (``fault_of``) and what a worker's traceback says
(``fault_in``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from traceback import format_exception_only

from finalbn.errors import UserError
from finalbn.records.write import DISK_FULL, FULL_TEXTS


@dataclass(frozen=True)
class Fault:
    """A failure every later trial would repeat: the sweep stops on it with one line (exit 2) instead of
    retrying, and the same command resumes once it is fixed."""

    # How the line starts; a UserError line that starts so is recognised again in a worker's traceback.
    what: str
    # The OS's or a library's own words for it, found in a traceback's text.
    pattern: re.Pattern[str]
    # The fix; ``{store}`` names the MLflow store where it is known.
    fix: str


# Each fault once: what the driver catches (fault_of) and what a worker's traceback says (fault_in) are told
# apart here only. A worker's failure reaches the driver as text (a Ray worker is another process), so the
# matchers read text. Measured causes: a read-only remount of --out; mlruns.db deleted mid-sweep (SQLite then
# says "readonly database", or "no such table" on a new connection); ulimit -v between about 5 and 6.5 GB on
# a smoke sweep ("failed to map segment" when a trial imports scipy; below that nothing starts, above it all fits).
FAULTS = (
    Fault(
        DISK_FULL,
        re.compile("|".join(map(re.escape, FULL_TEXTS))),
        "free space there or pass --out on a disk with room",
    ),
    Fault(
        "not writable",
        re.compile(r"\[Errno (?:13|30)\] (?:Permission denied|Read-only file system)"),
        "make it writable (chmod u+w, or remount it read-write) or pass --out with a writable folder",
    ),
    Fault(
        "MLflow store lost",
        re.compile(r"(?:no such table|unable to open database file|attempt to write a readonly database)"),
        "{store} was removed or made read-only while the sweep ran (a rerun makes a new one; --no-tracking "
        "turns MLflow off)",
    ),
    Fault(
        "out of memory",
        re.compile(
            r"MemoryError|OutOfMemoryError|CUDA out of memory|std::bad_alloc|Cannot allocate memory"
            r"|failed to map segment from shared object"
        ),
        "run fewer trials at once (--max-concurrent) or smaller ones (--set train.batch_size=N), or raise the "
        "memory limit (ulimit -v)",
    ),
    Fault(
        "cannot start a thread",
        re.compile(r"pthread_create failed|can't start new thread|can't create new thread"),
        "run fewer trials at once (--max-concurrent) or raise the limits on processes and memory (ulimit -u, -v)",
    ),
)
_RESUME = "then rerun the same command to resume"
_OURS = re.compile(r"UserError: ((?:" + "|".join(re.escape(f.what) for f in FAULTS) + r"): [^\n]*)")


def fault_in(traceback: str, store: str = "the MLflow store", where: str = "a trial") -> str | None:
    """The one line for a fault (``FAULTS``) in a failed attempt's traceback (``where`` stopped on it), or
    None: a trial's own bug. Our own line is kept as it is; a library's is quoted with the fix."""
    ours = _OURS.search(traceback)
    if ours is not None:
        return ours.group(1)
    for fault in FAULTS:
        # The last mention: a traceback ends with its exception, after the source lines that raised it.
        found = next(reversed(list(fault.pattern.finditer(traceback))), None)
        if found is not None:
            start = traceback.rfind("\n", 0, found.start()) + 1
            end = traceback.find("\n", found.end())
            quoted = traceback[start : None if end < 0 else end].strip()[:300]
            return f"{fault.what}: {where} stopped on {quoted}: {fault.fix.format(store=store)}, {_RESUME}"
    return None


def fault_of(error: BaseException, store: str = "the MLflow store") -> UserError | None:
    """A caught error as its fault's one-line UserError, or None. The first cause is read first: a read-only
    folder that fails a write fails the cleanup after it too, and the write is the one to name."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in reversed(chain):
        if isinstance(cause, UserError):
            return cause
        line = fault_in("".join(format_exception_only(cause)), store, where="the sweep")
        if line is not None:
            return UserError(line)
    return None

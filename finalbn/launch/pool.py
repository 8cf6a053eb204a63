"""``--backend local``: the trials on this machine's cores, in worker processes that stay warm.

One process, the zygote, starts with the sweep's executor, before the driver plans: it imports torch and
finalbn meanwhile and, at the first submit, forks every worker from itself, warm. Each worker then trains trial
after trial through ``run_attempts`` (claims and retries as in the serial backend); the driver hands out the
jobs and hears every trial event through one queue, so failure records and MLflow are written in the driver,
exactly as for the serial backend.

Why not Ray here (``--backend ray`` still runs a cluster through Ray Tune): on one machine, starting a private
Ray and passing every trial through Tune cost as much as a small trial itself, and a head-only sweep on cached
features ran no faster on the local backend than on the serial one. Why not ``concurrent.futures`` or
``multiprocessing``: on Python 3.11 a ``ProcessPoolExecutor`` can neither kill its workers (Ctrl-C,
``finalbn cancel``) nor go on after one of them died (every pending future breaks), ``multiprocessing.Pool``
waits forever for a dead worker's task, and their spawned workers import the caller's main module again (a
script without a ``__main__`` guard would start its sweep once more in every worker). So the zygote is a plain
``python -m finalbn.launch.pool`` process, and each worker talks to the driver on one end of a socket pair: none
listens on a port. Why a zygote: each worker importing torch, torch._dynamo and scikit-learn for itself cost
~4.5 s of a core per worker, on the cores the trials need; a fork of a warm process costs milliseconds.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle, send_handle
from typing import NoReturn

from finalbn.console import interrupts
from finalbn.launch.base import DriverBound, InDriver, Launch, TrialEvents, local_slots, run_attempts, trial_threads
from finalbn.sweep.claims import Owner
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.options import SweepOptions

# How long the driver waits for a worker's event before it looks for dead workers and swallowed interrupts.
_POLL_SECONDS = 0.2
# A worker told to stop (the sweep is done) gets this long to exit before it is killed.
_STOP_SECONDS = 5.0
# How often the zygote reaps its exited workers (their exit codes go to the driver).
_REAP_SECONDS = 0.1
# How long the driver waits for the zygote to kill its workers and exit.
_KILL_SECONDS = 1.0
# The pool's end, told to the zygote: its workers exit between trials, or are killed (Ctrl-C, SIGTERM).
_STOP, _KILL = "stop", "kill"


class PoolBackend(DriverBound):
    runs_here = True

    def __init__(self, name: str) -> None:
        self.name = name

    def slots(self, max_concurrent: int | None, cpus_per_trial: float) -> int:
        return local_slots(max_concurrent, cpus_per_trial)

    def executor(self, launch: Launch) -> InDriver:
        options = launch.options
        size = self.slots(options.max_concurrent, options.cpus_per_trial)
        pool = _Pool(self.name, options, min(size, gpu_slots(options.gpus_per_trial) or size))
        # Started with the executor, before the driver plans and sets up MLflow (seconds): the zygote imports
        # torch meanwhile, and the workers forked from it at the first submit are warm.
        pool.zygote = _Zygote.start(self.name, options)
        return InDriver(launch, pool.run, pool.stop)


@dataclass
class _Worker:
    # Both ways: jobs to the worker, its trial events back.
    channel: Connection
    # Its place in the pool, which decides its GPUs.
    slot: int
    # The number of its fork request: the zygote reports the worker's exit code under it once it exited.
    ticket: int
    # The trials sent to it, in order: the one it trains now and, while more remain than workers, its next one,
    # sent ahead so that it starts that one at once instead of waiting while the driver records another trial.
    jobs: deque[TrialJob] = field(default_factory=deque)


@dataclass
class _Zygote:
    """The driver's end of the zygote: asks it for workers, hears their exit codes, stops it."""

    process: subprocess.Popen[bytes]
    # Fork requests (a ticket, the worker's GPUs, then the worker's end of its channel) and the pool's end
    # (_STOP or _KILL) to the zygote; (ticket, exit code) of each exited worker back.
    control: Connection
    tickets: int = 0
    exits: dict[int, int] = field(default_factory=dict)

    @classmethod
    def start(cls, backend: str, options: SweepOptions) -> _Zygote:
        mine, theirs = socket.socketpair()
        quiet = subprocess.DEVNULL if not options.verbose else None
        threads = trial_threads(options.cpus_per_trial)
        command = [sys.executable, "-m", "finalbn.launch.pool", str(theirs.fileno()), backend, str(threads)]
        process = subprocess.Popen(
            [*command, str(options.retries)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=quiet,
            stderr=quiet,
        )
        theirs.close()
        return cls(process, Connection(mine.detach()))

    def fork(self, gpus: str | None) -> tuple[Connection, int]:
        """The driver's end of a new worker's channel, and its ticket: the zygote forks it once warm."""
        mine, theirs = socket.socketpair()
        ticket = self.tickets
        self.tickets += 1
        self.control.send((ticket, gpus))
        send_handle(self.control, theirs.fileno(), self.process.pid)
        theirs.close()
        return Connection(mine.detach()), ticket

    def exit_code(self, ticket: int) -> int | None:
        """The exit code of the worker of ``ticket``, which exited (None: the zygote died before telling it)."""
        while ticket not in self.exits:
            try:
                exited, code = self.control.recv()
            except (EOFError, OSError):
                return None
            self.exits[exited] = code
        return self.exits[ticket]

    def stop(self, now: bool) -> None:
        """The zygote's end: it waits for its workers (told to exit before this) or, ``now``, kills them.
        Only the zygote signals a worker: it has not reaped it yet, so the pid cannot be another process'."""
        if self.tickets:
            with contextlib.suppress(OSError):  # it is gone already
                self.control.send(_KILL if now else _STOP)
        else:
            # It forked no worker (nothing to train, or the set-up failed): nothing of it is worth waiting for.
            self.process.kill()
        self.control.close()
        try:
            self.process.wait(_KILL_SECONDS if now else _STOP_SECONDS + _KILL_SECONDS)
        except subprocess.TimeoutExpired:
            # Still warming up (it hears the driver only then) or stuck: a worker of it ends with its channel.
            self.process.kill()
            self.process.wait()


@dataclass
class _Pool:
    backend: str
    options: SweepOptions
    # Workers at most.
    size: int
    workers: list[_Worker] = field(default_factory=list)
    # Attempts of a trial that ended with its worker's death (killed, out of memory), by trial id.
    deaths: dict[str, int] = field(default_factory=dict)
    zygote: _Zygote | None = None

    def run(self, jobs: list[TrialJob], events: TrialEvents) -> None:
        """Train ``jobs`` on workers forked for them, up to the pool's size, then stop the pool."""
        pending = deque(jobs)
        by_id = {job.trial_id: job for job in jobs}
        try:
            self.workers = [self._start(slot) for slot in range(min(self.size, len(jobs)))]
            while pending or any(worker.jobs for worker in self.workers):
                self._hand_out(pending)
                for channel in wait([worker.channel for worker in self.workers], timeout=_POLL_SECONDS):
                    self._hear(channel, by_id, pending, events)
                interrupts.check()
        finally:
            self.stop()

    def _hand_out(self, pending: deque[TrialJob]) -> None:
        """The next pending trials: one to each worker that has none, then one ahead to each while more remain
        than workers (the last few go to whichever worker is free first, so none waits behind another's)."""
        for depth, spare in ((1, 0), (2, len(self.workers))):
            for worker in self.workers:
                if len(worker.jobs) < depth and len(pending) > spare:
                    worker.jobs.append(pending.popleft())
                    with contextlib.suppress(OSError):  # it died just now: its channel says so when next heard
                        worker.channel.send(worker.jobs[-1])

    def _start(self, slot: int) -> _Worker:
        if self.zygote is None or self.zygote.process.poll() is not None:
            self.zygote = _Zygote.start(self.backend, self.options)
        channel, ticket = self.zygote.fork(_gpus_of(slot, self.options.gpus_per_trial))
        return _Worker(channel, slot, ticket)

    def _hear(
        self, channel: Connection, by_id: dict[str, TrialJob], pending: deque[TrialJob], events: TrialEvents
    ) -> None:
        """One event from a worker, told to the driver's events; a closed channel is a dead worker."""
        index = next(i for i, worker in enumerate(self.workers) if worker.channel is channel)
        worker = self.workers[index]
        try:
            event, trial_id, payload = channel.recv()
        except (EOFError, OSError):
            self._bury(worker, pending, events)
            self.workers[index] = self._start(worker.slot)
            return
        job = by_id[trial_id]
        if event == "elsewhere":
            payload = None if payload is None else Owner(**payload)
        if event in ("finished", "failed", "elsewhere"):
            worker.jobs.remove(job)
            # Its next trials first, then this one's records: the worker trains while the driver writes MLflow.
            self._hand_out(pending)
        getattr(events, event)(job, *([] if payload is _NONE else [payload]))

    def _bury(self, worker: _Worker, pending: deque[TrialJob], events: TrialEvents) -> None:
        """A worker that died with its trial: the attempt counts, the trial runs again or is failed."""
        worker.channel.close()
        code = None if self.zygote is None else self.zygote.exit_code(worker.ticket)
        told = "unknown" if code is None else code
        if not worker.jobs:
            return
        job, *unstarted = worker.jobs
        # Sent ahead but never started: back in line, without spending an attempt.
        pending.extendleft(reversed(unstarted))
        attempts = self.deaths[job.trial_id] = self.deaths.get(job.trial_id, 0) + 1
        error = (
            f"the worker process training trial {job.trial_id} died (exit code {told}: killed, or out of "
            "memory) before the trial finished"
        )
        if attempts <= self.options.retries:
            events.retrying(job, error)
            pending.appendleft(job)
        else:
            events.failed(job, error)

    def stop(self) -> None:
        """Tell the workers to exit and wait for them (kill them when interrupted or slow); none is left."""
        for worker in self.workers:
            with contextlib.suppress(OSError):  # it is exiting already
                worker.channel.send(None)
        if self.zygote is not None:
            # Interrupted: a trial mid-epoch would only finish what nobody waits for.
            self.zygote.stop(now=interrupts.pending())
        for worker in self.workers:
            worker.channel.close()
        self.workers, self.zygote = [], None


# The payload of an event whose method takes the job alone (started, finished).
_NONE = "-"


class _ChannelEvents:
    """A worker's trial events, sent to the driver (which owns the records, MLflow and the display)."""

    def __init__(self, channel: Connection) -> None:
        self.channel = channel

    def _send(self, event: str, job: TrialJob, payload: object = _NONE) -> None:
        self.channel.send((event, job.trial_id, payload))

    def started(self, job: TrialJob) -> None:
        self._send("started", job)

    def epoch(self, job: TrialJob, row: dict[str, float]) -> None:
        self._send("epoch", job, row)

    def phase(self, job: TrialJob, text: str) -> None:
        self._send("phase", job, text)

    def retrying(self, job: TrialJob, error: str) -> None:
        self._send("retrying", job, error)

    def finished(self, job: TrialJob) -> None:
        self._send("finished", job)

    def failed(self, job: TrialJob, error: str) -> None:
        self._send("failed", job, error)

    def elsewhere(self, job: TrialJob, owner: Owner | None) -> None:
        self._send("elsewhere", job, None if owner is None else asdict(owner))


def _gpus_of(slot: int, gpus_per_trial: float) -> str | None:
    """The CUDA devices of the worker in ``slot``: 1/gpus_per_trial workers share a GPU, or a worker takes whole
    ones (None: no GPU asked for, the worker sees what the driver sees)."""
    if gpus_per_trial <= 0:
        return None
    if gpus_per_trial < 1:
        return str(int(slot * gpus_per_trial))
    whole = math.ceil(gpus_per_trial)
    return ",".join(str(slot * whole + i) for i in range(whole))


def gpu_slots(gpus_per_trial: float) -> int | None:
    """Trials at once that this machine's GPUs hold at ``gpus_per_trial`` each (None: no GPU asked for)."""
    if gpus_per_trial <= 0:
        return None
    import torch

    return max(1, math.floor(torch.cuda.device_count() / gpus_per_trial + 1e-9))


def _zygote(control: Connection, backend: str, threads: int, retries: int) -> NoReturn:
    """The zygote's life: warm up once, then fork a worker for each request of the driver and reap the
    exited ones, until the pool ends (or the driver is gone); then see the last workers out."""
    # A terminal's Ctrl-C reaches the whole process group, and it is the driver's to stop the sweep and its
    # workers (who inherit this), not each worker's to die mid-record.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Warm: imported while the driver still sets up, not in each worker's first trial. torch._dynamo is what
    # the first optimizer loads (~1.4 s of a 2 s head trial).
    import torch._dynamo  # noqa: F401

    import finalbn.train.results  # noqa: F401

    # The live workers: pid -> ticket.
    workers: dict[int, int] = {}
    while True:
        _reap(workers, control)
        if not wait([control], timeout=_REAP_SECONDS):
            continue
        try:
            request = control.recv()
        except (EOFError, OSError):
            request = _STOP  # the driver is gone
        if request in (_STOP, _KILL):
            break
        ticket, gpus = request
        fd = recv_handle(control)
        pid = os.fork()
        if pid == 0:
            _worker(control, Connection(fd), gpus, backend, threads, retries)
        os.close(fd)
        workers[pid] = ticket
    # Told to stop, a worker exits between trials; one still training after _STOP_SECONDS (at once when killed)
    # would only finish what nobody waits for.
    deadline = time.monotonic() + (0 if request == _KILL else _STOP_SECONDS)
    while workers and time.monotonic() < deadline:
        time.sleep(_REAP_SECONDS)
        _reap(workers, control)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    while workers:
        _reap(workers, control, block=True)
    os._exit(0)


def _reap(workers: dict[int, int], control: Connection, block: bool = False) -> None:
    """Reaps the exited workers (one, waiting for it, when ``block``) and tells the driver their exit codes."""
    while workers:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        ticket = workers.pop(pid)
        with contextlib.suppress(OSError):  # the driver is gone or done
            control.send((ticket, os.waitstatus_to_exitcode(status)))
        if block:
            return


def _worker(
    control: Connection, channel: Connection, gpus: str | None, backend: str, threads: int, retries: int
) -> NoReturn:
    """A forked worker's life: train each job the driver sends until it sends None; never back into the
    zygote's loop."""
    control.close()
    if gpus is not None:
        # Before anything touches CUDA: the zygote never does.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    code = 0
    try:
        events = _ChannelEvents(channel)
        worker = {"backend": backend, "pid": os.getpid()}
        while (job := channel.recv()) is not None:
            run_attempts(job, events, retries, threads, worker=worker)
    except BaseException:
        traceback.print_exc()
        code = 1
    # Everything the worker wrote is closed; the interpreter's teardown of torch would hold the sweep's end
    # (stop() waits for the workers) for a second or more.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # python -m finalbn.launch.pool FD BACKEND THREADS RETRIES: the zygote, started by _Zygote.start.
    fd, name, threads_text, retries_text = sys.argv[1:]
    _zygote(Connection(int(fd)), name, int(threads_text), int(retries_text))

"""``--backend local``: the trials on this machine's cores, in worker processes that stay warm.

The workers start with the sweep's executor, before the driver sets up MLflow, import torch and finalbn
meanwhile, and then each trains trial after trial through ``run_attempts`` (claims and retries as in the
serial backend); the driver hands out the jobs and hears every trial event through one queue, so failure
records and MLflow are written in the driver, exactly as for the serial backend.

Why not Ray here (``--backend ray`` still runs a cluster through Ray Tune): on one machine, starting a private
Ray and passing every trial through Tune cost as much as a small trial itself, and a head-only sweep on cached
features ran no faster on the local backend than on the serial one. Why not ``concurrent.futures`` or
``multiprocessing``: on Python 3.11 a ``ProcessPoolExecutor`` can neither kill its workers (Ctrl-C,
``finalbn cancel``) nor go on after one of them died (every pending future breaks), ``multiprocessing.Pool``
waits forever for a dead worker's task, and their spawned workers import the caller's main module again (a
script without a ``__main__`` guard would start its sweep once more in every worker). So each worker is a plain
``python -m finalbn.launch.pool`` process on one end of a socket pair: it listens on no port.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait

from finalbn import interrupts
from finalbn.launch.base import DriverBound, InDriver, Launch, TrialEvents, local_slots, run_attempts, trial_threads
from finalbn.sweep.claims import Owner
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.options import SweepOptions

# How long the driver waits for a worker's event before it looks for dead workers and swallowed interrupts.
_POLL_SECONDS = 0.2
# A worker told to stop (the sweep is done) gets this long to exit before it is killed.
_STOP_SECONDS = 5.0


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
        # Started with the executor, before the driver sets up MLflow (seconds on a new store): the workers
        # import torch meanwhile and are warm by the first trial.
        pool.start(launch.pending)
        return InDriver(launch, pool.run, pool.stop)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    # Both ways: jobs to the worker, its trial events back.
    channel: Connection
    # Its place in the pool, which decides its GPUs.
    slot: int
    # The trial it trains now.
    job: TrialJob | None = None


@dataclass
class _Pool:
    backend: str
    options: SweepOptions
    # Workers at most.
    size: int
    workers: list[_Worker] = field(default_factory=list)
    # Attempts of a trial that ended with its worker's death (killed, out of memory), by trial id.
    deaths: dict[str, int] = field(default_factory=dict)

    def start(self, trials: int) -> None:
        """Workers for ``trials`` trials, up to the pool's size, unless they run already."""
        if not self.workers:
            self.workers = [self._start(slot) for slot in range(min(self.size, trials))]

    def run(self, jobs: list[TrialJob], events: TrialEvents) -> None:
        """Train ``jobs`` on the workers (started now unless they are warm), then stop them."""
        pending = deque(jobs)
        by_id = {job.trial_id: job for job in jobs}
        try:
            self.start(len(jobs))
            while pending or any(worker.job is not None for worker in self.workers):
                self._hand_out(pending)
                for channel in wait([worker.channel for worker in self.workers], timeout=_POLL_SECONDS):
                    self._hear(channel, by_id, pending, events)
                interrupts.check()
        finally:
            self.stop()

    def _hand_out(self, pending: deque[TrialJob]) -> None:
        """The next pending trials to the workers that have none."""
        for worker in self.workers:
            if worker.job is None and pending:
                worker.job = pending.popleft()
                with contextlib.suppress(OSError):  # it died just now: its channel says so when next heard
                    worker.channel.send(worker.job)

    def _start(self, slot: int) -> _Worker:
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        gpus = _gpus_of(slot, self.options.gpus_per_trial)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        quiet = subprocess.DEVNULL if not self.options.verbose else None
        threads = trial_threads(self.options.cpus_per_trial)
        command = [sys.executable, "-m", "finalbn.launch.pool", str(theirs.fileno()), self.backend, str(threads)]
        # Ignored signals stay ignored in the child: a terminal's Ctrl-C reaches the whole process group, and
        # it is the driver's to stop the sweep and its workers, not each worker's to die mid-record.
        with _sigint_ignored():
            process = subprocess.Popen(
                [*command, str(self.options.retries)],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=quiet,
                stderr=quiet,
            )
        theirs.close()
        return _Worker(process, Connection(mine.detach()), slot)

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
            worker.job = None
            # Its next trial first, then this one's records: the worker trains while the driver writes MLflow.
            self._hand_out(pending)
        getattr(events, event)(job, *([] if payload is _NONE else [payload]))

    def _bury(self, worker: _Worker, pending: deque[TrialJob], events: TrialEvents) -> None:
        """A worker that died with its trial: the attempt counts, the trial runs again or is failed."""
        worker.channel.close()
        code = worker.process.wait()
        job = worker.job
        if job is None:
            return
        attempts = self.deaths[job.trial_id] = self.deaths.get(job.trial_id, 0) + 1
        error = (
            f"the worker process training trial {job.trial_id} died (exit code {code}: killed, or out of "
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
        for worker in self.workers:
            # Interrupted: a trial mid-epoch would only finish what nobody waits for.
            try:
                worker.process.wait(0 if interrupts.pending() else _STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.channel.close()
        self.workers = []


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


def _work(channel: Connection, backend: str, threads: int, retries: int) -> None:
    """A worker's life: warm up, then train each job the driver sends until it sends None."""
    # Warm: imported while the driver still sets up, not in the worker's first trial. torch._dynamo is what
    # the first optimizer loads (~1.4 s of a 2 s head trial).
    import torch._dynamo  # noqa: F401

    import finalbn.train.results  # noqa: F401

    events = _ChannelEvents(channel)
    worker = {"backend": backend, "pid": os.getpid()}
    while (job := channel.recv()) is not None:
        run_attempts(job, events, retries, threads, worker=worker)
    # Everything the worker wrote is closed; the interpreter's teardown of torch would hold the sweep's end
    # (stop() waits for the workers) for a second or more.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


if __name__ == "__main__":
    # python -m finalbn.launch.pool FD BACKEND THREADS RETRIES: one worker, started by _Pool._start.
    fd, name, threads_text, retries_text = sys.argv[1:]
    _work(Connection(int(fd)), name, int(threads_text), int(retries_text))

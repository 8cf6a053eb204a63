"""``--backend local`` (a private Ray on this machine) and ``--backend ray`` (a running cluster).

Ray Tune runs the pending trials of a sweep: one Tune trial per finalbn trial,
placed by Tune's resources (``--cpus-per-trial``, fractional
``--gpus-per-trial``), retried by Tune's ``FailureConfig`` (a worker that died
can only be retried from outside it), with actors reused between trials so
small trials do not pay a process start each.

The Tuner's ``param_space`` is the declared grid, one ``tune.grid_search`` per
axis (a joint axis over its labels), so the Tune experiment shows
``config/<axis>`` columns and each trial's metrics. Which points run is still
decided by trial id (finished ones are skipped by the driver): ``PendingGrid``,
a Tune ``Searcher``, suggests only the pending points of that grid. Tune's
reporting API has changed across releases; it is touched only in this file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import Searcher

from finalbn.console import interrupts
from finalbn.errors import UserError
from finalbn.launch.base import (
    DriverBound,
    InDriver,
    Launch,
    SweepOptions,
    TrialEvents,
    claimed,
    execute,
    local_slots,
    trial_threads,
)
from finalbn.records.folders import SUMMARY
from finalbn.sweep.claims import ClaimedElsewhere, Owner
from finalbn.sweep.jobs import TrialJob
from finalbn.sweep.spec import Axis, SweepSpec, flatten

# The config key that carries a Tune trial's finalbn trial id.
TRIAL_KEY = "finalbn.trial_id"
# The last result of a trial that another owner trains or finished: its owner as JSON ("": finished).
ELSEWHERE_KEY = "finalbn.elsewhere"
# An intermediate result that is no epoch: what the trial does before its first one.
PHASE_KEY = "finalbn.phase"
# Keys of an epoch row besides its train_/val_/test_ metrics; Tune adds its own keys to each result.
_ROW_KEYS = ("epoch", "seconds")


class RayTuneBackend(DriverBound):
    def __init__(self, name: str, address: str | None = None) -> None:
        self.name = name
        # None: start a private Ray instance on this machine for the sweep;
        # "HOST:PORT" or "auto": join that running cluster (--backend ray).
        self.address = address
        self.runs_here = address is None

    def slots(self, max_concurrent: int | None, cpus_per_trial: float) -> int:
        # A cluster's size is Ray's to know; the estimate assumes this machine's when none is given.
        return local_slots(max_concurrent, cpus_per_trial)

    def preflight(self) -> None:
        """--backend ray: the cluster answers at its address (before planning, in a dry run too)."""
        silent = self._silent_endpoint
        if silent is not None:
            raise UserError(
                f"--address {self.address}: nothing answers at {silent}; start the Ray head there "
                "(ray start --head) or use --backend local"
            )

    @functools.cached_property
    def _silent_endpoint(self) -> str | None:
        """The address' HOST:PORT when no TCP connection to it succeeds, else None. Probed once per backend:
        the driver's preflight after the sweep command's is free. A private Ray (no address), "auto" and
        other forms without a port are Ray's own to resolve."""
        host, _, port = (self.address or "").removeprefix("ray://").rpartition(":")
        if not port.isdigit():
            return None
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                return None
        except OSError:
            return f"{host}:{port}"

    def executor(self, launch: Launch) -> InDriver:
        return InDriver(launch, lambda jobs, events: self.run(jobs, launch, events))

    def run(self, jobs: list[TrialJob], launch: Launch, events: TrialEvents) -> None:
        options = launch.options
        # Trials write into their own folders by absolute path; keep Tune from
        # moving each worker into a Tune-owned directory.
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        # Ctrl-C must stop the sweep (as KeyboardInterrupt), not ask Tune to
        # save experiment state we do not use.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        # Tune's CSV and TensorBoard files duplicate the trial folders and cost
        # driver CPU on every epoch; its JSON results stay (below), so that
        # ExperimentAnalysis can open the sweep.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        if not options.verbose:
            # The sweep prints its own one-line progress; Tune's tables and its
            # per-failure tracebacks (kept in each failure.json) stay off.
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        started_here = not ray.is_initialized()
        # ray.init replaces the SIGTERM handler with its own (exit 1, or a C++ abort dump from the
        # node's): a SIGTERM (finalbn cancel, a scheduler's stop) must stop the sweep as Ctrl-C does,
        # runs KILLED and resumable. The handlers from before are back when the sweep ends.
        before = {number: signal.getsignal(number) for number in interrupts.STOP_SIGNALS}
        if started_here:
            where = "a private Ray instance on this machine" if self.address is None else f"Ray at {self.address}"
            print(f"starting {where} for {len(jobs)} trials...", flush=True)
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=options.verbose,
                logging_level=logging.INFO if options.verbose else logging.ERROR,
            )
            interrupts.install()
        try:
            _fit(self.name, launch.spec, jobs, options, events)
        finally:
            if started_here:
                ray.shutdown()
            interrupts.restore(before)


def search_space(axes: tuple[Axis, ...]) -> dict[str, Any]:
    """The declared grid in Tune's terms: field axes over their values, joint axes over their labels."""
    return {
        axis.name: tune.grid_search([axis.label(i) if axis.joint else axis.values[i] for i in range(len(axis.values))])
        for axis in axes
    }


def tune_point(job: TrialJob, axes: tuple[Axis, ...]) -> dict[str, Any]:
    """One grid point as the Tune config of its trial (values as search_space lists them)."""
    fields = flatten(job.trial.config)
    point: dict[str, Any] = {a.name: job.trial.point[a.name] if a.joint else fields[a.name] for a in axes}
    return {**point, TRIAL_KEY: job.trial_id}


class PendingGrid(Searcher):
    """Suggests the pending points of the declared grid, in grid order, then finishes.

    Tune hands the Tuner's ``param_space`` (the declared grid) to
    ``set_search_properties``; every suggested point must lie on it.
    """

    def __init__(self, points: list[dict[str, Any]]) -> None:
        super().__init__()
        self.points = points
        self.next = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        for point in self.points:
            for name, value in point.items():
                if name != TRIAL_KEY and value not in config[name]["grid_search"]:
                    raise ValueError(f"trial {point[TRIAL_KEY]}: {name}={value!r} is not on the declared grid")
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next == len(self.points):
            return Searcher.FINISHED
        self.next += 1
        return self.points[self.next - 1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


def _fit(backend: str, spec: SweepSpec, jobs: list[TrialJob], options: SweepOptions, events: TrialEvents) -> None:
    by_id = {job.trial_id: job for job in jobs}
    threads = trial_threads(options.cpus_per_trial)
    axes = spec.axes

    def trainable(config: dict[str, Any]) -> None:
        job = by_id[config[TRIAL_KEY]]
        # Node ids, not addresses: nodes of one machine share an IP.
        worker = {"backend": backend, "node_id": ray.get_runtime_context().get_node_id()}
        try:
            with claimed(job):
                execute(
                    job,
                    threads,
                    lambda row: tune.report({**row, "final": False}),
                    worker=worker,
                    phase=lambda text: tune.report({PHASE_KEY: text, "final": False}),
                )
        except ClaimedElsewhere as taken:
            owner = "" if taken.owner is None else json.dumps(asdict(taken.owner))
            tune.report({ELSEWHERE_KEY: owner, "final": True})
            return
        # The trial's final test metrics (nobn_* too): the row Tune's tables show last.
        tune.report({**_final(job), "final": True})

    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    storage = jobs[0].folder.parent.parent / "ray"
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=search_space(axes),
        tune_config=tune.TuneConfig(
            search_alg=PendingGrid([tune_point(job, axes) for job in jobs]),
            num_samples=-1,
            max_concurrent_trials=options.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            # One Tune experiment per invocation, named like the MLflow parent run.
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            verbose=2 if options.verbose else 0,
            failure_config=tune.FailureConfig(max_failures=options.retries),
            callbacks=[JsonLoggerCallback(), _Relay(by_id, events)],
        ),
    )
    tuner.fit()


def _final(job: TrialJob) -> dict[str, float]:
    summary = json.loads((job.folder / SUMMARY).read_text())
    return {f"final_{k}": float(v) for k, v in summary["test"].items()}


class _Relay(tune.Callback):
    """Turns Tune's trial events into finalbn's, in the driver process."""

    def __init__(self, by_id: dict[str, TrialJob], events: TrialEvents) -> None:
        self.by_id = by_id
        self.events = events

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the Tuner, callbacks included, into the experiment folder for
        # Tuner.restore, which finalbn never calls (it resumes by trial id). The driver's
        # events hold the live terminal display (rich's locks and refresh thread), which
        # cannot be pickled: on a terminal the Tuner failed to start at all.
        return {"by_id": self.by_id}

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # Between trial events too (a long epoch): a Ctrl-C a finalizer swallowed.
        interrupts.check()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.started(self._job(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if PHASE_KEY in result:
            self.events.phase(self._job(trial), result[PHASE_KEY])
        elif result.get("final") is False:
            row = {k: v for k, v in result.items() if k in _ROW_KEYS or k.startswith(("train_", "val_", "test_"))}
            self.events.epoch(self._job(trial), row)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.retrying(self._job(trial), _error_text(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        owner = trial.last_result.get(ELSEWHERE_KEY)
        if owner is None:
            self.events.finished(self._job(trial))
        else:
            self.events.elsewhere(self._job(trial), Owner(**json.loads(owner)) if owner else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.failed(self._job(trial), _error_text(trial))

    def _job(self, trial: Any) -> TrialJob:
        return self.by_id[trial.config[TRIAL_KEY]]


def _error_text(trial: Any) -> str:
    """The failed attempt's traceback as Tune stored it (the worker's own
    traceback for an exception, Ray's account of a dead worker otherwise).

    Read from the trial's local error file, which Tune appends to before it
    calls back; its storage copy (``trial.get_error()``) is synced later.
    """
    path = Path(trial.error_file) if trial.error_file else None
    if path is None or not path.exists():
        return "the trial failed and Ray Tune recorded no error text"
    text = path.read_text()
    return text[text.rfind("Failure #") :]

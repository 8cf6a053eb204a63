"""The one adapter over Ray Tune.

Ray Tune runs the pending trials of a sweep: one Tune trial per finalbn trial,
placed by Tune's resources (``--cpus-per-trial``, fractional
``--gpus-per-trial``), retried by Tune's ``FailureConfig``, with actors reused
between trials so small trials do not pay a process start each. The declared
grid has already been expanded and filtered by trial id (finalbn.sweep), so
Tune's grid is the list of pending trial ids. Tune's reporting API has changed
across releases; it is touched only in this file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from finalbn.sweep import SweepOptions, TrialEvents, TrialJob, execute


class RayTuneBackend:
    def __init__(self, address: str | None = None) -> None:
        # None: start a private Ray instance on this machine for the sweep;
        # "HOST:PORT" or "auto": join that running cluster (--backend ray).
        self.address = address

    def run(self, jobs: list[TrialJob], options: SweepOptions, events: TrialEvents) -> None:
        # Trials write into their own folders by absolute path; keep Tune from
        # moving each worker into a Tune-owned directory.
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        # Ctrl-C must stop the sweep (as KeyboardInterrupt), not ask Tune to
        # save experiment state we do not use.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        # Tune's per-trial JSON/CSV/TensorBoard result files duplicate the trial
        # folders and cost driver CPU on every epoch of every trial.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        if not options.verbose:
            # The sweep prints its own one-line progress; Tune's tables and its
            # per-failure tracebacks (kept in each failure.json) stay off.
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=options.verbose,
                logging_level=logging.INFO if options.verbose else logging.ERROR,
            )
        try:
            self._fit(jobs, options, events)
        finally:
            if started_here:
                ray.shutdown()

    def _fit(self, jobs: list[TrialJob], options: SweepOptions, events: TrialEvents) -> None:
        by_id = {job.trial_id: job for job in jobs}
        threads = max(1, int(options.cpus_per_trial))

        def trainable(config: dict[str, Any]) -> None:
            job = by_id[config["trial_id"]]
            # Node ids, not addresses: nodes of one machine share an IP.
            worker = {"backend": "ray", "node_id": ray.get_runtime_context().get_node_id()}
            execute(job, threads, lambda row: tune.report({"row": row}), worker=worker)

        resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
        storage = jobs[0].folder.parent.parent / "ray"
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"trial_id": tune.grid_search(list(by_id))},
            tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                storage_path=str(storage),
                verbose=2 if options.verbose else 0,
                failure_config=tune.FailureConfig(max_failures=options.retries),
                callbacks=[_Relay(by_id, events)],
            ),
        )
        tuner.fit()


class _Relay(tune.Callback):
    """Turns Tune's trial events into finalbn's, in the driver process."""

    def __init__(self, by_id: dict[str, TrialJob], events: TrialEvents) -> None:
        self.by_id = by_id
        self.events = events

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.started(self._job(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "row" in result:
            self.events.epoch(self._job(trial), result["row"])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.retrying(self._job(trial), _error_text(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.finished(self._job(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.failed(self._job(trial), _error_text(trial))

    def _job(self, trial: Any) -> TrialJob:
        return self.by_id[trial.config["trial_id"]]


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

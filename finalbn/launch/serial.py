"""``--backend serial``: the trials one after another in this very process.

No Ray, no worker processes: a breakpoint in a trial stops the debugger where
it should, and the fast tests of resume, retries, tracking and tables run on it
in seconds (submitit's ``debug`` executor is the model).
"""

from __future__ import annotations

import os

from finalbn.launch.base import DriverBound, InDriver, Launch, TrialEvents, run_attempts, trial_threads
from finalbn.sweep.jobs import TrialJob


class SerialBackend(DriverBound):
    runs_here = True

    def __init__(self, name: str) -> None:
        self.name = name

    def slots(self, max_concurrent: int | None, cpus_per_trial: float) -> int:
        return 1

    def executor(self, launch: Launch) -> InDriver:
        return InDriver(launch, lambda jobs, events: self.run(jobs, launch, events))

    def run(self, jobs: list[TrialJob], launch: Launch, events: TrialEvents) -> None:
        import torch

        threads = trial_threads(launch.options.cpus_per_trial)
        worker = {"backend": self.name, "pid": os.getpid()}
        before = torch.get_num_threads()
        try:
            for job in jobs:
                run_attempts(job, events, launch.options.retries, threads, worker=worker)
        finally:
            # execute() sets the thread count for its trial; this process lives on.
            torch.set_num_threads(before)

"""A planned trial as it travels from the driver to a worker.

Everything here is computed once, by the planner (finalbn.sweep.plan): the
worker trains from it and recomputes none of it (no re-hashed image files, no
second trial id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finalbn.provenance import CodeFingerprint
from finalbn.sweep.spec import PlannedTrial


@dataclass(frozen=True)
class TrialJob:
    trial: PlannedTrial
    trial_id: str
    # Fingerprint of the data manifest: the dataset version the trial saw.
    fingerprint: str
    # The trial's result folder (absolute: workers may run elsewhere).
    folder: Path
    # The split manifest the planner built, saved once per dataset in the sweep folder.
    manifest: Path
    # The code version the sweep runs (finalbn.provenance), recorded with the trial.
    git_commit: str
    # The source on the trial's path as the planner read it, recorded with the trial and compared by later plans.
    code: CodeFingerprint

    @property
    def name(self) -> str:
        return self.trial.name()

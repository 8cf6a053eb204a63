"""MLflow, owned here: the layout (tags, run names, parent and child runs), the
tracker seam, the writer the sweep driver and Slurm tasks use, and the reader analysis uses.
No other finalbn module imports mlflow.
"""

from finalbn.tracking.layout import (
    TRIAL_TAG,
    check_reachable,
    default_tracking_uri,
    redact,
)
from finalbn.tracking.reader import (
    ArtifactFetcher,
    RunRecord,
    artifact_fetcher,
    download_artifact,
    experiment_names,
    experiment_runs,
    latest_parent_artifact,
    latest_parent_run,
    log_report_files,
    parent_runs,
)
from finalbn.tracking.task import TaskTracker, task_tracker
from finalbn.tracking.tracker import NullTracker, TaskTracking, Tracker
from finalbn.tracking.writer import MlflowTracker

__all__ = [
    "TRIAL_TAG",
    "ArtifactFetcher",
    "RunRecord",
    "artifact_fetcher",
    "download_artifact",
    "experiment_names",
    "experiment_runs",
    "latest_parent_artifact",
    "latest_parent_run",
    "log_report_files",
    "parent_runs",
    "MlflowTracker",
    "NullTracker",
    "TaskTracker",
    "TaskTracking",
    "Tracker",
    "check_reachable",
    "default_tracking_uri",
    "redact",
    "task_tracker",
]

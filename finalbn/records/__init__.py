"""The records a sweep keeps: every results-folder name spelled once (``folders``), read through one validated
schema (``schema``), written atomically (``write``), and the faults that stop a sweep in one line (``faults``).

Names load on first use (PEP 562): a command line that only builds paths imports ``folders`` without polars,
pyarrow or pydantic, so its --help answers at once.
"""

from finalbn.lazy import lazy_exports

_EXPORTS = {
    "FAULTS": "finalbn.records.faults",
    "Fault": "finalbn.records.faults",
    "fault_in": "finalbn.records.faults",
    "fault_of": "finalbn.records.faults",
    "CONFIG": "finalbn.records.folders",
    "FAILURE": "finalbn.records.folders",
    "METRICS": "finalbn.records.folders",
    "PREDICTIONS": "finalbn.records.folders",
    "SUMMARY": "finalbn.records.folders",
    "CodeRecord": "finalbn.records.schema",
    "Failure": "finalbn.records.schema",
    "FinalMetrics": "finalbn.records.schema",
    "FinishedTrial": "finalbn.records.schema",
    "RecordError": "finalbn.records.schema",
    "Summary": "finalbn.records.schema",
    "Threads": "finalbn.records.schema",
    "TrialRecord": "finalbn.records.schema",
    "read_failure": "finalbn.records.schema",
    "read_finished": "finalbn.records.schema",
    "read_json": "finalbn.records.schema",
    "read_metrics": "finalbn.records.schema",
    "read_predictions": "finalbn.records.schema",
    "read_summary": "finalbn.records.schema",
    "DISK_FULL": "finalbn.records.write",
    "check_writable": "finalbn.records.write",
    "disk_full": "finalbn.records.write",
    "writable_folder": "finalbn.records.write",
    "write_atomic": "finalbn.records.write",
    "write_json": "finalbn.records.write",
    "write_parquet": "finalbn.records.write",
    "write_text": "finalbn.records.write",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

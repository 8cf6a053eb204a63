"""Running a declared sweep: plan (plan.py), drive it through a backend
(driver.py), write it down (record.py: sweep.json; tables.py: Parquet).

Names load on first use (PEP 562): reading a sweep.json (status, analysis)
must not import the driver and, through it, torch. ``plan`` is not among
them: the submodule of that name would shadow it (import finalbn.sweep.plan).
"""

from finalbn.lazy import lazy_exports

_EXPORTS = {
    "SweepOptions": "finalbn.sweep.options",
    "SweepReport": "finalbn.sweep.driver",
    "run_sweep": "finalbn.sweep.driver",
    "is_finished": "finalbn.sweep.plan",
    "set_aside_unusable": "finalbn.sweep.plan",
    "SweepRecord": "finalbn.sweep.record",
    "summary_table": "finalbn.sweep.tables",
    "write_tables": "finalbn.sweep.tables",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)

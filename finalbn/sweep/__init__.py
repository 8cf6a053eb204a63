"""Running a declared sweep: plan (plan.py), drive it through a backend
(driver.py), write it down (record.py: sweep.json; tables.py: Parquet)."""

from finalbn.launch.base import SweepOptions
from finalbn.sweep.driver import SweepReport, run_sweep
from finalbn.sweep.plan import is_finished, plan, set_aside_damaged
from finalbn.sweep.record import SweepRecord
from finalbn.sweep.tables import summary_table, write_tables

__all__ = [
    "SweepOptions",
    "SweepRecord",
    "SweepReport",
    "is_finished",
    "plan",
    "run_sweep",
    "set_aside_damaged",
    "summary_table",
    "write_tables",
]

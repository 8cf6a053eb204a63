"""Write a sweep's analysis report: one self-contained HTML file and a Markdown twin.

The report answers the sweep's question with uncertainty (the imbalance
threshold, the batch-size optimum, the factorial effects), regenerates the
thesis' tables with its numbers beside them, and redraws its figures with
95% intervals. See docs/analysis.md for the methods.

Examples:
    python analysis/report.py results/imbalance_ratio-laptop
    python analysis/report.py --experiment imbalance_ratio-laptop
    python analysis/report.py --experiment batch_size-paper --tracking-uri http://mlflow:5000
    python analysis/report.py results/factorial-paper/trials.parquet --out /tmp/factorial-report
"""

import sys

from finalbn.analysis.cli import report_main

if __name__ == "__main__":
    sys.exit(report_main())

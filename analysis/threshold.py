"""Print the imbalance threshold of an imbalance-ratio sweep, per class, with its 95% CI and gain curve.

Examples:
    python analysis/threshold.py results/imbalance_ratio-laptop
    python analysis/threshold.py --experiment imbalance_ratio-paper --margin 0.02
"""

import sys

from finalbn.analysis.cli import threshold_main

if __name__ == "__main__":
    sys.exit(threshold_main())

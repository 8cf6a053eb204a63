"""Print the best batch size of a batch-size sweep, its CI, and whether its neighbours are distinguishable.

Examples:
    python analysis/batch_optimum.py results/batch_size-laptop
    python analysis/batch_optimum.py --experiment batch_size-paper --metric f1_majority
"""

import sys

from finalbn.analysis.cli import batch_main

if __name__ == "__main__":
    sys.exit(batch_main())

"""docs/reproduction.md: the thesis' tables and figures that the cpu preset covers, ours beside them.

Examples:
    python analysis/reproduction.py --data ~/data/plantvillage   # run (or resume) every cpu sweep, then write
    python analysis/reproduction.py                              # rewrite from the finished sweeps in results/
"""

import sys

from finalbn.analysis.cli import reproduction_main

if __name__ == "__main__":
    sys.exit(reproduction_main())

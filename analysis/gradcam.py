"""Draw Grad-CAM maps of the minority class with and without final BN (Figure 4.4) for trials of a sweep.

Examples:
    python analysis/gradcam.py results/imbalance_ratio-laptop
    python analysis/gradcam.py results/bn_removal-paper --trial 1a2b3c4d5e6f --against 6f5e4d3c2b1a --count 6
"""

import sys

from finalbn.analysis.cli import gradcam_main

if __name__ == "__main__":
    sys.exit(gradcam_main())

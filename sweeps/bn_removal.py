"""Table 4.6: train with the final BN, test with it kept and with it removed.

Every trial with model.final_norm bn is scored twice on the test set: as
trained, and with its final BN replaced by the identity (the nobn_* metrics),
so the table's three rows come from two kinds of run.

    paper   data.plant {Apple, Pepper, Tomato} x model.final_norm {none, bn} x train.seed
            0-9 = 60 trials. Frozen ResNet34 on ImageNet weights, ratio 0.01
            (1,000 + 10), 224 px, 10 epochs, batch 64; needs --data and a GPU.
    cpu     The same 60 trials on a frozen EfficientNet-Lite0 on ImageNet weights,
            features cached, only the head trains; peak lr 3e-3; needs --data, no GPU.
    laptop  Simple CNN from scratch. Embedded MNIST 3 vs 8 (no --data): final_norm
            x seed 0-3 = 8 trials. With --data (PlantVillage root, 32 px): plant (3)
            x final_norm x seed {0, 1} = 12 trials.
    smoke   final_norm x seed 0-3 = 8 trials, 2 epochs.

Examples:
    python sweeps/bn_removal.py
    python sweeps/bn_removal.py --preset paper --data ~/data/plantvillage --dry-run
    python sweeps/bn_removal.py --preset cpu --data ~/data/plantvillage
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("bn_removal", __doc__))

"""Figure 4.6: minority-class F1 against the imbalance ratio, final BN on/off, frozen/unfrozen backbone.

The thesis' "430 runs" are this sweep (400) plus sweeps/batch_size.py (30):

    paper   data.train_minority 5, 10, ..., 100 vs 1,000 healthy (20 ratios, 0.005-0.1)
            x model.final_norm {bn, none} x model.unfreeze {none, all} (frozen ResNet34
            body vs every layer trained, fastai's unfreeze()) x train.seed 0-4
            = 20 x 2 x 2 x 5 = 400 trials. PlantVillage Apple, ResNet34 on ImageNet
            weights, 224 px, 10 epochs, batch 64; needs --data and a GPU.
    cpu     The frozen half, with ratios far past the claimed 0.1: train_minority
            {5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500} vs 1,000 (0.005-0.5)
            x final_norm {bn, none} x seed 0-4 = 120 trials, Apple (whose folders hold
            the 657 unhealthy images the largest ratio needs; Pepper's and Tomato's
            would too). Frozen EfficientNet-Lite0 on ImageNet weights, features cached
            (each ratio's split is extracted once), 224 px, 10 epochs, batch 64, peak
            lr 3e-3; needs --data, no GPU.
    laptop  train_minority {3, 8, 20, 50, 130} of 300 (ratios 0.01-0.43, past the claimed
            0.1) x final_norm {bn, none} x seed {0, 1} = 20 trials, under 3 minutes on
            2 CPU cores. The simple CNN
            trains from scratch, so frozen vs unfrozen means nothing: unfreeze is a
            fixed axis at "all". Embedded MNIST 3 vs 8 without --data; with --data,
            that PlantVillage root's Apple at 32 px.
    smoke   train_minority {1, 4} of 32 x final_norm x seed {0, 1} = 8 trials, 2 epochs.

Seeds change initialisation and batch order; the images stay the same, and a
smaller ratio's training set is a subset of a larger one's.

Examples:
    python sweeps/imbalance_ratio.py
    python sweeps/imbalance_ratio.py --preset paper --data ~/data/plantvillage --dry-run
    python sweeps/imbalance_ratio.py --preset paper --data ~/data/plantvillage
    python sweeps/imbalance_ratio.py --preset cpu --data ~/data/plantvillage
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("imbalance_ratio", __doc__))

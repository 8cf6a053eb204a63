"""Figure 4.7: minority-class F1 against the batch size, with the final BN.

The thesis' "430 runs" are sweeps/imbalance_ratio.py (400) plus this sweep (30):

    paper   train.batch_size {16, 32, 64, 128, 256, 512} x train.seed 0-4 = 30 trials.
            Final BN, frozen ResNet34 on ImageNet weights, PlantVillage Apple with
            10 unhealthy vs 1,000 healthy, 224 px, 10 epochs; needs --data and a GPU.
            The ragged last batch is dropped (as fastai did), so batch 512 over
            1,010 images makes one optimizer step per epoch.
    cpu     The same 30 trials on a frozen EfficientNet-Lite0 on ImageNet weights,
            features cached, only the head trains; peak lr 3e-3; needs --data, no GPU.
    laptop  batch_size {8, 16, 32, 64, 128, 256} x seed {0, 1} = 12 trials: the same
            six doublings one step lower, over 300 + 3 images, so the largest batch
            again makes one step per epoch. Simple CNN from scratch with final BN;
            embedded MNIST 3 vs 8 without --data, that PlantVillage root's Apple at
            32 px with it.
    smoke   batch_size {4, 8, 16, 32} x seed {0, 1} = 8 trials, 2 epochs.

Examples:
    python sweeps/batch_size.py
    python sweeps/batch_size.py --preset paper --data ~/data/plantvillage --dry-run
    python sweeps/batch_size.py --preset cpu --data ~/data/plantvillage
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("batch_size", __doc__))

"""Table 4.2 (and the loss curves of Figure 4.3): plain vs weighted loss vs final BN.

One joint axis "variant" sets two fields at once: plain (final_norm none,
weighted_loss off), WL (final_norm none, weighted_loss on) and final_BN
(final_norm bn, weighted_loss off).

    paper   data.plant {Apple, Pepper, Tomato} x variant (3) x train.seed 0-9 = 90 trials.
            VGG19 with BN layers (vgg19_bn: the VGG19 of fastai v1, the thesis'
            framework) on ImageNet weights, frozen, 1,000 + 10, 224 px, 10 epochs,
            batch 64; needs --data and a GPU.
    cpu     The same 90 trials (plant x variant x seed 0-9) on a frozen
            EfficientNet-Lite0 on ImageNet weights: its features are computed once
            per image and cached, and only the thesis head trains. 1,000 + 10, 224 px,
            10 epochs, batch 64, peak lr 3e-3; needs --data, no GPU.
    laptop  Simple CNN from scratch. Embedded MNIST 3 vs 8 (no --data): variant x
            seed 0-3 = 12 trials. With --data (PlantVillage root, 32 px): plant (3)
            x variant x seed {0, 1} = 18 trials.
    smoke   variant x seed 0-2 = 9 trials, 2 epochs.

Examples:
    python sweeps/headline.py
    python sweeps/headline.py --preset paper --data ~/data/plantvillage --dry-run
    python sweeps/headline.py --preset cpu --data ~/data/plantvillage
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("headline", __doc__))

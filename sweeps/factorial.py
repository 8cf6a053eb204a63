"""Tables 4.3-4.4 and Figure 4.5: the 2^6 factorial over BN, WL, DA, MX, UF and WD.

Six binary factors, checked value first: BN (model.final_norm bn/none), WL
(train.weighted_loss), DA (train.augment), MX (train.mixup_alpha 0.4/0), UF
(model.unfreeze bn/none: train only the pretrained backbone's BN layers) and WD
(train.weight_decay 1e-2/0). One run per configuration, as in the thesis.

    paper   data.plant {Apple, Pepper, Tomato} x 2^6 = 3 x 64 = 192 trials. Frozen
            ResNet34 on ImageNet weights, 1,000 + 10, 224 px, 10 epochs, batch 64;
            needs --data and a GPU. A trial's index within its plant is the
            thesis' Config Id (31 = BN alone, 29 = BN+UF, 49 = DA+MX+UF).
    cpu     The factors a cached frozen trunk can run: plant (3) x BN x WL x WD x
            train.seed 0-4 = 120 trials (5 seeds per cell, so every effect has an
            interval; the thesis ran one). DA, MX and UF change what the trunk computes for an image
            (augmented or mixed inputs, BN layers that train), so they need the
            trunk's forward pass every step: held off (one fixed axis "held" says
            so in the dry run) and left to paper. Frozen EfficientNet-Lite0 on
            ImageNet weights, 1,000 + 10, 224 px, 10 epochs, batch 64, peak lr
            3e-3; needs --data, no GPU.
    laptop  The simple CNN trains from scratch and has no BN layers, so UF is a
            fixed axis (unfreeze all). Embedded MNIST 3 vs 8 (no --data): BN x WL
            x MX x WD = 16 trials; DA is held off, because its flips and quarter
            turns are views of a leaf but turn a 3 into no digit the test set has.
            With --data (PlantVillage root): Apple at 32 px, BN x WL x DA x MX x WD
            = 32 trials, a few minutes on 2 CPU cores.
    smoke   BN x WL x MX = 8 trials (DA, UF, WD fixed), 2 epochs.

Examples:
    python sweeps/factorial.py
    python sweeps/factorial.py --preset paper --data ~/data/plantvillage --dry-run
    python sweeps/factorial.py --preset cpu --data ~/data/plantvillage --dry-run
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("factorial", __doc__))

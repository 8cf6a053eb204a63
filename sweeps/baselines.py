"""Final BN against the imbalanced-learning literature (beyond the thesis).

One joint axis "method" sets the method knobs (model.final_norm, train.weighted_loss,
train.loss, train.sampler) at once, one value per trained method, at the papers'
defaults (never tuned):

    plain                 softmax + cross-entropy, nothing done about the imbalance
    weighted_loss         inverse-frequency class weights (the thesis' WL)
    logit_adjusted_loss   logit-adjusted loss, tau = 1 (Menon et al., ICLR 2021)
    balanced_softmax      balanced softmax (Ren et al., NeurIPS 2020)
    focal                 focal loss, gamma = 2, no alpha (Lin et al., ICCV 2017)
    oversampling          class-balanced resampling, same steps per epoch
    final_bn              the thesis' final BN

Post-hoc methods train nothing: each is scored from its source's trials (saved logits):
posthoc_logit_adjustment and val_threshold from plain's; final_bn_removed,
final_bn+val_threshold and final_bn+posthoc_logit_adjustment from final_bn's. Every
method is compared with final_bn, seeds paired (positive: the method beats final BN),
on the balanced test set and under the training prior (*_natural); then final_bn vs
plain and final_bn kept vs removed. plain, weighted_loss and final_bn are the headline
sweep's plain, WL and final_BN trials (same ids): run after it, they are reused.

    paper   data.plant {Apple, Pepper, Tomato} x method (7) x train.seed 0-9 = 210 trials.
            VGG19 with BN layers (vgg19_bn) on ImageNet weights, frozen, 1,000 + 10,
            224 px, 10 epochs, batch 64; needs --data and a GPU.
    cpu     plant (3) x train.lr {3e-3, 1e-3} x method (7) x seed 0-9 = 420 trials on a
            frozen EfficientNet-Lite0 whose features are cached (only the head trains),
            1,000 + 10, 224 px, 10 epochs, batch 64; needs --data, no GPU. And
            baselines_ratio: data.train_minority {5, 10, 20, 50, 100} vs 1,000 (ratios
            0.005-0.1) x method {plain, weighted_loss, logit_adjusted_loss, final_bn} x
            seed 0-4 = 100 trials on Apple at lr 3e-3 (its 10-image trials are reused).
    laptop  Simple CNN from scratch. Embedded MNIST 3 vs 8 (no --data): method (7) x
            seed 0-3 = 28 trials. With --data (PlantVillage root, 32 px): plant (3) x
            method (7) x seed {0, 1} = 42 trials.
    smoke   method (7) x seed {0, 1} = 14 trials, 2 epochs.

--axis method=a,b runs some methods (a post-hoc one comes with its source: ask for
plain to get val_threshold); --axis data.plant=Apple one plant; --source folder a
user's class folders (no plant axis).

Examples:
    python sweeps/baselines.py --preset smoke
    python sweeps/baselines.py --preset cpu --data ~/data/plantvillage --dry-run
    python sweeps/baselines.py --preset cpu --data ~/data/plantvillage --axis method=plain,focal,final_bn
    python sweeps/baselines.py --preset cpu --source folder --data ~/pets --majority cats --minority dogs
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("baselines", __doc__))

"""Tables 4.7 and 4.8: the final BN in a simple CNN and in a 128-unit network on MNIST.

Two sweeps, both trained from scratch with the minority at 1% of each majority
digit's training count:

    mnist_cnn (Table 4.7): simple five-conv CNN; joint axis "setting" (data.majority,
        data.minority): 3v8, 2v8, 3v5, 3v5+8 (two majority digits), 3+5v8 (two
        minority digits) x model.final_norm {bn, none} x train.seed.
    mnist_fc (Table 4.8): fc128, 3 vs 8, 100 epochs; joint axis "row" with the
        table's nine rows (model.output, train.loss, model.first_bn,
        model.final_norm) x train.seed.

    paper   Full MNIST (--data: the folder holding torchvision's MNIST/raw; nothing
            is downloaded), train and test pooled: per class 5,000 + 50 to train,
            500 + 25 to validate, 500 + 500 to test. mnist_cnn: 5 x 2 x seed 0-9 =
            100 trials, 10 epochs; mnist_fc: 9 x seed 0-4 = 45 trials.
    laptop  The embedded 5,000-digit subset (300 + 3 per class), or full MNIST at
            --data with the same counts. mnist_cnn: 5 x 2 x seed {0, 1} = 20 trials,
            20 epochs; mnist_fc: 9 x seed {0, 1} = 18 trials, 100 epochs.
    smoke   mnist_cnn 10 and mnist_fc 9 trials, 2 epochs.
    cpu     none: these networks train from scratch, so there is no frozen
            pretrained trunk whose features could be cached (--preset cpu says so).

Table 4.7's caption says ResNet-34 and 1% vs 99%, its text a five-Conv2D CNN and
a ratio of 0.1: this follows the text for the network and the caption (and
Table 4.8's 0.01) for the ratio.

Examples:
    python sweeps/mnist.py
    python sweeps/mnist.py --preset paper --data ~/data --dry-run
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("mnist", __doc__))

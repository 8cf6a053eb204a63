"""The head's learning rate x final BN, and the batch-size sweep at fixed optimizer steps (issue 12 item 3).

The thesis states no learning rate and trains a fixed 10 epochs; how far the head
can move in that budget may decide the final-BN effect. Two sweeps:

    learning_rate  train.lr x model.final_norm {bn, none} x train.seed at a 1% ratio
                   (10 unhealthy vs 1,000 healthy), per plant. Every trial also logs
                   auc, minority_prob_on_majority/_on_minority, the final BN's
                   bn_scale_*/bn_shift_* (learned) and bn_mean_*/bn_var_* (running),
                   ece and brier.
    batch_steps    Figure 4.7's batch sizes x final BN x seed at a fixed step count
                   (train.steps = the steps batch 64 makes in 10 epochs), so batch size
                   and step count are no longer confounded.

    paper   lr {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2} x BN x 5 seeds x Apple, Pepper,
            Tomato = 180 trials (ResNet34 frozen, 224 px, GPU); batch_steps: batch
            {16, ..., 512} x BN x 5 seeds at 150 steps, Apple = 60 trials.
    cpu     The same grids, 180 trials and batch_steps 60 trials, on a frozen
            EfficientNet-Lite0 whose features are cached: only the head (± final BN)
            trains; needs --data, no GPU.
    laptop  lr {1e-3, 3e-3, 1e-2} x BN x 2 seeds = 12 trials; batch_steps 6 sizes x BN
            x 2 seeds = 24 trials; simple CNN from scratch, embedded MNIST 3 vs 8
            without --data, that PlantVillage root's Apple at 32 px with it.
    smoke   lr {1e-3, 1e-2} x BN x 2 seeds = 8 trials; batch_steps 16 trials, 2 epochs.

Any sweep runs at fixed steps with --set train.steps=N (or --axis train.steps=N1,N2).

Examples:
    python sweeps/learning_rate.py --preset smoke
    python sweeps/learning_rate.py --preset cpu --data ~/data/plantvillage --dry-run
    python sweeps/learning_rate.py --preset cpu --data ~/data/plantvillage --seeds 3
    python sweeps/batch_size.py --preset cpu --data ~/data/plantvillage --set train.steps=150
"""

import sys

from finalbn.sweep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("learning_rate", __doc__))

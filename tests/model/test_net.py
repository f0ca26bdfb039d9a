"""DualBranchNet over several backbone pairs: shapes, finiteness, gradient flow, weight loading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch

from histosweep.model import (
    IMAGE_BACKBONES,
    MASK_BACKBONES,
    DualBranchNet,
    ModelError,
    TrainConfig,
    build_model,
    check_backbone,
)

PAIRS = [
    ("convnext_atto", "resnet10t"),
    ("convnext_femto", "resnet18"),
    ("convnext_pico", "resnet10t"),
]


def _inputs(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, size, size, generator=gen)  # (B, 3, H, W)
    mask = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()  # (B, 1, H, W)
    return image, mask


def test_registry_lists_the_recipe_backbones():
    for name in ("convnext_atto", "convnext_tiny", "convnext_small", "convnext_base"):
        assert name in IMAGE_BACKBONES
    for name in ("resnet10t", "resnet18", "resnet34"):
        assert name in MASK_BACKBONES
    for name in IMAGE_BACKBONES + MASK_BACKBONES:  # check_backbone trusts them without timm
        assert timm.is_model(name), name


@pytest.mark.parametrize(("image_backbone", "mask_backbone"), PAIRS)
def test_forward_shapes_and_gradients_reach_every_part(image_backbone, mask_backbone):
    torch.manual_seed(0)
    cfg = TrainConfig(image_backbone=image_backbone, mask_backbone=mask_backbone, head_hidden=16)
    net = build_model(cfg, num_classes=4)
    image, mask = _inputs(batch=3, size=32)
    features = net.forward_features(image, mask)
    assert features.shape == (3, net.feature_dim)
    assert net.feature_dim == net.image_branch.num_features + net.mask_branch.num_features
    logits = net(image, mask)
    assert logits.shape == (3, 4)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    stems = {
        "image stem": net.image_branch.get_parameter(_first_conv(net.image_branch)),
        "mask stem": net.mask_branch.get_parameter(_first_conv(net.mask_branch)),
        "head out": net.head[-1].weight,
        "head bn": net.head[0].weight,
    }
    for where, param in stems.items():
        assert param.grad is not None, where
        assert torch.isfinite(param.grad).all(), where
        assert param.grad.abs().sum() > 0, where


def _first_conv(backbone: torch.nn.Module) -> str:
    first_conv = backbone.pretrained_cfg["first_conv"]
    return f"{first_conv}.weight"


def test_mask_branch_takes_one_channel_and_sees_the_mask():
    net = build_model(TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t"))
    net.eval()
    image, mask = _inputs(batch=2, size=32)
    assert net.mask_branch.get_parameter(_first_conv(net.mask_branch)).shape[1] == 1
    with torch.no_grad():
        changed = net(image, 1.0 - mask) - net(image, mask)
    assert changed.abs().max() > 0  # the mask really feeds the logits


def test_head_is_bn_dropout_linear_relu_dropout_linear():
    net = DualBranchNet("convnext_atto", "resnet10t", num_classes=5, head_hidden=7, dropout=0.25)
    kinds = [type(m).__name__ for m in net.head]
    assert kinds == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert net.head[2].out_features == 7 and net.head[5].out_features == 5
    assert net.head[1].p == 0.25 and net.head[4].p == 0.25


def test_unknown_backbone_is_one_line_with_a_suggestion():
    with pytest.raises(ModelError) as info:
        check_backbone("convnext_tiy", field="image_backbone")
    message = str(info.value)
    assert "image_backbone" in message and "'convnext_tiy'" in message
    assert "convnext_tiny" in message and "\n" not in message
    with pytest.raises(ModelError, match="mask_backbone"):
        build_model(TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet_nope"))


def test_local_weights_file_loads_into_both_branches(tmp_path):
    """image_pretrained_path / mask_pretrained_path: timm state dicts from local files."""
    import safetensors.torch
    import timm

    torch.manual_seed(123)
    image_src = timm.create_model("convnext_atto", pretrained=False)  # with its classifier
    mask_src = timm.create_model("resnet10t", pretrained=False)  # 3-channel stem
    image_file, mask_file = tmp_path / "atto.safetensors", tmp_path / "r10t.pth"
    safetensors.torch.save_file(image_src.state_dict(), image_file)
    torch.save(mask_src.state_dict(), mask_file)
    cfg = TrainConfig(
        image_backbone="convnext_atto",
        mask_backbone="resnet10t",
        image_pretrained_path=str(image_file),
        mask_pretrained_path=str(mask_file),
    )
    net = build_model(cfg)
    loaded = net.image_branch.state_dict()
    for key, value in image_src.state_dict().items():
        if not key.startswith("head.fc"):
            assert torch.equal(loaded[key], value), key
    stem = net.mask_branch.get_parameter("conv1.0.weight")  # RGB stem summed to 1 channel
    assert torch.allclose(stem, mask_src.state_dict()["conv1.0.weight"].sum(1, keepdim=True))
    deep = "layer4.0.conv1.weight"
    assert torch.equal(net.mask_branch.get_parameter(deep), mask_src.get_parameter(deep))
    # pretrained=False (checkpoint rebuild) must not read the files at all
    image_file.unlink()
    build_model(cfg, pretrained=False)


def test_missing_weights_file_names_the_file(tmp_path):
    cfg = TrainConfig(image_backbone="convnext_atto", image_pretrained_path=str(tmp_path / "x.pth"))
    with pytest.raises(ModelError, match=r"x\.pth.*does not exist"):
        build_model(cfg)


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from histosweep.model import ModelError, TrainConfig, build_model

    cfg = TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t", pretrained=True)
    try:
        build_model(cfg)
    except ModelError as exc:
        print("MODELERROR " + str(exc))
    else:
        print("LOADED")
    """
)


def test_offline_without_cached_weights_is_a_clear_model_error(tmp_path):
    empty = tmp_path / "hf"
    empty.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(empty),
        "HF_HUB_CACHE": str(empty / "hub"),
        "TORCH_HOME": str(empty / "torch"),
        "XDG_CACHE_HOME": str(empty / "xdg"),
        "TIMM_USE_OLD_CACHE": "0",
    }
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(("MODELERROR", "LOADED"))]
    assert len(lines) == 1 and lines[0].startswith("MODELERROR"), out.stdout
    message = lines[0]
    assert "'convnext_atto'" in message
    assert "timm.create_model('convnext_atto', pretrained=True)" in message
    assert "image_pretrained_path" in message
    assert not any(empty.rglob("*.safetensors")), "nothing may have been downloaded"

"""Precise BatchNorm: running stats become the average over the given batches."""

from __future__ import annotations

import torch

from histosweep.model import TrainConfig, build_model
from histosweep.model._bn import batchnorm_layers, recalibrate_batchnorm


def _batches(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(4, 3, 32, 32, generator=gen),
            (torch.rand(4, 1, 32, 32, generator=gen) > 0.5).float(),
        )
        for _ in range(n)
    ]


def test_head_running_mean_is_the_average_of_batch_means():
    torch.manual_seed(0)
    net = build_model(
        TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t", dropout=0.5)
    )
    batches = _batches(3)
    assert recalibrate_batchnorm(net, batches) == 12
    assert not net.training
    head_bn = net.head[0]
    stored = head_bn.running_mean.clone()
    # features as the recalibration saw them: backbone BNs on batch statistics, no update
    for layer in batchnorm_layers(net):
        layer.train()
        layer.momentum = 0.0
    with torch.no_grad():
        expected = torch.stack([net.forward_features(i, m).mean(0) for i, m in batches]).mean(0)
    assert torch.allclose(stored, expected, atol=1e-5)
    assert not torch.allclose(stored, torch.zeros_like(stored))


def test_recalibration_is_repeatable_and_keeps_stats_without_inputs():
    torch.manual_seed(0)
    net = build_model(
        TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t", dropout=0.5)
    )
    recalibrate_batchnorm(net, _batches(2))
    first = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    recalibrate_batchnorm(net, _batches(2))  # dropout must not make this differ
    for key, value in first.items():
        assert torch.allclose(net.state_dict()[key], value, atol=1e-6), key
    assert recalibrate_batchnorm(net, []) == 0
    for key, value in first.items():
        assert torch.allclose(net.state_dict()[key], value, atol=1e-6), key
    assert all(layer.momentum == 0.1 for layer in batchnorm_layers(net))

"""Precise BatchNorm: re-estimate running statistics for the current weights before evaluating.

Why: with sign-based Lion updates at larger lrs the running means/vars (momentum 0.1) lag the
weights, and eval-mode predictions collapse while train-mode ones are fine.
Exercise: `pytest tests/model/test_trainer.py -k bn`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from histosweep.model._predict import autocast


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, inputs: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> int:
    """Replace every BatchNorm's running stats by their average over `inputs`.

    inputs: (image (b, 3, H, W), mask (b, 1, H, W)) batches with b >= 2. Only the BatchNorm
    layers run in train mode (dropout stays off). Returns the number of images seen; with none,
    the old statistics are kept. Leaves the model in eval mode.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
        for m in layers
    ]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None = cumulative average over the batches below
    model.eval()
    for layer in layers:
        layer.train()
    seen = 0
    try:
        for batch in inputs:  # (images, masks) or, for tile bags, (images, masks, valid)
            with autocast(batch[0].device):
                model(*batch)
            seen += batch[0].shape[0]
    finally:
        for layer, (mean, var, count, momentum) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if seen == 0:
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                layer.num_batches_tracked.copy_(count)
        model.eval()
    return seen

"""Lion (timm) + CosineAnnealingWarmRestarts stepped per iteration (the reference recipe).

Exercise: `pytest tests/model/test_optim.py`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from histosweep.model._config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Lion(lr, weight_decay) with no decay on biases and norm weights (1-d tensors).

    timm's Lion: the same update as lion-pytorch's (decoupled weight decay, sign of the
    interpolated momentum), with foreach kernels on CUDA: one launch per op for all tensors
    instead of one per tensor, which is most of a small-batch step on a GPU otherwise.
    """
    from timm.optim import Lion

    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            # why: decaying BN/LN scales and biases only fights the normalisation (timm does the same)
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # NOTE: foreach explicit: timm's default (None) resolves to it on CUDA only in newer releases
    return Lion([g for g in groups if g["params"]], lr=cfg.lr, foreach=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> CosineAnnealingWarmRestarts:
    """Cosine restarts every cfg.t0 epochs (x cfg.t_mult), in fractional-epoch units."""
    return CosineAnnealingWarmRestarts(optimizer, T_0=cfg.t0, T_mult=cfg.t_mult)


def step_scheduler(
    scheduler: CosineAnnealingWarmRestarts, epoch: int, iteration: int, iters_per_epoch: int
) -> float:
    """Set the lr for `iteration` of `epoch` (call before its optimizer step); returns it."""
    scheduler.step(epoch + iteration / iters_per_epoch)
    return float(scheduler.get_last_lr()[0])

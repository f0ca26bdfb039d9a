"""Lion or AdamW (timm's factory) + CosineAnnealingWarmRestarts stepped per iteration.

Exercise: `pytest tests/model/test_optim.py`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from histosweep.model._config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """cfg.optimizer (lion | adamw) from timm's factory, no decay on biases and norm weights.

    timm's Lion: the same update as lion-pytorch's (decoupled weight decay, sign of the
    interpolated momentum), with foreach kernels on CUDA: one launch per op for all tensors
    instead of one per tensor, which is most of a small-batch step on a GPU otherwise.
    adamw is torch.optim.AdamW (betas 0.9/0.999, eps 1e-8).
    """
    from timm.optim import create_optimizer_v2

    # why filter_bias_and_bn: decaying BN/LN scales and biases (1-d tensors) only fights the
    # normalisation; the factory puts them in a weight_decay=0 group
    # NOTE: foreach explicit: timm's default (None) resolves to it on CUDA only in newer releases
    return create_optimizer_v2(
        model,
        opt=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        foreach=True,
        filter_bias_and_bn=True,
    )


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

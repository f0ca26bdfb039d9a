"""EMA of a fold's weights (timm's ModelEmaV3), for cfg.ema_decay > 0.

Exercise: `pytest tests/model/test_options.py -k ema`.
"""

from __future__ import annotations

from torch import nn

from histosweep.model._config import TrainConfig


def build_ema(model: nn.Module, cfg: TrainConfig):
    """A timm ModelEmaV3 copy of `model` (same device and memory format), or None when off.

    Call `ema.update(model, step=n)` after the n-th optimizer step (n from 1); `ema.module` is
    the averaged network. Buffers (BatchNorm running stats) are averaged too.
    """
    if cfg.ema_decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    # why use_warmup: a fold is a few hundred steps; a constant 0.999 would leave the average
    # mostly the random init. timm's warmup decay 1 - (1 + step)^-2/3, capped at ema_decay,
    # copies the weights at step 1 and reaches 0.99 only near step 1000.
    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)

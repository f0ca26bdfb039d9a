"""Snapshots of a fold's training state (weights, EMA, optimizer, scheduler, RNG) on the CPU, so
a CUDA out-of-memory epoch can be rerun from its start. Exercise: `pytest tests/model -k oom`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the model's state dict (safe from later steps)."""
    # one copy: to() with contiguous_format also undoes channels_last on the way
    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def _cpu_copy(value: Any) -> Any:
    """Deep copy of a nested optimizer state with every tensor cloned onto the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return copy.deepcopy(value)


@dataclass
class FoldState:
    model: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    cpu_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    ema: dict[str, torch.Tensor] | None = None  # the EMA weights (cfg.ema_decay > 0)
    optimizer_steps: int = 0  # the EMA's warmup clock

    @classmethod
    def capture(cls, run) -> FoldState:
        """run: a _FoldRun (model, optimizer, scheduler, device)."""
        cuda = run.device.type == "cuda"
        return cls(
            model=cpu_state_dict(run.model),
            optimizer=_cpu_copy(run.optimizer.state_dict()),
            scheduler=copy.deepcopy(run.scheduler.state_dict()),
            cpu_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(run.device) if cuda else None,
            ema=cpu_state_dict(run.ema.module) if run.ema is not None else None,
            optimizer_steps=run.optimizer_steps,
        )

    def restore(self, run) -> None:
        run.model.load_state_dict(self.model)
        # a fresh copy: on the CPU load_state_dict would adopt (and later mutate) our tensors
        run.optimizer.load_state_dict(_cpu_copy(self.optimizer))
        run.scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        if self.ema is not None:
            run.ema.module.load_state_dict(self.ema)
        run.optimizer_steps = self.optimizer_steps
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, run.device)

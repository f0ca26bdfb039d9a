"""Memory a trial needs on a device: one real train step (and one evaluation batch) of a config,
for `histosweep worker --trials-per-gpu auto`. Exercise: `pytest tests/model/test_memory.py`.
"""

from __future__ import annotations

import torch

from histosweep.model._batches import STAGE_ON_GPU_MAX_BYTES
from histosweep.model._config import TrainConfig
from histosweep.model._errors import ModelError


def backbone_parameters(name: str) -> int:
    """Parameter count of a timm backbone, built on the meta device (no memory, no download)."""
    import timm

    if name.startswith("hf-hub:"):
        raise ModelError(f"cannot size {name} without downloading it; give --trials-per-gpu N")
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0)
    return sum(p.numel() for p in net.parameters())


def staged_bytes(n_rows: int, resolution: int) -> int:
    """GPU bytes of a fold's rows staged by RowSource: (R, R, 3) image + (R, R) mask, uint8."""
    need = n_rows * resolution * resolution * 4
    return need if need <= STAGE_ON_GPU_MAX_BYTES else 0  # bigger folds stream from the memmap


def run_train_step(cfg: TrainConfig, device: torch.device) -> float:
    """One optimizer step at cfg's micro-batch and one no-grad forward at the evaluation batch,
    on random inputs, as the fold trainer runs them (bf16 autocast on CUDA, channels_last).
    Returns the step's loss (a stand-in: mean log-sum-exp of the logits)."""
    from histosweep.model._networks import build_model
    from histosweep.model._optim import build_optimizer
    from histosweep.model._predict import autocast, channels_last

    micro = max(2, cfg.batch_size // cfg.accumulation)
    with device:
        model = build_model(cfg, pretrained=False)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    loss = torch.zeros(())
    for batch, train in ((micro, True), (2 * micro, False)):  # eval batch: the trainer's 2x
        images = channels_last(torch.randn(batch, 3, cfg.resolution, cfg.resolution, device=device))
        masks = channels_last(torch.rand(batch, 1, cfg.resolution, cfg.resolution, device=device))
        model.train(train)
        with torch.set_grad_enabled(train), autocast(device):
            logits = model(images, masks)  # (b, C)
        if train:
            loss = logits.float().logsumexp(1).mean()  # (), a stand-in for the trainer's CE
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def train_step_peak_bytes(cfg: TrainConfig, device: torch.device) -> int:
    """Peak CUDA memory allocated by `run_train_step` (the weights, optimizer state, activations).

    NOTE: untested on a GPU in this project's CI (no GPU there); the CPU path of run_train_step
    is tested. The CUDA context and allocator slack are not in this figure: callers add them.
    """
    if device.type != "cuda":
        raise ModelError(f"peak memory is measured on a CUDA device, not {device}")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run_train_step(cfg, device)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)

"""The network a trial's folds start from, built once per process and copied for each fold.

Every fold of a trial builds the same network from the same seed (train_fold seeds torch with
cfg.seed before the build), so the second and later folds get a copy of the first build instead
of timm's random init (and pretrained-weight loading) again, and the RNG states the build left
behind: what a fold computes is bit for bit what a fresh build gives (tests/model/test_trainer.py).
One entry, kept on the CPU: a worker runs one trial at a time, and a new trial replaces it.

Exercise: `python bench/fold_phases.py` (the build phase of the folds after the first).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import torch

from histosweep.model._config import TrainConfig
from histosweep.model._net import DualBranchNet
from histosweep.model._networks import build_model


@dataclass
class _Entry:
    key: tuple
    template: DualBranchNet  # on the CPU, never trained
    cpu_rng: torch.Tensor  # torch's CPU generator state right after the build
    cuda_rng: torch.Tensor | None  # the device generator's state after the build (CUDA only)


class InitialModels:
    """build(cfg, num_classes, device): a fresh network as build_model would make it after
    torch.manual_seed(cfg.seed), leaving the generators where that build leaves them."""

    def __init__(self) -> None:
        self._entry: _Entry | None = None
        self._lock = threading.Lock()
        self.hits = 0  # copies handed out instead of builds (tests and the bench read it)

    def build(self, cfg: TrainConfig, *, num_classes: int, device: torch.device) -> DualBranchNet:
        key = (cfg, num_classes, str(device))
        with self._lock:
            entry = self._entry if self._entry is not None and self._entry.key == key else None
        if entry is not None:
            self.hits += 1
            torch.set_rng_state(entry.cpu_rng)
            if entry.cuda_rng is not None:
                torch.cuda.set_rng_state(entry.cuda_rng, device)
            return copy.deepcopy(entry.template).to(device)
        # NOTE: built on the device: random init of a ConvNeXt on the CPU took longer than a
        # short GPU epoch (bench/fold_phases.py)
        with device:
            model = build_model(cfg, num_classes=num_classes)
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        # NOTE: the copy is made on the CPU (moving the model there and back), so the device
        # never holds two networks at once
        template = copy.deepcopy(model.cpu())
        model = model.to(device)
        entry = _Entry(key, template, torch.get_rng_state(), cuda_rng)
        with self._lock:
            self._entry = entry
        return model

    def clear(self) -> None:
        with self._lock:
            self._entry = None


initial_models = InitialModels()

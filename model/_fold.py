"""train_fold: one cross-validation fold of a TrainConfig, on the fold run of its input layout
(data.InputSpec.layout: pictures -> the whole-picture run, bags -> the tile run), and its result.

Exercise: `pytest tests/model/test_trainer.py tests/model/test_tiles.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from histosweep.data import CLASSES, input_target
from histosweep.model._config import TrainConfig
from histosweep.model._errors import ModelError
from histosweep.model._net import DualBranchNet
from histosweep.model._networks import build_model
from histosweep.model._predict import pick_device
from histosweep.model._tile_trainer import TileFoldRun
from histosweep.model._trainer import EpochMetrics, _fit, _FoldRun, check_inputs

# layout -> the fold run that trains it
RUNS: dict[str, type[_FoldRun]] = {"pictures": _FoldRun, "bags": TileFoldRun}


@dataclass
class FoldResult:
    state_dict: dict[str, torch.Tensor]  # CPU tensors of the chosen weights (cfg.keep)
    val_probs: np.ndarray  # (n_val, C) softmax of the chosen weights
    holdout_probs: np.ndarray  # (n_holdout, C) softmax of the chosen weights; (0, C) when stopped
    epochs: list[EpochMetrics]
    best_epoch: int  # the epoch whose weights were kept (0-based)
    stopped: bool  # on_epoch asked to stop
    oom_events: list[dict]
    seconds: float
    device: str
    config: TrainConfig | None = None  # what trained it (for model())
    num_classes: int = 4

    @property
    def best_val_f1(self) -> float:
        return next((m.val_f1 for m in self.epochs if m.epoch == self.best_epoch), float("nan"))

    def model(self) -> DualBranchNet:
        """The network with the chosen weights, on the CPU, in eval mode."""
        if self.config is None:
            raise ModelError("FoldResult has no config; rebuild with model.build_model(cfg)")
        net = build_model(self.config, num_classes=self.num_classes, pretrained=False)
        net.load_state_dict(self.state_dict, strict=True)
        return net.eval()


def train_fold(
    cfg: TrainConfig,
    cache,
    labels: np.ndarray,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    holdout_idx: np.ndarray,
    device: str | torch.device | None = None,
    on_epoch: Callable[[EpochMetrics], bool] | None = None,
    progress: bool = True,
    desc: str = "",
) -> FoldResult:
    """Train one fold on rows of `cache` (a data.CachedArrays); indices are cache rows.

    on_epoch(metrics) is called after every epoch's validation; returning True stops the fold
    there (stopped=True). The caller's RNG state is left untouched; runs are seeded by cfg.seed.
    """

    num_classes = len(CLASSES)
    labels = np.asarray(labels, dtype=np.int64)
    splits = {
        name: np.asarray(idx, dtype=np.int64).reshape(-1) if len(idx) else np.zeros(0, np.int64)
        for name, idx in (
            ("train_idx", train_idx),
            ("val_idx", val_idx),
            ("holdout_idx", holdout_idx),
        )
    }
    check_inputs(cfg, cache, labels, splits, num_classes)
    device = pick_device(device)
    started = time.perf_counter()
    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        run = RUNS[input_target(cfg).layout](
            cfg,
            cache,
            labels,
            splits,
            device,
            progress=progress,
            desc=desc,
            num_classes=num_classes,
        )
        history, chosen, stopped = _fit(run, on_epoch)
        if stopped:  # pruned: the caller drops the fold, so no holdout pass
            holdout_probs = np.zeros((0, num_classes), dtype=np.float32)
        else:
            run.eval_model.load_state_dict(chosen.state)
            holdout_probs = run.holdout_probs()
    return FoldResult(
        state_dict=chosen.state,
        val_probs=chosen.val_probs,
        holdout_probs=holdout_probs,
        epochs=history,
        best_epoch=chosen.epoch,
        stopped=stopped,
        oom_events=run.oom_events,
        seconds=time.perf_counter() - started,
        device=str(device),
        config=cfg,
        num_classes=num_classes,
    )

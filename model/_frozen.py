"""Frozen-feature trials: a small head on cached embeddings (N, K, D) + counts, trained per fold
with the same pruning hook, keep rule and FoldResult as the fine-tuning trainer.

Exercise: `pytest tests/model/test_frozen.py` or `python bench/frozen.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from histosweep.model._config import TrainConfig
from histosweep.model._errors import ModelError
from histosweep.model._fold import FoldResult
from histosweep.model._loss import class_weights, soft_cross_entropy
from histosweep.model._metrics import macro_f1
from histosweep.model._mil import TilePool
from histosweep.model._optim import build_optimizer, build_scheduler, step_scheduler
from histosweep.model._predict import pick_device
from histosweep.model._trainer import EpochMetrics

EVAL_BATCH = 1024  # heads are tiny: validation in few large batches


class FrozenHead(nn.Module):
    """(B, K, D) tile embeddings [+ (B, K) coverage] -> TilePool -> LN -> head -> (B, C) logits."""

    def __init__(self, in_dim: int, cfg: TrainConfig, *, num_classes: int = 4) -> None:
        super().__init__()
        self.in_dim, self.num_classes = in_dim, num_classes
        self.mask_stats = cfg.frozen_mask_stats
        width = in_dim + int(self.mask_stats)
        self.pool = TilePool(cfg.tile_pool, width)
        # why LayerNorm, not the reference's BatchNorm: foundation-model embeddings have large,
        # uneven scales, and LN does not care about batch size 1 at the end of an epoch
        layers: list[nn.Module] = [nn.LayerNorm(width), nn.Dropout(cfg.dropout)]
        if cfg.frozen_head == "mlp":
            layers += [nn.Linear(width, cfg.head_hidden), nn.ReLU(inplace=True),
                       nn.Dropout(cfg.dropout)]
            width = cfg.head_hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, features: torch.Tensor, counts: torch.Tensor,
                coverage: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, K, D), counts (B,), coverage (B, K) -> logits (B, C)."""
        k = features.shape[1]
        valid = torch.arange(k, device=features.device)[None, :] < counts[:, None]  # (B, K)
        x = features.float()
        if self.mask_stats:
            x = torch.cat([x, coverage.float().unsqueeze(-1)], dim=-1)  # (B, K, D + 1)
        return self.net(self.pool(x, valid))  # (B, C)


def frozen_head_for_state(cfg: TrainConfig, state: dict, *, num_classes: int) -> FrozenHead:
    """A FrozenHead shaped to fit a saved state dict (its input width is in pool/net shapes)."""
    width = int(state["net.0.weight"].shape[0])  # the LayerNorm over D (+1 with mask stats)
    return FrozenHead(width - int(cfg.frozen_mask_stats), cfg, num_classes=num_classes)


@torch.inference_mode()
def head_probs(head: FrozenHead, emb, rows: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax of the head on embedding rows: (len(rows), C) float32."""
    head.eval()
    out = []
    for start in range(0, len(rows), EVAL_BATCH):
        batch = _batch(emb, rows[start:start + EVAL_BATCH], device)
        out.append(torch.softmax(head(*batch).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.num_classes), np.float32)


def _batch(emb, rows: np.ndarray, device: torch.device):
    features = torch.from_numpy(np.asarray(emb.features[rows], dtype=np.float32)).to(device)
    counts = torch.from_numpy(np.asarray(emb.counts[rows], dtype=np.int64)).to(device)
    coverage = torch.from_numpy(np.asarray(emb.coverage[rows], dtype=np.float32)).to(device)
    return features, counts, coverage


class _FrozenRun:
    def __init__(self, cfg, emb, labels, train_idx, val_idx, device, num_classes):
        self.cfg, self.emb, self.labels, self.device = cfg, emb, labels, device
        self.train_idx, self.val_idx = train_idx, val_idx
        self.head = FrozenHead(emb.features.shape[2], cfg, num_classes=num_classes).to(device)
        self.optimizer = build_optimizer(self.head, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.weights = class_weights(labels[train_idx], num_classes).to(device)  # (C,)
        self.num_classes = num_classes

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(self.train_idx)
        batches = [order[i:i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]
        self.head.train()
        total, lr = 0.0, self.cfg.lr
        for i, rows in enumerate(batches):
            lr = step_scheduler(self.scheduler, epoch, i, len(batches))
            rows = np.sort(rows)
            targets = nn.functional.one_hot(torch.from_numpy(self.labels[rows]), self.num_classes)
            logits = self.head(*_batch(self.emb, rows, self.device))  # (b, C)
            loss = soft_cross_entropy(logits, targets.float().to(self.device), weight=self.weights,
                                      label_smoothing=self.cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(rows)
        return total / max(len(order), 1), lr

    def validate(self) -> tuple[np.ndarray, float, float]:
        probs = head_probs(self.head, self.emb, self.val_idx, self.device)
        truth = self.labels[self.val_idx]
        log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-12, None)))
        onehot = nn.functional.one_hot(torch.from_numpy(truth), self.num_classes)
        loss = soft_cross_entropy(log_probs, onehot, weight=self.weights.cpu(),
                                  label_smoothing=self.cfg.label_smoothing)
        return probs, float(loss), macro_f1(truth, probs, self.num_classes)


def _state(head: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


def train_frozen_fold(cfg: TrainConfig, emb, labels: np.ndarray, *, train_idx, val_idx,
                      holdout_idx, device=None, on_epoch: Callable | None = None,
                      progress: bool = True, desc: str = "") -> FoldResult:
    """train_fold's contract on a data.EmbeddingCache: indices are its rows."""
    del progress, desc  # an epoch takes milliseconds: one log line per epoch is the progress
    num_classes = 4
    labels = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx, holdout_idx = (np.asarray(i, dtype=np.int64).reshape(-1)
                                       for i in (train_idx, val_idx, holdout_idx))
    if len(train_idx) < 2 or len(val_idx) < 1:
        raise ModelError("a fold needs >= 2 training rows and >= 1 validation row")
    device = pick_device(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        run = _FrozenRun(cfg, emb, labels, train_idx, val_idx, device, num_classes)
        history, best, stopped = _fit(run, on_epoch)
    run.head.load_state_dict(best["state"])
    holdout = (np.zeros((0, num_classes), np.float32) if stopped
               else head_probs(run.head, emb, holdout_idx, device))
    return FoldResult(state_dict=best["state"], val_probs=best["val_probs"], holdout_probs=holdout,
                      epochs=history, best_epoch=best["epoch"], stopped=stopped, oom_events=[],
                      seconds=time.perf_counter() - started, device=str(device), config=cfg,
                      num_classes=num_classes)


def _fit(run: _FrozenRun, on_epoch) -> tuple[list, dict, bool]:
    best = {"epoch": -1, "f1": -1.0, "state": {}, "val_probs": None}
    history: list[EpochMetrics] = []
    for epoch in range(run.cfg.epochs):
        started = time.perf_counter()
        train_loss, lr = run.train_epoch(epoch)
        train_s = time.perf_counter() - started
        val_probs, val_loss, val_f1 = run.validate()
        metrics = EpochMetrics(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_f1=val_f1,
                               lr=lr, seconds=time.perf_counter() - started,
                               images_per_s=len(run.train_idx) / max(train_s, 1e-9))
        history.append(metrics)
        if run.cfg.keep == "last" or val_f1 > best["f1"]:  # ties keep the earlier epoch
            best = {"epoch": epoch, "f1": val_f1, "state": _state(run.head), "val_probs": val_probs}
        if on_epoch is not None and on_epoch(metrics):
            return history, best, True
    return history, best, False

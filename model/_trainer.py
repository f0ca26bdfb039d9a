"""The fold run of the reference recipe on pictures (Lion, cosine restarts per iteration,
weighted label-smoothed CE on CutMix targets), validated every epoch; model._fold.train_fold
drives it (the tile run, model._tile_trainer, subclasses it).

Exercise: `pytest tests/model/test_trainer.py` or `python bench/train_step.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from histosweep.data import input_target
from histosweep.exceptions import one_line
from histosweep.model._batches import (
    RowSource,
    effective_batches,
    epoch_order,
    epoch_seed,
    micro_chunks,
)
from histosweep.model._bn import recalibrate_batchnorm
from histosweep.model._config import TrainConfig
from histosweep.model._ema import build_ema
from histosweep.model._errors import ModelError
from histosweep.model._fold_state import FoldState, cpu_state_dict
from histosweep.model._initial import initial_models
from histosweep.model._loss import class_weights, soft_cross_entropy, target_weight_sum
from histosweep.model._metrics import macro_f1
from histosweep.model._net import DualBranchNet
from histosweep.model._optim import build_optimizer, build_scheduler, step_scheduler
from histosweep.model._predict import autocast, channels_last, probs_for_rows

MIN_MICRO_BATCH = 2  # BatchNorm1d in the head cannot train on one sample
CPU_PREDICT_PIXELS = 96 * 64 * 64  # a CPU validation batch: 96 images at 64 px, 2 at 384 px


@dataclass
class EpochMetrics:
    epoch: int  # 0-based
    train_loss: float  # mean weighted CE over the epoch's training images (CutMix targets)
    val_loss: float  # same criterion on the validation fold, one-hot targets
    val_f1: float  # macro-F1 over all classes
    lr: float  # lr of the epoch's last optimizer step
    seconds: float  # wall time of the epoch, validation and OOM retries included
    images_per_s: float  # training images / training seconds (validation excluded)


def check_inputs(cfg: TrainConfig, cache, labels: np.ndarray, splits: dict, num_classes: int):
    n = len(cache.images)
    if len(labels) != n or len(cache.masks) != n:
        raise ModelError(f"{len(labels)} labels, {len(cache.masks)} masks for {n} cached images")
    want = input_target(cfg)
    if cache.spec != want:
        raise ModelError(
            f"cache holds {cache.spec.label} but the config wants {want.label}; open the cache "
            f"with data.open_inputs(ds, cfg)"
        )
    for name, idx in splits.items():
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ModelError(f"{name} must be 1-d row indices in [0, {n})")
    if len(splits["train_idx"]) < 2 or len(splits["val_idx"]) < 1:
        raise ModelError("a fold needs >= 2 training rows and >= 1 validation row")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ModelError(f"labels must be class ids in [0, {num_classes})")


class _FoldRun:
    """The mutable state of one fold's training; `_fit` drives it epoch by epoch."""

    def __init__(self, cfg, cache, labels, splits, device, *, progress, desc, num_classes):
        self.cfg, self.device, self.progress, self.desc = cfg, device, progress, desc
        self.labels, self.num_classes = labels, num_classes
        self.train_idx, self.val_idx = splits["train_idx"], splits["val_idx"]
        self.holdout_idx = splits["holdout_idx"]
        stage = np.concatenate([self.train_idx, self.val_idx])
        self.source = RowSource(cache.images, cache.masks, labels, device, stage_rows=stage)
        self.holdout_source = RowSource(cache.images, cache.masks, None, device)
        # the same network every fold of this trial starts from: built once per process
        self.model = initial_models.build(cfg, num_classes=num_classes, device=device)
        self.model = self.model.to(memory_format=torch.channels_last)  # as its inputs (any device)
        self.train_model = self._maybe_compile(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        self.ema = build_ema(self.model, cfg)  # None unless cfg.ema_decay > 0
        self.optimizer_steps = 0  # the EMA's warmup clock
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.weights = class_weights(labels[self.train_idx], num_classes).to(device)  # (C,)
        self.micro_batch = max(MIN_MICRO_BATCH, cfg.batch_size // cfg.accumulation)
        self.oom_events: list[dict] = []
        self._proven_micro_batch = 0  # the micro-batch an epoch has run through at (0: none yet)

    def _maybe_compile(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.cfg.compile and self.device.type == "cuda":
            return torch.compile(model)
        return model

    # --- training ------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float, int, float]:
        """One pass over the shuffled training rows -> (mean loss, last lr, images, seconds)."""
        augmenter = self.augmenter(epoch)
        order = epoch_order(self.train_idx, seed=self.cfg.seed, epoch=epoch)
        batches = effective_batches(order, self.cfg.batch_size)
        self.model.train()
        started = time.perf_counter()
        loss_sum, images, lr = torch.zeros((), device=self.device), 0, self.cfg.lr
        bar = tqdm(batches, desc=self._label(epoch), disable=not self.progress, leave=False)
        for i, rows in enumerate(bar):
            lr = step_scheduler(self.scheduler, epoch, i, len(batches))
            loss_sum += self.train_step(np.sort(rows), augmenter) * len(rows)
            images += len(rows)
        loss = float(loss_sum) / max(images, 1)  # one sync per epoch
        bar.close()
        return loss, lr, images, time.perf_counter() - started

    def augmenter(self, epoch: int):
        """The epoch's seeded augmentation (the tile run also draws its bags here)."""
        from histosweep.data import BatchAugmenter

        return BatchAugmenter(
            color_jitter_prob=self.cfg.color_jitter_prob,
            cutmix_prob=self.cfg.cutmix_prob,
            cutmix_alpha=self.cfg.cutmix_alpha,
            num_classes=self.num_classes,
            seed=epoch_seed(self.cfg.seed, epoch),
            device=self.device,
        )

    def train_step(self, rows: np.ndarray, augmenter) -> torch.Tensor:
        """One optimizer step on an effective batch, accumulated over micro-batches."""
        images_u8, masks_u8, labels = self.source.batch(rows)
        images, masks, targets = augmenter(images_u8, masks_u8, labels)  # (B,3,H,W) (B,1,H,W) (B,C)
        return self.optimizer_step((channels_last(images), channels_last(masks)), targets)

    def optimizer_step(self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
        """Weighted soft CE of train_model(*inputs) against targets (B, C), accumulated over
        micro-batches (each input sliced alike along dim 0), then one optimizer and EMA step."""
        denominator = target_weight_sum(targets, self.weights)  # shared by every micro-batch
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for chunk in micro_chunks(len(targets), self.micro_batch):
            with autocast(self.device):
                logits = self.train_model(*(x[chunk] for x in inputs))  # (b, C)
            loss = soft_cross_entropy(
                logits, targets[chunk], weight=self.weights,
                label_smoothing=self.cfg.label_smoothing, reduction="sum",
            ) / denominator
            loss.backward()
            total += loss.detach()
        self.optimizer.step()
        self.optimizer_steps += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.optimizer_steps)
        return total

    def train_epoch_with_retry(self, epoch: int) -> tuple[float, float, int, float]:
        """train_epoch; on CUDA OOM halve the micro-batch and rerun the epoch.

        The rerun starts from the epoch's first weights (a CPU snapshot) while the micro-batch
        is unproven. Once an epoch has run through at a micro-batch, its memory peak is known
        to fit and later epochs (same shapes) skip the snapshot, which costs as much as a tenth
        of a short GPU epoch (bench/fold_phases.py); an OOM there anyway (fragmentation) reruns
        the epoch from the current weights, and its oom_event says restored=False.
        """
        start = FoldState.capture(self) if self.micro_batch != self._proven_micro_batch else None
        while True:
            try:
                result = self.train_epoch(epoch)
                self._proven_micro_batch = self.micro_batch
                return result
            except torch.cuda.OutOfMemoryError as exc:
                message = one_line(exc, name=False)
            # outside the except block: the failed step's tensors are released first
            self._shrink_after_oom(epoch, message, restored=start is not None)
            if start is not None:
                start.restore(self)

    def _shrink_after_oom(self, epoch: int, message: str, *, restored: bool) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.micro_batch // 2 < MIN_MICRO_BATCH:
            raise ModelError(
                f"CUDA out of memory at micro-batch {self.micro_batch} ({self.cfg.image_backbone}"
                f"+{self.cfg.mask_backbone} at {self.cfg.resolution} px on {self.device}); "
                f"use a smaller resolution or backbone, or a GPU with more memory"
            )
        before = self.micro_batch
        self.micro_batch //= 2
        self.oom_events.append(
            {
                "epoch": epoch,
                "micro_batch_before": before,
                "micro_batch_after": self.micro_batch,
                "accumulation": -(-self.cfg.batch_size // self.micro_batch),
                "restored": restored,
                "error": message,
            }
        )
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- evaluation ----------------------------------------------------------------------
    @property
    def eval_model(self) -> DualBranchNet:
        """The weights validated, kept and saved: the EMA's when cfg.ema_decay > 0."""
        return self.model if self.ema is None else self.ema.module

    def recalibrate_bn(self, epoch: int) -> None:
        """Precise BN on up to cfg.bn_recalibration_images un-augmented training rows."""
        if self.cfg.bn_recalibration_images <= 0:
            return
        order = epoch_order(self.train_idx, seed=self.cfg.seed, epoch=epoch, stream=1)
        rows = order[: self.cfg.bn_recalibration_images]
        batches = effective_batches(rows, self.eval_batch_size())  # no backward: eval's batch
        recalibrate_batchnorm(self.eval_model, self._eval_inputs(batches))

    def _eval_inputs(self, batches: list[np.ndarray]):
        from histosweep.data import to_model_inputs

        for rows in batches:
            images_u8, masks_u8, _ = self.source.batch(np.sort(rows))
            images, masks = to_model_inputs(images_u8, masks_u8)  # (b, 3, H, W), (b, 1, H, W)
            yield channels_last(images), channels_last(masks)

    def eval_batch_size(self) -> int:
        return 2 * self.micro_batch  # no activations kept for backward: twice the train batch

    def predict_batch_size(self) -> int:
        """Validation and holdout batches: eval's, and on the CPU up to CPU_PREDICT_PIXELS per
        batch (oneDNN runs a batch of 96 images at 64 px ~15 % faster per image than 32;
        bench/fold_phases.py). Recalibration keeps eval's batches: they set its statistics."""
        if self.device.type != "cpu":
            return self.eval_batch_size()  # CUDA: what --trials-per-gpu auto measured
        return max(self.eval_batch_size(), CPU_PREDICT_PIXELS // self.cfg.resolution**2)

    def validate(self) -> tuple[np.ndarray, float, float]:
        """Validation probs (n_val, C), loss (same criterion, one-hot targets), macro-F1."""
        probs = self.predict_rows(self.source, self.val_idx)
        truth = self.labels[self.val_idx]
        log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-12, None)))  # logits up to a constant
        onehot = torch.nn.functional.one_hot(torch.from_numpy(truth), self.num_classes)
        loss = soft_cross_entropy(
            log_probs, onehot, weight=self.weights.cpu(), label_smoothing=self.cfg.label_smoothing
        )
        return probs, float(loss), macro_f1(truth, probs, self.num_classes)

    def holdout_probs(self) -> np.ndarray:
        return self.predict_rows(self.holdout_source, self.holdout_idx)

    def predict_rows(self, source: RowSource, rows: np.ndarray) -> np.ndarray:
        """Softmax (len(rows), C) of the kept weights (the tile run pools each image's bag)."""
        return probs_for_rows(self.eval_model, source, rows, batch_size=self.predict_batch_size())

    def _label(self, epoch: int) -> str:
        return f"{self.desc} epoch {epoch + 1}/{self.cfg.epochs}".strip()


@dataclass
class _Chosen:
    """The weights a fold keeps so far (cfg.keep: best val F1, ties -> earlier; or last)."""

    keep: str
    epoch: int = -1
    f1: float = -1.0
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    val_probs: np.ndarray | None = None

    def offer(self, run: _FoldRun, metrics: EpochMetrics, val_probs: np.ndarray) -> None:
        if self.keep == "best" and metrics.val_f1 <= self.f1:
            return
        self.epoch, self.f1, self.val_probs = metrics.epoch, metrics.val_f1, val_probs
        self.state = cpu_state_dict(run.eval_model)


def _fit(
    run: _FoldRun, on_epoch: Callable[[EpochMetrics], bool] | None
) -> tuple[list, _Chosen, bool]:
    chosen, history, stopped = _Chosen(run.cfg.keep), [], False
    for epoch in range(run.cfg.epochs):
        started = time.perf_counter()
        train_loss, lr, images, train_s = run.train_epoch_with_retry(epoch)
        run.recalibrate_bn(epoch)
        val_probs, val_loss, val_f1 = run.validate()
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_f1=val_f1,
            lr=lr,
            seconds=time.perf_counter() - started,
            images_per_s=images / max(train_s, 1e-9),
        )
        history.append(metrics)
        chosen.offer(run, metrics, val_probs)
        if on_epoch is not None and on_epoch(metrics):
            stopped = True
            break
    return history, chosen, stopped

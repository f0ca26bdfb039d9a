"""Batches for the fold trainer: seeded epoch order, effective batches, micro-batch chunks,
and a row source that gathers uint8 rows from the cache (or from a copy staged on the GPU).

Exercise: `pytest tests/model/test_batches.py`.
"""

from __future__ import annotations

import numpy as np
import torch

# why: a fold's rows at 384 px are ~0.5 GiB of uint8; holding them on the GPU removes the
# memmap gather + host->device copy from every step. Bigger caches stream from the memmap.
STAGE_ON_GPU_MAX_BYTES = 2 * 1024**3


def epoch_order(train_idx: np.ndarray, *, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
    """A permutation of train_idx that depends only on (seed, epoch, stream): retries repeat it."""
    return np.random.default_rng([seed, epoch, stream, 0x5EED]).permutation(np.asarray(train_idx))


def effective_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split `order` into batches of `batch_size`; a final batch of 1 is dropped (BatchNorm)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) >= 2]


def micro_chunks(n: int, micro_batch: int) -> list[slice]:
    """Near-equal slices of an n-row batch, each <= micro_batch rows where possible and >= 2.

    why >= 2: BatchNorm1d in the head cannot train on a single sample.
    """
    chunks = max(1, min(-(-n // micro_batch), n // 2))
    bounds = np.linspace(0, n, chunks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of one epoch (so a retried epoch draws the same augmentations)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class RowSource:
    """uint8 rows of images (N, R, R, 3) / masks (N, R, R) / labels (N,) delivered on `device`.

    stage_rows: rows copied to the GPU once (when CUDA and they fit STAGE_ON_GPU_MAX_BYTES);
    otherwise every batch is gathered from the (memmapped) arrays in ascending row order.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        labels: np.ndarray | None,
        device: torch.device,
        *,
        stage_rows: np.ndarray | None = None,
    ) -> None:
        self.images, self.masks, self.device = images, masks, device
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self._position: np.ndarray | None = None  # row -> index into the staged tensors
        if stage_rows is not None and device.type == "cuda" and self._fits(len(stage_rows)):
            self._stage(np.unique(np.asarray(stage_rows)))

    def _fits(self, n_rows: int) -> bool:
        per_row = self.images[0].nbytes + self.masks[0].nbytes if len(self.images) else 0
        return n_rows * per_row <= STAGE_ON_GPU_MAX_BYTES

    def _stage(self, rows: np.ndarray) -> None:
        self._staged_images = torch.from_numpy(self.images[rows]).to(self.device)  # (n, R, R, 3)
        self._staged_masks = torch.from_numpy(self.masks[rows]).to(self.device)  # (n, R, R)
        self._position = np.full(len(self.images), -1, dtype=np.int64)
        self._position[rows] = np.arange(len(rows))

    @property
    def staged(self) -> bool:
        return self._position is not None

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """rows (B,) -> images (B, R, R, 3) u8, masks (B, R, R) u8, labels (B,) int64 | None."""
        rows = np.asarray(rows)
        labels = None
        if self.labels is not None:
            labels = torch.from_numpy(self.labels[rows]).to(self.device, non_blocking=True)
        if self._position is not None and (self._position[rows] >= 0).all():
            pos = torch.from_numpy(self._position[rows]).to(self.device, non_blocking=True)
            return self._staged_images[pos], self._staged_masks[pos], labels
        images = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        masks = torch.from_numpy(np.ascontiguousarray(self.masks[rows]))
        if self.device.type == "cuda":
            images, masks = images.pin_memory(), masks.pin_memory()
        return (
            images.to(self.device, non_blocking=True),
            masks.to(self.device, non_blocking=True),
            labels,
        )

"""The fold trainer's tile run: the same epochs, pruning hooks, OOM halving and kept weights as
the whole-picture run, fed bags of tiles (a fresh seeded bag per image each epoch, every tile
at evaluation). Exercise: `pytest tests/model/test_tiles.py`.
"""

from __future__ import annotations

import numpy as np
import torch

from histosweep.model._batches import epoch_seed
from histosweep.model._tile_bags import (
    bag_inputs,
    cutmix_within_bags,
    eval_bags,
    gather_tiles,
    train_bags,
)
from histosweep.model._tile_predict import probs_for_bags
from histosweep.model._trainer import _FoldRun


class TileFoldRun(_FoldRun):
    """_FoldRun over a data.TileArrays cache: rows are images, each a padded bag of K tiles."""

    def __init__(self, cfg, cache, labels, splits, device, **kwargs) -> None:
        super().__init__(cfg, cache, labels, splits, device, **kwargs)
        self.counts = np.asarray(cache.counts, dtype=np.int64)  # (N,)
        self.tiles = int(cache.images.shape[1])  # K
        self.bag = min(cfg.tile_bag or self.tiles, self.tiles)
        self._bags = self._valid = None
        self._cutmix_generator = torch.Generator()

    def augmenter(self, epoch: int):
        """Per-tile flips and colour; CutMix is done inside each bag (never across images)."""
        from histosweep.data import BatchAugmenter

        self._bags, self._valid = train_bags(self.counts, self.bag, seed=self.cfg.seed, epoch=epoch)
        self._cutmix_generator.manual_seed(epoch_seed(self.cfg.seed, epoch) + 1)
        return BatchAugmenter(
            color_jitter_prob=self.cfg.color_jitter_prob, cutmix_prob=0.0, cutmix_alpha=1.0,
            num_classes=self.num_classes, seed=epoch_seed(self.cfg.seed, epoch), device=self.device,
        )

    def train_step(self, rows: np.ndarray, augmenter) -> torch.Tensor:
        """One optimizer step on the bags of `rows`, accumulated over micro-batches of images."""
        images, masks, labels, valid = self._train_inputs(rows, augmenter)
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()  # (B, C)
        return self.optimizer_step((images, masks, valid), targets)

    def _train_inputs(self, rows: np.ndarray, augmenter):
        """-> images (B, k, 3, T, T), masks (B, k, 1, T, T), labels (B,), valid (B, k)."""
        images_u8, masks_u8, labels = self.source.batch(rows)  # (B, K, T, T, 3), (B, K, T, T), (B,)
        images_u8, masks_u8 = gather_tiles(images_u8, masks_u8, self._bags[rows])
        batch, k = images_u8.shape[:2]
        flat_images, flat_masks, _ = augmenter(
            images_u8.flatten(0, 1), masks_u8.flatten(0, 1), labels.repeat_interleave(k)
        )  # (B*k, 3, T, T), (B*k, 1, T, T)
        images, masks = flat_images.unflatten(0, (batch, k)), flat_masks.unflatten(0, (batch, k))
        valid = torch.from_numpy(self._valid[rows]).to(self.device)
        cutmix_within_bags(images, masks, valid, prob=self.cfg.cutmix_prob,
                           alpha=self.cfg.cutmix_alpha, generator=self._cutmix_generator)
        return images, masks, labels, valid

    def _shrink_after_oom(self, epoch: int, message: str, *, restored: bool) -> None:
        """Halve the micro-batch of images; the event also counts the tiles per micro-batch."""
        super()._shrink_after_oom(epoch, message, restored=restored)
        event = self.oom_events[-1]
        event["tiles_before"] = event["micro_batch_before"] * self.bag
        event["tiles_after"] = event["micro_batch_after"] * self.bag

    def _eval_inputs(self, batches):
        for rows in batches:
            rows = np.sort(rows)
            images_u8, masks_u8, _ = self.source.batch(rows)
            picks, valid = eval_bags(self.counts[rows], self.tiles)
            images_u8, masks_u8 = gather_tiles(images_u8, masks_u8, picks)
            images, masks = bag_inputs(images_u8, masks_u8)
            yield images, masks, torch.from_numpy(valid).to(self.device)

    def predict_rows(self, source, rows: np.ndarray) -> np.ndarray:
        return probs_for_bags(self.eval_model, source, self.counts, rows,
                              batch_size=self.eval_batch_size())

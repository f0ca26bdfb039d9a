"""Inference on tile bags: softmax per image over its pooled tiles, flip/rot90 TTA per tile.

Exercise: `pytest tests/model/test_tiles.py`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from histosweep.model._batches import RowSource
from histosweep.model._errors import ModelError
from histosweep.model._predict import autocast, map_rows_halving, pick_device
from histosweep.model._tile_bags import bag_inputs, eval_bags


def _dihedral(x: torch.Tensor):
    """The 8 flips/rot90s of (B, K, C, T, T), each tile turned alike."""
    for flipped in (x, x.flip(-1)):
        for k in range(4):
            yield torch.rot90(flipped, k, dims=(-2, -1))


def _bag_probs(model, images, masks, valid, *, tta: bool) -> torch.Tensor:
    with autocast(images.device):
        if not tta:
            return torch.softmax(model(images, masks, valid).float(), dim=1).double()
        probs = [
            torch.softmax(model(img, msk, valid).float(), dim=1).double()
            for img, msk in zip(_dihedral(images), _dihedral(masks), strict=True)
        ]
    return torch.stack(probs).mean(dim=0)


@torch.inference_mode()
def probs_for_bags(
    model: nn.Module, source: RowSource, counts: np.ndarray, rows: np.ndarray, *,
    batch_size: int, tta: bool = False, progress: bool = False, desc: str = "predict",
) -> np.ndarray:
    """Softmax (len(rows), C) float64 of image rows of a tiles RowSource, every valid tile pooled.

    batch_size counts images (bags); CUDA out-of-memory halves it and retries.
    """
    model.eval()
    counts = np.asarray(counts, dtype=np.int64)
    return map_rows_halving(lambda batch: _rows_probs(model, source, counts, batch, tta=tta),
                            rows, batch_size=batch_size, what="tile inference",
                            num_classes=int(getattr(model, "num_classes", 0)),
                            progress=progress, desc=desc)


def _rows_probs(model, source: RowSource, counts: np.ndarray, rows: np.ndarray, *, tta: bool):
    images_u8, masks_u8, _ = source.batch(rows)  # (B, K, T, T, 3), (B, K, T, T)
    _, valid = eval_bags(counts[rows], images_u8.shape[1])
    images, masks = bag_inputs(images_u8, masks_u8)  # (B, K, 3, T, T), (B, K, 1, T, T)
    valid = torch.from_numpy(valid).to(images.device)
    return _bag_probs(model, images, masks, valid, tta=tta).cpu().numpy()


def predict_bag_probs(
    model: nn.Module, images_u8: np.ndarray, masks_u8: np.ndarray, counts: np.ndarray, *,
    batch_size: int = 32, device=None, tta: bool = False, progress: bool = False,
) -> np.ndarray:
    """Softmax (N, C) float64 for tile bags (N, K, T, T, 3) + (N, K, T, T) with (N,) valid counts."""
    if not len(images_u8) == len(masks_u8) == len(counts):
        raise ModelError(f"predict_bag_probs: {len(images_u8)} bags, {len(masks_u8)} mask bags, "
                         f"{len(counts)} counts")
    if device is not None:
        model.to(pick_device(device))
    source = RowSource(images_u8, masks_u8, None, next(model.parameters()).device)
    return probs_for_bags(model, source, counts, np.arange(len(images_u8)), batch_size=batch_size,
                          tta=tta, progress=progress)

"""Tile bags for the tile model: which cached tiles each image shows per epoch (a fresh seeded
subset in training, every tile at evaluation), gathering them, and CutMix inside one image's bag.

Exercise: `pytest tests/model/test_tiles.py`.
"""

from __future__ import annotations

import numpy as np
import torch

from histosweep.data import rand_bbox, to_model_inputs


def train_bags(counts: np.ndarray, bag: int, *, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image a random subset of its valid tiles, depending only on (seed, epoch).

    counts (N,) valid tiles per row -> picks (N, k) tile indices, valid (N, k) bool, k = bag.
    An image with fewer than `bag` tiles shows all of them (the rest of its row is padding).
    """
    k_max = int(counts.max()) if len(counts) else 1
    keys = np.random.default_rng([seed, epoch, 0xBA65]).random((len(counts), k_max))
    keys[np.arange(k_max)[None, :] >= counts[:, None]] = np.inf  # padding tiles sort last
    picks = np.argsort(keys, axis=1, kind="stable")[:, :bag]  # (N, k)
    valid = np.arange(picks.shape[1])[None, :] < np.minimum(counts, bag)[:, None]
    return np.where(valid, picks, 0), valid


def eval_bags(counts: np.ndarray, tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cached tile, in rank order: picks (N, K), valid (N, K)."""
    picks = np.broadcast_to(np.arange(tiles), (len(counts), tiles))
    return picks, picks < counts[:, None]


def gather_tiles(images: torch.Tensor, masks: torch.Tensor, picks: np.ndarray):
    """images (B, K, T, T, 3), masks (B, K, T, T), picks (B, k) -> (B, k, T, T, 3), (B, k, T, T)."""
    index = torch.from_numpy(np.ascontiguousarray(picks)).to(images.device)
    rows = torch.arange(len(picks), device=images.device)[:, None]
    return images[rows, index], masks[rows, index]


def bag_inputs(images: torch.Tensor, masks: torch.Tensor):
    """Eval path: (B, k, T, T, 3) u8, (B, k, T, T) u8 -> (B, k, 3, T, T) normalised, (B, k, 1, T, T)."""
    batch, tiles = images.shape[:2]
    planes, mask_planes = to_model_inputs(images.flatten(0, 1), masks.flatten(0, 1))
    return planes.unflatten(0, (batch, tiles)), mask_planes.unflatten(0, (batch, tiles))


def cutmix_within_bags(
    planes: torch.Tensor, mask_planes: torch.Tensor, valid: torch.Tensor, *, prob: float,
    alpha: float, generator: torch.Generator,
) -> bool:
    """With prob `prob`: one box pasted into every tile from another valid tile of the SAME image
    (images and masks alike), in place. The label is the image's, so targets stay one-hot.

    planes (B, k, 3, T, T), mask_planes (B, k, 1, T, T), valid (B, k) bool. Returns whether it pasted.
    """
    if prob <= 0 or float(torch.rand(1, generator=generator)) >= prob:
        return False
    batch, tiles, _, height, width = planes.shape
    counts = valid.sum(dim=1).cpu()  # (B,)
    lam = _beta(alpha, generator)
    y0, y1, x0, x1 = rand_bbox(height, width, lam, generator)
    shift = torch.randint(1, max(tiles, 2), (batch,), generator=generator)  # (B,)
    source = (torch.arange(tiles)[None, :] + shift[:, None]) % counts.clamp(min=1)[:, None]  # (B, k)
    source = source.to(planes.device)
    rows = torch.arange(batch, device=planes.device)[:, None]
    planes[..., y0:y1, x0:x1] = planes[rows, source][..., y0:y1, x0:x1]
    mask_planes[..., y0:y1, x0:x1] = mask_planes[rows, source][..., y0:y1, x0:x1]
    return True


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha), seeded from the CPU generator (so a retried epoch repeats it)."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))

"""Cutting one decoded image into a model input other than the whole resized picture: the tumour
mask's bounding-box crop (`mask_crop`) or a bag of native-resolution tiles ranked by tumour-mask
coverage (`tiles`), with the fallback each image needed. Exercise: `pytest tests/data/test_data_tiles.py`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from histosweep.data._decode import resize_pair

# Per-sample fallbacks, recorded in the cache's index.json and summarised for trials/bundles.
FALLBACK_MASK = "mask"  # ranked by tumour-mask coverage >= tile_min_mask (the normal case)
FALLBACK_MASK_BELOW = "mask_below_min"  # mask present but no tile reaches tile_min_mask: best-covered tiles
FALLBACK_TISSUE = "tissue"  # mask empty: ranked by Otsu tissue coverage
FALLBACK_SMALL = "small_image"  # image (at tile_scale) smaller than one tile: letterboxed to one tile
FALLBACK_WHOLE = "whole_image"  # mask_crop with an empty mask: the whole image
FALLBACKS = (FALLBACK_MASK, FALLBACK_MASK_BELOW, FALLBACK_TISSUE, FALLBACK_SMALL, FALLBACK_WHOLE)


def cut_crop(image: Image.Image, raw_mask: np.ndarray, resolution: int, mode: str,
             margin: float) -> tuple[dict[str, np.ndarray], str]:
    """mask_crop: the mask's bounding box grown by `margin` (a fraction of its sides), resized.

    -> ({"images": (R, R, 3), "masks": (R, R)}, fallback); an empty mask gives the whole image.
    """
    if not raw_mask.any():
        mask = np.ones_like(raw_mask, dtype=bool)
        img, msk = resize_pair(image, mask, resolution, mode)
        return {"images": img, "masks": msk}, FALLBACK_WHOLE
    y0, y1, x0, x1 = _grown_bbox(raw_mask, margin)
    crop = image.crop((x0, y0, x1, y1))
    img, msk = resize_pair(crop, raw_mask[y0:y1, x0:x1], resolution, mode)
    return {"images": img, "masks": msk}, FALLBACK_MASK


def cut_tiles(image: Image.Image, raw_mask: np.ndarray, size: int, scale: float, count: int,
              min_mask: float) -> tuple[dict[str, np.ndarray], str]:
    """tiles: up to `count` tiles of `size` px cut at `scale` x native resolution.

    -> ({"images": (K, T, T, 3), "masks": (K, T, T), "counts": ()}, fallback). Tiles after
    `counts` are zeros. Never an empty bag: every image gives >= 1 tile.
    """
    rgb, mask = _scaled(image, raw_mask, scale)  # (H, W, 3) uint8, (H, W) bool
    t, k = size, count
    images = np.zeros((k, t, t, 3), np.uint8)
    masks = np.zeros((k, t, t), np.uint8)
    if rgb.shape[0] < t or rgb.shape[1] < t:
        full = mask if mask.any() else np.ones_like(mask)
        images[0], masks[0] = resize_pair(Image.fromarray(rgb), full, t, "pad")
        return {"images": images, "masks": masks, "counts": np.int32(1)}, FALLBACK_SMALL
    boxes, order, fallback = rank_tiles(rgb, mask, t, min_mask)
    chosen = order[:k]
    shown_mask = mask if mask.any() else np.ones_like(mask)  # empty mask: whole tile is "tumour"
    for slot, i in enumerate(chosen):
        y, x = boxes[i]
        images[slot] = rgb[y : y + t, x : x + t]
        masks[slot] = shown_mask[y : y + t, x : x + t]
    return {"images": images, "masks": masks, "counts": np.int32(len(chosen))}, fallback


def _grown_bbox(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mask's bounding box grown by margin x its sides, clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dy, dx = round((y1 - y0) * margin), round((x1 - x0) * margin)
    height, width = mask.shape
    return max(0, y0 - dy), min(height, y1 + dy), max(0, x0 - dx), min(width, x1 + dx)


def _scaled(image: Image.Image, raw_mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask at `scale` x native size: (H, W, 3) uint8, (H, W) bool."""
    if scale == 1.0:
        return np.asarray(image), raw_mask.astype(bool)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = np.asarray(image.resize(size, Image.Resampling.BOX))  # area average: no aliasing
    grey = Image.fromarray(raw_mask.astype(np.uint8) * 255, "L")
    mask = np.asarray(grey.resize(size, Image.Resampling.BOX)) >= 128
    return rgb, mask


def rank_tiles(
    rgb: np.ndarray, mask: np.ndarray, size: int, min_mask: float
) -> tuple[list[tuple[int, int]], np.ndarray, str]:
    """Grid tiles (top-left corners), their ranking (best first) and the fallback used.

    Tumour-mask coverage >= min_mask first; a mask that reaches it nowhere -> the best-covered
    tiles that touch it; an empty mask -> tissue coverage from an Otsu threshold.
    """
    boxes = grid_boxes(rgb.shape[0], rgb.shape[1], size)
    cover = coverage(mask, boxes, size)  # (n,)
    if mask.any():
        keep = np.flatnonzero(cover >= max(min_mask, 1e-9))
        fallback = FALLBACK_MASK
        if keep.size == 0:
            keep, fallback = np.flatnonzero(cover > 0), FALLBACK_MASK_BELOW
        if keep.size:  # NOTE: a mask only in the grid's uncut border falls through to tissue
            return boxes, keep[np.argsort(-cover[keep], kind="stable")], fallback
    tissue = coverage(tissue_mask(rgb), boxes, size)
    return boxes, np.argsort(-tissue, kind="stable"), FALLBACK_TISSUE


def grid_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping size x size grid, centred on the picture."""
    ny, nx = height // size, width // size
    y0, x0 = (height - ny * size) // 2, (width - nx * size) // 2
    return [(y0 + i * size, x0 + j * size) for i in range(ny) for j in range(nx)]


def coverage(mask: np.ndarray, boxes: list[tuple[int, int]], size: int) -> np.ndarray:
    """Share of True pixels in each box: (n,) float64, from one integral image."""
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.array([b[0] for b in boxes])
    xs = np.array([b[1] for b in boxes])
    total = (
        integral[ys + size, xs + size] - integral[ys, xs + size]
        - integral[ys + size, xs] + integral[ys, xs]
    )
    return total / float(size * size)


def otsu_threshold(grey: np.ndarray) -> float:
    """Otsu's threshold of a uint8 picture (numpy histogram; between-class variance maximised)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight0 = hist.cumsum()
    weight1 = weight0[-1] - weight0
    sum0 = (hist * levels).cumsum()
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(np.argmax(between))


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Stained tissue (darker than the Otsu threshold of the grey picture): (H, W) bool."""
    grey = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return grey <= otsu_threshold(grey)

"""Per-sample audit features, computed from the one decode the cache build does.

Colour statistics (HSV), flatness, perceptual hashes, pixel and mask digests.
Exercise: `histosweep prepare DATA` (features land in CACHE/<fingerprint>/features.json).
"""

from __future__ import annotations

import hashlib

import imagehash
import numpy as np
from PIL import Image

FEATURES_VERSION = 1
_SAMPLE_SIDE = 512  # colour statistics on a strided ~512 px view: no smoothing, fast
_THUMB_SIDE = 256  # perceptual hashes on a thumbnail (imagehash works at 8-32 px anyway)
_SAT_S, _SAT_V = 64, 40  # "coloured" pixel: saturation >= 0.25, value >= 0.16 (PIL HSV is 0..255)
_VIVID_S, _VIVID_V = 128, 100  # vivid: saturation >= 0.5, value >= 0.4; H&E stains rarely are
_GREEN_HUE = (42, 121)  # 60..170 degrees; H&E (pink 330-360, purple 260-300) never lands here
_FLAT_STEP = 3  # max channel difference to right/down neighbours that still counts as flat


def compute_features(image: Image.Image, mask: np.ndarray) -> dict:
    """JSON-ready features of one RGB image and its (H, W) bool mask."""
    array = np.asarray(image)  # (H, W, 3) uint8
    height, width = array.shape[:2]
    thumb = image.copy()
    thumb.thumbnail((_THUMB_SIDE, _THUMB_SIDE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    step = max(1, max(height, width) // _SAMPLE_SIDE)
    features = {
        "version": FEATURES_VERSION,
        "width": width,
        "height": height,
        "pixel_sha": _digest(array),
        "mask_sha": _digest(np.packbits(mask)) + f"-{width}x{height}",
        "mask_fraction": round(float(mask.mean()), 5),
        "mask_empty": not bool(mask.any()),
        "phash": str(imagehash.phash(thumb)),
        "dhash": str(imagehash.dhash(thumb)),
    }
    features.update(colour_stats(np.ascontiguousarray(array[::step, ::step])))
    return features


def _digest(array: np.ndarray) -> str:
    hasher = hashlib.sha256(np.ascontiguousarray(array).tobytes())
    hasher.update(repr(array.shape).encode())
    return hasher.hexdigest()[:32]


def colour_stats(rgb: np.ndarray) -> dict:
    """HSV shares, hue families and flat-colour shares of an (h, w, 3) uint8 view."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))  # (h, w, 3), all 0..255
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = (sat >= _SAT_S) & (val >= _SAT_V)  # (h, w)
    vivid = (sat >= _VIVID_S) & (val >= _VIVID_V)
    green = coloured & (hue >= _GREEN_HUE[0]) & (hue < _GREEN_HUE[1])
    flat = _flat_map(rgb)  # (h, w) bool
    n_coloured = int(coloured.sum())
    stats = {
        "coloured_share": float(coloured.mean()),
        "vivid_share": float(vivid.mean()),
        "green_share": float(green.mean()),
        "flat_coloured_share": float(flat[coloured].mean()) if n_coloured else 0.0,
        "hue_families": _hue_families(hue[coloured]),
        "palette_share": _palette_share(rgb[coloured]) if n_coloured else 0.0,
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}


def _flat_map(rgb: np.ndarray) -> np.ndarray:
    """True where a pixel equals its right and down neighbours within _FLAT_STEP (all channels)."""
    signed = rgb.astype(np.int16)
    flat = np.zeros(rgb.shape[:2], dtype=bool)
    right = np.abs(signed[:-1, 1:] - signed[:-1, :-1]).max(axis=-1)  # (h-1, w-1)
    down = np.abs(signed[1:, :-1] - signed[:-1, :-1]).max(axis=-1)
    flat[:-1, :-1] = (right <= _FLAT_STEP) & (down <= _FLAT_STEP)
    return flat


def _hue_families(hues: np.ndarray) -> int:
    """How many 30-degree hue bins hold >= 5% of the coloured pixels (H&E: 1-3)."""
    if hues.size == 0:
        return 0
    counts = np.bincount((hues.astype(np.int32) * 12) // 256, minlength=12)
    return int((counts >= 0.05 * hues.size).sum())


def _palette_share(pixels: np.ndarray) -> float:
    """Share of coloured pixels covered by the 8 most common 4-bit-per-channel colours."""
    quantised = pixels.astype(np.int32) >> 4  # (n, 3)
    codes = (quantised[:, 0] << 8) | (quantised[:, 1] << 4) | quantised[:, 2]
    counts = np.sort(np.bincount(codes, minlength=4096))[::-1]
    return float(counts[:8].sum() / max(1, codes.size))

"""Drawing for the synthetic dataset: H&E-like tissue, cartoons, green slime, near copies.

Vectorised numpy + PIL resizes only, so 1024 x 2048 pictures take a fraction of a second.
Exercise: `histosweep synth /tmp/synth --short-side 1024 --n-train 24`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Optical-density stain vectors (Ruifrok & Johnston): haematoxylin, eosin, DAB.
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], dtype=np.float32)
_DAB = np.array([0.27, 0.57, 0.78], dtype=np.float32)
# Per class, extra (haematoxylin, eosin, DAB) density inside the tumour + nuclei density.
# NOTE: a colour/density signal survives the 64 px resize, so a tiny CNN learns it in a few epochs.
_CLASS_STAIN = (
    (0.55, 0.00, 0.00, 0.85),  # Luminal A: dense dark-purple nuclei
    (0.00, 0.55, 0.00, 0.55),  # Luminal B: eosin-rich pink
    (0.10, 0.05, 0.60, 0.55),  # HER2(+): brown membrane-like tint
    (-0.05, -0.20, 0.00, 0.25),  # Triple negative: pale, sparse
)


def field(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """(H, W) float32 smooth noise in ~[0, 1] with features about `scale` px wide."""
    cells_y = max(2, round(height / scale)) + 1
    cells_x = max(2, round(width / scale)) + 1
    grid = rng.random((cells_y, cells_x), dtype=np.float32)
    return np.asarray(
        Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    )


def picture_size(rng: np.random.Generator, short_side: int) -> tuple[int, int]:
    """(height, width): short side fixed, long side up to 2x, either orientation."""
    long_side = int(short_side * rng.uniform(1.0, 2.0))
    return (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)


def tissue(
    rng: np.random.Generator, height: int, width: int, class_id: int, signal: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 H&E-like picture and its (H, W) bool tumour mask carrying the class signal.

    signal scales the class's stain and nuclei-density offsets (1: the default, easy to learn;
    smaller: classes overlap under the stain jitter, so trials differ).
    """
    short = min(height, width)
    tissue_area = field(rng, height, width, short / 2.5) > rng.uniform(0.15, 0.35)  # (H, W)
    mask = _tumour_mask(rng, height, width, short)
    nuclei = field(rng, height, width, max(2.0, short / 60)) > 0.62  # (H, W) spots
    od_h = 0.12 + 0.45 * nuclei * rng.uniform(0.8, 1.2)
    od_e = 0.25 + 0.35 * field(rng, height, width, short / 12)
    od_d = np.zeros_like(od_e)
    extra_h, extra_e, extra_d, density = (signal * v for v in _CLASS_STAIN[class_id])
    density += (1.0 - signal) * 0.55  # towards the classes' common density
    tumour_nuclei = field(rng, height, width, max(2.0, short / 40)) > (1.0 - density * 0.6)
    od_h = np.where(mask, od_h + extra_h + 0.5 * tumour_nuclei, od_h)
    od_e = np.where(mask, od_e + extra_e, od_e)
    od_d = np.where(mask, extra_d * (0.6 + 0.4 * field(rng, height, width, short / 20)), od_d)
    scale = np.where(tissue_area | mask, 1.0, 0.04).astype(np.float32)  # near-white glass outside
    rgb = _stain(rng, od_h * scale, od_e * scale, od_d * scale)
    return rgb, mask


# signal_kind = "detail": per class, the radius (px) of the tumour nuclei, their number set so every
# class stains the same share of the tumour (NUCLEI_COVER): the mean colour, all a strong
# downsampling keeps, is the same, and the class is in nucleus size and density at native scale.
# NOTE: a 64 px picture still keeps a faint texture cue (bigger nuclei: blotchier), see docs/performance.md (input modes).
NUCLEUS_RADIUS = (1, 2, 3, 4)
NUCLEI_COVER = 0.3


def tissue_detail(
    rng: np.random.Generator, height: int, width: int, class_id: int, signal: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Like `tissue`, but the class is only in the tumour nuclei's size and density.

    signal: the chance a picture shows its class's nuclei (else a random class's).
    """
    short = min(height, width)
    tissue_area = field(rng, height, width, short / 2.5) > rng.uniform(0.15, 0.35)  # (H, W)
    mask = _tumour_mask(rng, height, width, short)
    nuclei = field(rng, height, width, max(2.0, short / 60)) > 0.62
    shown = class_id if rng.random() < signal else int(rng.integers(len(NUCLEUS_RADIUS)))
    spots = nuclei_spots(rng, height, width, shown)  # (H, W) bool
    od_h = np.where(mask, 0.12 + 0.8 * spots, 0.12 + 0.45 * nuclei * rng.uniform(0.8, 1.2))
    od_e = 0.25 + 0.35 * field(rng, height, width, short / 12)
    scale = np.where(tissue_area | mask, 1.0, 0.04).astype(np.float32)  # near-white glass outside
    rgb = _stain(rng, od_h * scale, od_e * scale, np.zeros_like(od_e))
    return rgb, mask


def nucleus_pattern(class_id: int) -> list[tuple[int, int]]:
    """Pixel offsets of one class's nucleus: a solid disc of its radius."""
    radius = NUCLEUS_RADIUS[class_id]
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dy * dy + dx * dx <= radius * radius]


def nuclei_spots(rng, height: int, width: int, class_id: int) -> np.ndarray:
    """(H, W) bool nuclei of one class at Poisson-random centres, ~NUCLEI_COVER of the picture."""
    offsets, radius = nucleus_pattern(class_id), NUCLEUS_RADIUS[class_id]
    rate = -np.log(1.0 - NUCLEI_COVER) / len(offsets)  # Boolean model: 1 - exp(-rate * area)
    centres = rng.random((height, width)) < rate
    out = np.zeros((height + 2 * radius, width + 2 * radius), bool)
    for dy, dx in offsets:  # <= 49 shifted ORs: no per-pixel Python loop
        out[radius + dy : radius + dy + height, radius + dx : radius + dx + width] |= centres
    return out[radius : radius + height, radius : radius + width]


def _tumour_mask(rng, height, width, short) -> np.ndarray:
    blob = field(rng, height, width, short / 3)
    target = rng.uniform(0.08, 0.3)  # share of the picture that is tumour
    threshold = np.quantile(blob[::4, ::4], 1.0 - target)
    mask = blob > threshold
    return mask if mask.any() else _ellipse(height, width, 0.5, 0.5, 0.2, 0.2)


def _stain(rng, od_h: np.ndarray, od_e: np.ndarray, od_d: np.ndarray) -> np.ndarray:
    """Beer-Lambert mix with per-picture stain variation and sensor noise -> (H, W, 3) uint8."""

    def jitter(vector: np.ndarray) -> np.ndarray:  # stain batches differ a little
        return np.clip(vector + rng.normal(0, 0.06, 3), 0.02, None).astype(np.float32)

    strength = np.float32(rng.uniform(0.75, 1.25))
    od = (
        od_h[..., None] * jitter(_HAEMATOXYLIN)
        + od_e[..., None] * jitter(_EOSIN)
        + od_d[..., None] * jitter(_DAB)
    ) * strength  # (H, W, 3)
    rgb = 255.0 * np.exp(-od * 1.25)
    rgb += 4.0 * rng.standard_normal(
        size=rgb.shape, dtype=np.float32
    )  # texture: tissue is never flat
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _ellipse(height, width, cy, cx, ry, rx) -> np.ndarray:
    """(H, W) bool ellipse; centre and radii as fractions of the picture."""
    yy = (np.arange(height, dtype=np.float32)[:, None] / height - cy) / ry
    xx = (np.arange(width, dtype=np.float32)[None, :] / width - cx) / rx
    return yy * yy + xx * xx <= 1.0


def cartoon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 'ogre' cartoon: flat saturated colours, black outlines, no texture."""

    def vivid() -> np.ndarray:
        return rng.integers(0, 256, 3).astype(np.uint8) | np.uint8(0x30)

    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = (70, 150, 235) if rng.random() < 0.5 else vivid()  # sky
    rgb[int(height * rng.uniform(0.6, 0.8)) :] = (90, 170, 40)  # meadow
    cx = rng.uniform(0.35, 0.65)
    head = _ellipse(height, width, 0.45, cx, 0.25, 0.18)
    body = _ellipse(height, width, 0.9, cx, 0.25, 0.28)
    rgb[body] = vivid()
    for side in (-1, 1):  # ears
        rgb[_ellipse(height, width, 0.3, cx + side * 0.18, 0.05, 0.03)] = (120, 190, 50)
    outline = _ellipse(height, width, 0.45, cx, 0.26, 0.19) & ~head
    rgb[outline] = (15, 15, 15)
    rgb[head] = (120, 190, 50)  # ogre green
    for side in (-1, 1):  # eyes
        rgb[_ellipse(height, width, 0.4, cx + side * 0.07, 0.04, 0.03)] = (250, 250, 250)
        rgb[_ellipse(height, width, 0.4, cx + side * 0.07, 0.015, 0.012)] = (10, 10, 10)
    rgb[_ellipse(height, width, 0.55, cx, 0.03, 0.08)] = (150, 40, 40)  # mouth
    return rgb


def stock_mask(height: int, width: int) -> np.ndarray:
    """The one identical mask the cartoon contaminants share."""
    return _ellipse(height, width, 0.5, 0.5, 0.3, 0.25)


def green_slime(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """A smeared copy: translucent green slime over ~20-35% of the picture."""
    height, width = rgb.shape[:2]
    blob = field(rng, height, width, min(height, width) / 3)
    cover = blob > np.quantile(blob[::4, ::4], 1.0 - rng.uniform(0.2, 0.35))  # (H, W)
    shade = 0.75 + 0.5 * field(rng, height, width, min(height, width) / 25)  # glossy streaks
    slime = np.stack([60 * shade, 185 * shade, 55 * shade], axis=-1)  # (H, W, 3)
    alpha = 0.85
    out = rgb.astype(np.float32)
    out[cover] = (1 - alpha) * out[cover] + alpha * slime[cover]
    return np.clip(out, 0, 255).astype(np.uint8)


def near_copy(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """A near duplicate: slightly brighter, re-noised (a re-scan or re-export of the same slide)."""
    out = rgb.astype(np.float32) * np.float32(rng.uniform(1.02, 1.05))
    out += 2.0 * rng.standard_normal(size=rgb.shape, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)

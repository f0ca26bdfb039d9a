"""The built-in input modes: `whole` (the picture resized), `mask_crop` (the mask's bounding
box) and `tiles` (native-resolution tile bags), each a registered data.InputSpec.

Exercise: `histosweep prepare DATA --space FILE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from histosweep.constants import TILE_POOLS
from histosweep.data._arrays import TileArrays
from histosweep.data._dataset import DataError
from histosweep.data._decode import RESIZE_MODES, full_if_empty, resize_pair
from histosweep.data._spec import InputSpec, PictureSpec, register_input
from histosweep.data._tiles import FALLBACK_MASK, cut_crop, cut_tiles


@register_input
@dataclass(frozen=True)
class WholeSpec(PictureSpec):
    """whole: the picture resized to `resolution` px (an empty mask becomes the whole image)."""

    input_mode = "whole"
    fields = ("resolution", "resize_mode")
    audit_features = True  # NOTE: prepare's whole-picture pass also fills in the audit's features

    resolution: int
    mode: str  # resize mode (stretch | pad | reflect)

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise DataError(f"unknown resize mode {self.mode!r}; use one of {', '.join(RESIZE_MODES)}")
        if self.resolution < 8:
            raise DataError(f"resolution {self.resolution} is too small; use 32 or more")

    @property
    def key(self) -> str:
        return f"{self.resolution}-{self.mode}"

    @property
    def label(self) -> str:
        return f"{self.resolution} px/{self.mode}"

    def describe(self, params) -> str:
        return f"{self.resolution} {self.mode}"

    def cut(self, image: Image.Image, mask: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        full, _ = full_if_empty(mask)  # empty masks are listed in index.json, not as fallbacks
        img, msk = resize_pair(image, full, self.resolution, self.mode)
        return {"images": img, "masks": msk}, FALLBACK_MASK

    def manifest(self) -> dict:
        return {"mode": self.input_mode, "key": self.key}

    def index(self, head, sample_ids, fallbacks, empty_masks) -> dict:
        return {**head, "resolution": self.resolution, "mode": self.mode,
                "sample_ids": sample_ids, "empty_masks": empty_masks}

    def missing(self, path, root) -> str:
        return (f"{path}: no cache at {self.key}; run `histosweep prepare {root} "
                f"--resolutions {self.resolution} --modes {self.mode}`")


@register_input
@dataclass(frozen=True)
class CropSpec(PictureSpec):
    """mask_crop: the mask's bounding box grown by `margin` (a fraction of its sides), resized."""

    input_mode = "mask_crop"
    fields = ("resolution", "resize_mode", "crop_margin")

    resolution: int
    mode: str  # resize mode of the crop (stretch | pad | reflect)
    margin: float

    @classmethod
    def checks(cls, cfg) -> list[tuple[bool, str]]:
        return [(0 <= cfg.crop_margin <= 1,
                 "crop_margin must be in [0, 1] (a fraction of the box's sides)")]

    @property
    def key(self) -> str:
        return f"crop-{self.resolution}-{self.mode}-m{self.margin:g}"

    def cut(self, image: Image.Image, mask: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        """-> ({"images": (R, R, 3), "masks": (R, R)}, fallback)."""
        return cut_crop(image, mask, self.resolution, self.mode, self.margin)


@register_input
@dataclass(frozen=True)
class TileSpec(InputSpec):
    """tiles: up to `count` tiles of `size` px cut at `scale` x native resolution."""

    input_mode = "tiles"
    fields = ("tile_size", "tile_scale", "tiles_per_image", "tile_min_mask")
    layout = "bags"

    size: int
    scale: float
    count: int
    min_mask: float

    @classmethod
    def checks(cls, cfg) -> list[tuple[bool, str]]:
        return [
            (16 <= cfg.tile_size <= 2048, "tile_size must be in [16, 2048] px"),
            (0 < cfg.tile_scale <= 1, "tile_scale must be in (0, 1] (1 = native resolution)"),
            (1 <= cfg.tiles_per_image <= 256, "tiles_per_image must be in [1, 256]"),
            (0 <= cfg.tile_min_mask <= 1, "tile_min_mask must be in [0, 1]"),
            (0 <= cfg.tile_bag <= 256, "tile_bag must be in [0, 256] (0 = every cached tile)"),
            (cfg.tile_pool in TILE_POOLS, f"tile_pool must be one of {TILE_POOLS}"),
        ]

    @property
    def key(self) -> str:
        return f"tiles-{self.size}-s{self.scale:g}-k{self.count}-m{self.min_mask:g}"

    def describe(self, params) -> str:
        return f"{self.key}, {params.tile_pool} pool"

    def shapes(self, n: int) -> dict[str, tuple[tuple[int, ...], type]]:
        t, k = self.size, self.count
        return {
            "images": ((n, k, t, t, 3), np.uint8),
            "masks": ((n, k, t, t), np.uint8),
            "counts": ((n,), np.int32),
        }

    def cut(self, image: Image.Image, mask: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        """-> ({"images": (K, T, T, 3), "masks": (K, T, T), "counts": ()}, fallback)."""
        return cut_tiles(image, mask, self.size, self.scale, self.count, self.min_mask)

    def opened(self, arrays, index, path) -> TileArrays:
        counts = np.asarray(arrays["counts"])  # small: read into memory
        return TileArrays(arrays["images"], arrays["masks"], counts, list(index["sample_ids"]),
                          self, dict(index.get("fallbacks", {})), path)

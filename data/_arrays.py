"""The opened caches of the model inputs: CachedArrays (pictures) and TileArrays (tile bags),
memory-mapped, each naming the data.InputSpec it holds. Exercise: `pytest tests/data/test_data_tiles.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class _Rows:
    sample_ids: list[str]

    def indices_of(self, sample_ids: list[str]) -> np.ndarray:
        """Row numbers of the given sample ids (int64), for slicing a subset."""
        position = {sid: i for i, sid in enumerate(self.sample_ids)}
        return np.array([position[sid] for sid in sample_ids], dtype=np.int64)


@dataclass
class CachedArrays(_Rows):
    """A pictures cache (whole, mask_crop, ...): one square view per image."""

    images: np.ndarray  # (N, R, R, 3) uint8, memory-mapped
    masks: np.ndarray  # (N, R, R) uint8 in {0, 1}, memory-mapped
    sample_ids: list[str]
    resolution: int
    mode: str
    path: Path | None = None  # the cache folder (its name is spec.key)
    input_mode: str = "whole"  # the InputSpec's input_mode
    fallbacks: dict[str, str] = field(default_factory=dict)  # sample id -> fallback (not "mask")
    spec: Any = None  # the data.InputSpec read (data.open_inputs / open_cache set it)
    counts: ClassVar[None] = None  # pictures: one view per image, no bag counts


@dataclass
class TileArrays(_Rows):
    """A tiles cache: padded bags of tiles per image, memory-mapped."""

    images: np.ndarray  # (N, K, T, T, 3) uint8
    masks: np.ndarray  # (N, K, T, T) uint8 in {0, 1}
    counts: np.ndarray  # (N,) int32 valid tiles per image, 1..K; tiles after them are zeros
    sample_ids: list[str]
    spec: Any  # data.TileSpec
    fallbacks: dict[str, str] = field(default_factory=dict)  # sample id -> fallback (not "mask")
    path: Path | None = None
    input_mode: str = "tiles"

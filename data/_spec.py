"""InputSpec: one object per input mode that everyone asks (cache key, the TrainConfig fields it
reads, how one image is cut, its arrays, its index.json and manifest entry), and the registry of
modes (TrainConfig.input_mode -> spec class). Exercise: `pytest tests/data/test_input_registry.py`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from histosweep.data._arrays import CachedArrays, TileArrays
from histosweep.data._dataset import DataError

_REGISTRY: dict[str, type[InputSpec]] = {}
_CASTS = {"int": int, "float": float, "str": str, "bool": bool}


class InputSpec:
    """What one input mode caches and feeds the model. Subclasses are frozen dataclasses whose
    fields, in order, hold the TrainConfig `fields` that change the cached pixels, so the spec
    is its own cache key; `register_input(cls)` makes TrainConfig(input_mode=cls.input_mode) valid.

    layout "pictures": arrays images (N, R, R, 3) + masks (N, R, R) (the dual-branch network);
    "bags": images (N, K, T, T, 3) + masks (N, K, T, T) + counts (N,) (the tile network).

    Example (a centre crop; tests/data/test_input_registry.py runs it through a whole study)::

        @data.register_input
        @dataclass(frozen=True)
        class CentreSpec(data.PictureSpec):
            input_mode = "centre_crop"
            fields = ("resolution", "resize_mode")
            resolution: int
            mode: str

            @property
            def key(self):
                return f"centre-{self.resolution}-{self.mode}"

            def cut(self, image, mask):
                h, w = mask.shape
                box = (w // 4, h // 4, w - w // 4, h - h // 4)
                img, msk = data.resize_pair(image.crop(box), mask[box[1]:box[3], box[0]:box[2]],
                                            self.resolution, self.mode)
                return {"images": img, "masks": msk}, data.FALLBACK_MASK
    """

    input_mode: ClassVar[str]  # the TrainConfig.input_mode value
    fields: ClassVar[tuple[str, ...]]  # TrainConfig fields, in the order of the dataclass fields
    layout: ClassVar[str] = "pictures"
    audit_features: ClassVar[bool] = False  # building it also fills in the audit's features

    @classmethod
    def from_config(cls, params) -> InputSpec:
        """The spec a TrainConfig (or anything with its field names) reads."""
        casts = [f.type if isinstance(f.type, type) else _CASTS[f.type] for f in dataclasses.fields(cls)]
        return cls(*(cast(getattr(params, name)) for cast, name in zip(casts, cls.fields, strict=True)))

    @classmethod
    def checks(cls, cfg) -> list[tuple[bool, str]]:
        """(ok, message) per TrainConfig field of this mode; run for every config (every mode)."""
        return []

    @property
    def key(self) -> str:
        """The cache folder name (CACHE/<fingerprint[:16]>/<key>)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How errors name this input."""
        return f"{self.input_mode} ({self.key})"

    def describe(self, params) -> str:
        """The report's input column for a config reading this spec."""
        return self.key

    def values(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shapes(self, n: int) -> dict[str, tuple[tuple[int, ...], type]]:
        """{array name: (shape, dtype)} of the cache of n images."""
        raise NotImplementedError

    def cut(self, image: Image.Image, mask: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        """One decoded RGB image + its (H, W) bool mask -> ({name: one row of shapes()}, fallback)."""
        raise NotImplementedError

    def manifest(self) -> dict[str, Any]:
        """What a bundle records of this input."""
        return {"mode": self.input_mode, "key": self.key, "spec": self.values()}

    def index(self, head: dict, sample_ids: list[str], fallbacks: dict[str, str],
              empty_masks: list[str]) -> dict[str, Any]:
        """index.json of a built cache (head: version and fingerprint)."""
        return {**head, "key": self.key, "spec": {"kind": type(self).__name__, **self.values()},
                "sample_ids": sample_ids, "fallbacks": fallbacks,
                "fallback_counts": dict(sorted(Counter(fallbacks.values()).items()))}

    def opened(self, arrays: dict[str, np.ndarray], index: dict, path) -> CachedArrays | TileArrays:
        """The container of a read cache (arrays memory-mapped)."""
        raise NotImplementedError

    def missing(self, path, root) -> str:
        """The error when the cache was not built and may not be built now."""
        return (f"{path}: no {self.key} cache; run `histosweep prepare {root}` with this input, or "
                "let the worker build it")


class PictureSpec(InputSpec):
    """A mode with one square view per image: needs `resolution` and `mode` (resize mode) fields."""

    resolution: int
    mode: str

    def shapes(self, n: int) -> dict[str, tuple[tuple[int, ...], type]]:
        r = self.resolution
        return {"images": ((n, r, r, 3), np.uint8), "masks": ((n, r, r), np.uint8)}

    def opened(self, arrays, index, path) -> CachedArrays:
        return CachedArrays(arrays["images"], arrays["masks"], list(index["sample_ids"]),
                            self.resolution, self.mode, path, self.input_mode,
                            dict(index.get("fallbacks", {})), self)


def register_input(cls: type[InputSpec]) -> type[InputSpec]:
    """Add an input mode (usable as a class decorator); refuses a name already taken."""
    name = cls.input_mode
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise DataError(f"input_mode {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def unregister_input(name: str) -> None:
    """Remove an input mode added by register_input (tests, plugins being unloaded)."""
    _REGISTRY.pop(name, None)


def input_modes() -> tuple[str, ...]:
    """The registered input modes, in registration order."""
    return tuple(_REGISTRY)


def input_spec_class(mode: str) -> type[InputSpec]:
    if mode not in _REGISTRY:
        raise DataError(f"unknown input_mode {mode!r}; use one of {', '.join(_REGISTRY)}")
    return _REGISTRY[mode]


def input_checks(cfg) -> list[tuple[bool, str]]:
    """TrainConfig's input checks: a registered input_mode, then every mode's own fields."""
    checks = [(cfg.input_mode in _REGISTRY, f"input_mode must be one of {input_modes()}")]
    for cls in _REGISTRY.values():
        checks += cls.checks(cfg)
    return checks

"""The model input of a training config, from the per-machine cache: the data.InputSpec of its
input_mode (registered in data._spec; built-ins in data._modes), opened or built on demand.

CACHE/<fingerprint[:16]>/<spec key>/{images.npy, masks.npy[, counts.npy], index.json}, built
whole-or-absent by data._build from one decode per image. Exercise: `histosweep prepare DATA --space FILE`.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from histosweep.data import _modes  # noqa: F401 - registers the built-in input modes
from histosweep.data._arrays import CachedArrays
from histosweep.data._build import build_specs, read_spec, spec_present
from histosweep.data._cache import dataset_cache_dir
from histosweep.data._dataset import DataError, Dataset
from histosweep.data._modes import WholeSpec
from histosweep.data._spec import InputSpec, input_spec_class


def input_target(params) -> InputSpec:
    """The InputSpec a TrainConfig-like object reads (its input_mode's spec, from its fields)."""
    return input_spec_class(str(params.input_mode)).from_config(params)


def as_spec(target) -> InputSpec:
    """A spec as it is; a (resolution, resize_mode) pair -> the whole-picture spec."""
    return WholeSpec(int(target[0]), str(target[1])) if isinstance(target, tuple) else target


def input_key(target) -> str:
    """The cache folder name of a target: "384-stretch", "crop-384-stretch-m0.1", "tiles-..."."""
    return as_spec(target).key


def input_manifest(params) -> dict:
    """What a bundle records of a config's input: mode and cache key (and the spec's values)."""
    return input_target(params).manifest()


def allocate_inputs(targets, n: int) -> dict:
    """In-memory arrays for n samples of every target: {spec: (images, masks[, counts])}."""
    specs = [as_spec(t) for t in targets]
    return {s: tuple(np.zeros(shape, dtype) for shape, dtype in s.shapes(n).values()) for s in specs}


def store_input(out: dict, position: int, target, cut) -> str:
    """Put one decoded sample's `cut` (decode_all's value for `target`) into `out`; -> its fallback."""
    arrays, fallback = cut
    for array, value in zip(out[as_spec(target)], arrays.values(), strict=True):
        array[position] = value
    return fallback


def fallback_summary(cache) -> dict[str, int]:
    """How many images needed each fallback ({} for a whole-picture cache or when none did)."""
    return dict(sorted(Counter(cache.fallbacks.values()).items()))


def open_inputs(ds: Dataset, params, *, cache_dir=None, build: bool = True, workers=None,
                progress=True):
    """The cached model inputs `params` (a TrainConfig) reads, built on demand when build=True.

    pictures (whole, mask_crop) -> CachedArrays (N, R, R, 3) + (N, R, R); tiles -> TileArrays.
    """
    return open_target(ds, input_target(params), cache_dir=cache_dir, build=build,
                       workers=workers, progress=progress)


def input_present(ds: Dataset, target, *, cache_dir=None) -> bool:
    """Whether the cache of `target` was built (opening it checks it is current)."""
    return spec_present(dataset_cache_dir(ds, cache_dir), as_spec(target))


def open_target(ds: Dataset, target, *, cache_dir=None, build: bool = True, workers=None,
                progress=True):
    """open_inputs for a target of data.input_target (an InputSpec)."""
    spec, base = as_spec(target), dataset_cache_dir(ds, cache_dir)
    if not spec_present(base, spec):
        if not build:
            raise DataError(spec.missing(base / spec.key, ds.root))
        build_specs(ds, [spec], cache_dir=cache_dir, workers=workers, progress=progress)
    return read_spec(ds, base, spec)


def build_inputs(ds: Dataset, targets, *, cache_dir=None, workers=None, progress=True) -> None:
    """Build every missing target (whole pictures, crops, tiles, ...) in ONE decode of each image.

    With whole-picture targets the audit features are filled in too, as data.build_cache does.
    """
    build_specs(ds, [as_spec(t) for t in targets], cache_dir=cache_dir, workers=workers,
                progress=progress)


# --- whole pictures by (resolution, mode) ---------------------------------------------------
def build_cache(ds: Dataset, *, resolutions, modes=("stretch",), cache_dir=None, workers=None,
                progress=True) -> None:
    """Decode each sample once; write every missing (resolution, mode) and the audit features."""
    specs = [WholeSpec(int(r), m) for m in modes for r in resolutions]
    build_specs(ds, specs, cache_dir=cache_dir, workers=workers, progress=progress, features=True)


def cache_present(ds: Dataset, resolution: int, mode: str = "stretch", *, cache_dir=None) -> bool:
    """Whether the cache of `ds` at (resolution, mode) was built (open_cache checks it is current)."""
    return input_present(ds, (resolution, mode), cache_dir=cache_dir)


def open_cache(ds: Dataset, resolution: int, mode: str = "stretch", *, cache_dir=None,
               build: bool = True, progress=True) -> CachedArrays:
    """Memory-map the cache of `ds` at (resolution, mode); build it first when missing and build=True."""
    return open_target(ds, (resolution, mode), cache_dir=cache_dir, build=build, progress=progress)

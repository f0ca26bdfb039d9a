"""The model input of a training config, from the per-machine cache: `whole` (today's resized
picture), `mask_crop` (the mask's bounding box) or `tiles` (native-resolution tile bags).

CACHE/<fingerprint[:16]>/<spec key>/{images.npy, masks.npy[, counts.npy], index.json}, built
whole-or-absent (temp folder + rename) from one decode per image. Exercise: `histosweep prepare DATA --space FILE`.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosweep.constants import INPUT_MODES
from histosweep.data._cache import (
    CACHE_VERSION,
    CachedArrays,
    _EntryWriter,
    _missing_targets,
    _open_npy,
    _sweep_stale_temps,
    _unwritable,
    dataset_cache_dir,
    note_empty_masks,
    open_cache,
    read_features,
    write_features,
)
from histosweep.data._dataset import DataError, Dataset
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._pool import decode_all
from histosweep.data._tiles import FALLBACK_MASK, CropSpec, TileSpec
from histosweep.storage import atomic_dir


@dataclass
class TileArrays:
    """A tiles cache: padded bags of tiles per image, memory-mapped."""

    images: np.ndarray  # (N, K, T, T, 3) uint8
    masks: np.ndarray  # (N, K, T, T) uint8 in {0, 1}
    counts: np.ndarray  # (N,) int32 valid tiles per image, 1..K; tiles after them are zeros
    sample_ids: list[str]
    spec: TileSpec
    fallbacks: dict[str, str] = field(default_factory=dict)  # sample id -> fallback (not "mask")
    path: Path | None = None
    input_mode: str = "tiles"

    def indices_of(self, sample_ids: list[str]) -> np.ndarray:
        position = {sid: i for i, sid in enumerate(self.sample_ids)}
        return np.array([position[sid] for sid in sample_ids], dtype=np.int64)


def input_target(params):
    """The cache target of a TrainConfig-like object: (resolution, resize_mode), CropSpec or TileSpec."""
    mode = getattr(params, "input_mode", "whole")
    if mode == "whole":
        return (int(params.resolution), str(params.resize_mode))
    if mode == "mask_crop":
        return CropSpec(int(params.resolution), str(params.resize_mode), float(params.crop_margin))
    if mode == "tiles":
        return TileSpec(
            int(params.tile_size),
            float(params.tile_scale),
            int(params.tiles_per_image),
            float(params.tile_min_mask),
        )
    raise DataError(f"unknown input_mode {mode!r}; use one of {', '.join(INPUT_MODES)}")


def input_key(target) -> str:
    """The cache folder name of a target: "384-stretch", "crop-384-stretch-m0.1", "tiles-..."."""
    return f"{target[0]}-{target[1]}" if isinstance(target, tuple) else target.key


def input_manifest(params) -> dict:
    """What a bundle records of a config's input: mode and cache key (the tiling, for tiles)."""
    target = input_target(params)
    entry = {"mode": getattr(params, "input_mode", "whole"), "key": input_key(target)}
    if not isinstance(target, tuple):
        entry["spec"] = dict(target.__dict__)
    return entry


def allocate_inputs(targets, n: int) -> dict:
    """In-memory arrays for n samples of every target: {target: (images, masks[, counts])}."""
    out = {}
    for target in targets:
        if isinstance(target, tuple):
            r = target[0]
            out[target] = (np.zeros((n, r, r, 3), np.uint8), np.zeros((n, r, r), np.uint8))
        else:
            out[target] = tuple(np.zeros(shape, dtype) for shape, dtype in target.shapes(n).values())
    return out


def store_input(out: dict, position: int, target, cut) -> str:
    """Put one decoded sample's `cut` (decode_all's value for `target`) into `out`; -> its fallback."""
    if isinstance(target, tuple):
        out[target][0][position], out[target][1][position] = cut
        return FALLBACK_MASK
    arrays, fallback = cut
    for array, value in zip(out[target], arrays.values(), strict=True):
        array[position] = value
    return fallback


def fallback_summary(cache) -> dict[str, int]:
    """How many images needed each fallback ({} for a whole-picture cache or when none did)."""
    return dict(sorted(Counter(getattr(cache, "fallbacks", {}).values()).items()))


def open_inputs(
    ds: Dataset, params, *, cache_dir=None, build: bool = True, workers=None, progress=True
):
    """The cached model inputs `params` (a TrainConfig) reads, built on demand when build=True.

    whole / mask_crop -> CachedArrays (N, R, R, 3) + (N, R, R); tiles -> TileArrays.
    """
    return open_target(ds, input_target(params), cache_dir=cache_dir, build=build,
                       workers=workers, progress=progress)


def input_present(ds: Dataset, target, *, cache_dir=None) -> bool:
    """Whether the cache of `target` was built (opening it checks it is current)."""
    return (dataset_cache_dir(ds, cache_dir) / input_key(target) / "index.json").is_file()


def open_target(ds: Dataset, target, *, cache_dir=None, build: bool = True, workers=None,
                progress=True):
    """open_inputs for a target of data.input_target."""
    if isinstance(target, tuple):
        if build:  # NOTE: through build_inputs so `workers` reaches the decode pool
            build_inputs(ds, [target], cache_dir=cache_dir, workers=workers, progress=progress)
        return open_cache(ds, *target, cache_dir=cache_dir, build=False, progress=progress)
    path = dataset_cache_dir(ds, cache_dir) / target.key
    if not (path / "index.json").is_file():
        if not build:
            raise DataError(f"{path}: no {target.key} cache; run `histosweep prepare {ds.root}` "
                            f"with this input, or let the worker build it")
        build_inputs(ds, [target], cache_dir=cache_dir, workers=workers, progress=progress)
    return _read_entry(ds, path, target)


def _read_entry(ds: Dataset, path: Path, target):
    index = json.loads((path / "index.json").read_text())
    if index.get("version") != CACHE_VERSION or index.get("sample_ids") != ds.sample_ids():
        raise DataError(
            f"{path}: stale or foreign cache; delete this folder and rerun `histosweep prepare`"
        )
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in target.shapes(0)}
    fallbacks = dict(index.get("fallbacks", {}))
    if isinstance(target, TileSpec):
        counts = np.asarray(arrays["counts"])  # small: read into memory
        return TileArrays(arrays["images"], arrays["masks"], counts, list(index["sample_ids"]),
                          target, fallbacks, path)
    cache = CachedArrays(arrays["images"], arrays["masks"], list(index["sample_ids"]),
                         target.resolution, target.mode, path, input_mode="mask_crop")
    cache.fallbacks = fallbacks
    return cache


def build_inputs(ds: Dataset, targets, *, cache_dir=None, workers=None, progress=True) -> None:
    """Build every missing target (whole pictures, crops, tiles) in ONE decode of each image.

    With whole-picture targets the audit features are filled in too, as data.build_cache does.
    """
    targets = list(dict.fromkeys(targets))
    for _ in range(3):
        try:
            return _build(ds, targets, cache_dir, workers, progress)
        except _LostRace:
            continue  # NOTE: another process renamed the same entry first; build what is missing
    raise DataError(f"{dataset_cache_dir(ds, cache_dir)}: other processes keep rebuilding this "
                    "cache at the same time; rerun")


class _LostRace(Exception):
    pass


def _build(ds: Dataset, targets, cache_dir, workers, progress) -> None:
    base = dataset_cache_dir(ds, cache_dir)
    whole = [t for t in targets if isinstance(t, tuple)]
    checked = _missing_targets(base, [r for r, _ in whole], sorted({m for _, m in whole}))
    missing = [t for t in checked if t in whole] + [
        t for t in targets if not isinstance(t, tuple) and not input_present(ds, t, cache_dir=cache_dir)
    ]
    features = read_features(base)
    need_features = bool(whole) and any(s.sample_index not in features for s in ds.samples)
    if not missing and not need_features:
        return
    _sweep_stale_temps(base)
    try:
        with contextlib.ExitStack() as stack:  # every temp folder renamed at once, or none
            writers = {t: _writer(stack, base, len(ds.samples), t) for t in missing}
            desc = "cache " + ",".join(input_key(t) for t in missing) if missing else "audit features"
            empty = []
            for position, arrays, feats, mask_empty in decode_all(
                ds.samples, missing, need_features, workers=workers, progress=progress, desc=desc
            ):
                for target, writer in writers.items():
                    writer.put(position, *arrays[target])
                if feats is not None:
                    features[ds.samples[position].sample_index] = feats
                if mask_empty:
                    empty.append(ds.samples[position].sample_index)
            for target, writer in writers.items():
                if isinstance(target, tuple):
                    writer.finish(ds, *target, sorted(empty))
                else:
                    writer.finish(ds)
        if need_features:
            write_features(base, features)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _LostRace from exc
        raise _unwritable(base, exc) from exc
    note_empty_masks(ds, sorted(empty))


def _writer(stack: contextlib.ExitStack, base: Path, n: int, target):
    if isinstance(target, tuple):
        return _EntryWriter(stack, base / input_key(target), n, target[0])
    return _SpecWriter(stack, base / target.key, n, target)


class _SpecWriter:
    """Fills a spec's memory-mapped arrays in a temp folder renamed on success."""

    def __init__(self, stack: contextlib.ExitStack, target: Path, n: int, spec) -> None:
        self.spec = spec
        self.tmp = stack.enter_context(atomic_dir(target, replace=True))
        self.arrays = {
            name: _open_npy(self.tmp / f"{name}.npy", shape) if dtype is np.uint8
            else np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            for name, (shape, dtype) in spec.shapes(n).items()
        }
        self.fallbacks: dict[int, str] = {}

    def put(self, position: int, arrays: dict[str, np.ndarray], fallback: str) -> None:
        for name, value in arrays.items():
            self.arrays[name][position] = value
        if fallback != FALLBACK_MASK:
            self.fallbacks[position] = fallback

    def finish(self, ds: Dataset) -> None:
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        ids = ds.sample_ids()
        fallbacks = {ids[p]: reason for p, reason in sorted(self.fallbacks.items())}
        index = {
            "version": CACHE_VERSION,
            "fingerprint": dataset_fingerprint(ds),
            "key": self.spec.key,
            "spec": {"kind": type(self.spec).__name__, **self.spec.__dict__},
            "sample_ids": ids,
            "fallbacks": fallbacks,
            "fallback_counts": dict(sorted(Counter(fallbacks.values()).items())),
        }
        (self.tmp / "index.json").write_text(json.dumps(index))

"""Per-resolution uint8 cache: every image + mask decoded once, resized for each (resolution, mode).

CACHE/<fingerprint[:16]>/<res>-<mode>/{images.npy, masks.npy, index.json}, built in a temp folder
then renamed, plus CACHE/<fingerprint[:16]>/features.json for the audit. Exercise: `histosweep prepare DATA`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosweep.constants import ENV_CACHE
from histosweep.data._dataset import DataError, Dataset
from histosweep.data._decode import RESIZE_MODES
from histosweep.data._features import FEATURES_VERSION
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._pool import decode_all
from histosweep.storage import atomic_dir, atomic_write_text

CACHE_VERSION = 1
FEATURES_FILE = "features.json"
_STALE_TEMP_S = 12 * 3600  # a temp folder this old belongs to a build that was killed


def default_cache_dir() -> Path:
    """$HISTOSWEEP_CACHE, else ~/.cache/histosweep."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "histosweep"


@dataclass
class CachedArrays:
    images: np.ndarray  # (N, R, R, 3) uint8, memory-mapped
    masks: np.ndarray  # (N, R, R) uint8 in {0, 1}, memory-mapped
    sample_ids: list[str]
    resolution: int
    mode: str
    path: Path | None = None  # the <res>-<mode> folder
    input_mode: str = "whole"  # whole | mask_crop (data.open_inputs)
    fallbacks: dict[str, str] = field(default_factory=dict)  # mask_crop: sample id -> fallback

    def indices_of(self, sample_ids: list[str]) -> np.ndarray:
        """Row numbers of the given sample ids (int64), for slicing a subset."""
        position = {sid: i for i, sid in enumerate(self.sample_ids)}
        return np.array([position[sid] for sid in sample_ids], dtype=np.int64)


def dataset_cache_dir(ds: Dataset, cache_dir=None) -> Path:
    """CACHE/<fingerprint[:16]>: everything cached for this exact dataset content."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / dataset_fingerprint(ds)[:16]


def entry_dir(ds: Dataset, resolution: int, mode: str, cache_dir=None) -> Path:
    return dataset_cache_dir(ds, cache_dir) / f"{int(resolution)}-{mode}"


def build_cache(
    ds: Dataset, *, resolutions, modes=("stretch",), cache_dir=None, workers=None, progress=True
) -> None:
    """Decode each sample once; write every missing (resolution, mode) and the audit features."""
    for _ in range(3):
        try:
            return _build(ds, resolutions, modes, cache_dir, workers, progress)
        except _LostRace:
            # NOTE: another process renamed the same entry in between our two renames; its copy
            # is as good as ours, so build only what is still missing.
            continue
    base = dataset_cache_dir(ds, cache_dir)
    raise DataError(f"{base}: other processes keep rebuilding this cache at the same time; rerun")


class _LostRace(Exception):
    pass


def _build(ds: Dataset, resolutions, modes, cache_dir, workers, progress) -> None:
    base = dataset_cache_dir(ds, cache_dir)
    targets = _missing_targets(base, resolutions, modes)
    features = read_features(base)
    need_features = any(s.sample_index not in features for s in ds.samples)
    if not targets and not need_features:
        return

    _sweep_stale_temps(base)
    try:
        with contextlib.ExitStack() as stack:  # every temp folder renamed at once, or none
            writers = {
                t: _EntryWriter(stack, base / f"{t[0]}-{t[1]}", len(ds.samples), t[0])
                for t in targets
            }
            results = decode_all(
                ds.samples,
                targets,
                need_features,
                workers=workers,
                progress=progress,
                desc=_desc(targets),
            )
            empty = _consume(ds, results, writers, features)
            for (resolution, mode), writer in writers.items():
                writer.finish(ds, resolution, mode, empty)
        if need_features:
            write_features(base, features)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # a concurrent rename got there first
            raise _LostRace from exc
        raise _unwritable(base, exc) from exc
    note_empty_masks(ds, empty)


def _consume(ds: Dataset, results, writers: dict, features: dict) -> list[str]:
    """Write each decoded sample into every target; collect features; return empty-mask ids."""
    empty = []
    for position, arrays, feats, mask_empty in results:
        sample_index = ds.samples[position].sample_index
        for target, writer in writers.items():
            writer.put(position, *arrays[target])
        if feats is not None:
            features[sample_index] = feats
        if mask_empty:
            empty.append(sample_index)
    return sorted(empty)


def _missing_targets(base: Path, resolutions, modes) -> list[tuple[int, str]]:
    targets = []
    for mode in modes:
        if mode not in RESIZE_MODES:
            raise DataError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
        for resolution in resolutions:
            if int(resolution) < 8:
                raise DataError(f"resolution {resolution} is too small; use 32 or more")
            if not (base / f"{int(resolution)}-{mode}" / "index.json").is_file():
                targets.append((int(resolution), mode))
    return list(dict.fromkeys(targets))


def _sweep_stale_temps(base: Path) -> None:
    """Remove temp folders a killed build left (SIGKILL skips cleanup); live builds are younger."""
    if not base.is_dir():
        return
    for tmp in base.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(tmp, ignore_errors=True)


def _desc(targets) -> str:
    return "cache " + ",".join(f"{r}-{m}" for r, m in targets) if targets else "audit features"


def _unwritable(base: Path, exc: OSError) -> DataError:
    return DataError(
        f"{base}: cannot write the image cache ({exc.strerror or exc}); free some space or point "
        f"{ENV_CACHE} (or --cache) at a writable folder with room"
    )


class _EntryWriter:
    """Fills (N, R, R, 3) / (N, R, R) memory-mapped arrays in a temp folder renamed on success."""

    def __init__(self, stack: contextlib.ExitStack, target: Path, n: int, resolution: int) -> None:
        # NOTE: replace=True: two builders racing both finish; the last rename wins, readers of the
        # first keep their (unlinked) memory maps intact.
        self.tmp = stack.enter_context(atomic_dir(target, replace=True))
        self.images = _open_npy(self.tmp / "images.npy", (n, resolution, resolution, 3))
        self.masks = _open_npy(self.tmp / "masks.npy", (n, resolution, resolution))

    def put(self, position: int, image: np.ndarray, mask: np.ndarray) -> None:
        self.images[position] = image
        self.masks[position] = mask

    def finish(self, ds: Dataset, resolution: int, mode: str, empty_masks: list[str]) -> None:
        self.images.flush()
        self.masks.flush()
        del self.images, self.masks
        index = {
            "version": CACHE_VERSION,
            "fingerprint": dataset_fingerprint(ds),
            "resolution": resolution,
            "mode": mode,
            "sample_ids": ds.sample_ids(),
            "empty_masks": empty_masks,
        }
        (self.tmp / "index.json").write_text(json.dumps(index))


def _open_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A writable .npy memory map whose disk space is reserved up front (ENOSPC now, not SIGBUS later)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.path.getsize(path))
    return array


def cache_present(ds: Dataset, resolution: int, mode: str = "stretch", *, cache_dir=None) -> bool:
    """Whether the cache of `ds` at (resolution, mode) was built (open_cache checks it is current)."""
    return (entry_dir(ds, resolution, mode, cache_dir) / "index.json").is_file()


def open_cache(
    ds: Dataset,
    resolution: int,
    mode: str = "stretch",
    *,
    cache_dir=None,
    build: bool = True,
    progress=True,
) -> CachedArrays:
    """Memory-map the cache of `ds` at (resolution, mode); build it first when missing and build=True."""
    path = entry_dir(ds, resolution, mode, cache_dir)
    if not (path / "index.json").is_file():
        if not build:
            raise DataError(
                f"{path}: no cache at {resolution}-{mode}; run `histosweep prepare {ds.root} "
                f"--resolutions {resolution} --modes {mode}`"
            )
        build_cache(
            ds, resolutions=[resolution], modes=[mode], cache_dir=cache_dir, progress=progress
        )
    index = json.loads((path / "index.json").read_text())
    if index.get("version") != CACHE_VERSION or index.get("sample_ids") != ds.sample_ids():
        raise DataError(
            f"{path}: stale or foreign cache; delete this folder and rerun `histosweep prepare`"
        )
    note_empty_masks(ds, index.get("empty_masks", []))
    images = np.load(path / "images.npy", mmap_mode="r")
    masks = np.load(path / "masks.npy", mmap_mode="r")
    return CachedArrays(images, masks, list(index["sample_ids"]), int(resolution), mode, path)


def note_empty_masks(ds: Dataset, sample_ids: list[str]) -> None:
    """Add one warning per all-empty mask to ds.warnings (once)."""
    by_id = {s.sample_index: s for s in ds.samples}
    for sid in sample_ids:
        message = empty_mask_warning(by_id[sid].mask_path) if sid in by_id else None
        if message and message not in ds.warnings:
            ds.warnings.append(message)


def empty_mask_warning(mask_path: Path) -> str:
    return f"{mask_path}: mask is empty (no pixel > 0); the whole image is used as its mask"


def read_features(base: Path) -> dict[str, dict]:
    path = base / FEATURES_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if stored.get("version") != FEATURES_VERSION:
        return {}
    return stored.get("samples", {})


def write_features(base: Path, features: dict[str, dict]) -> None:
    document = {"version": FEATURES_VERSION, "samples": features}
    atomic_write_text(base / FEATURES_FILE, json.dumps(document))

"""The one cache builder: every missing data.InputSpec of a dataset from ONE decode per image,
each written whole-or-absent (temp folder renamed), plus the audit features.

CACHE/<fingerprint[:16]>/<spec key>/{images.npy, masks.npy[, counts.npy], index.json}.
Exercise: `histosweep prepare DATA --space FILE`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import time
from pathlib import Path

import numpy as np

from histosweep.data._cache import (
    CACHE_VERSION,
    FEATURES_FILE,
    cache_lock,
    dataset_cache_dir,
    note_empty_masks,
    open_npy,
    read_features,
    sweep_stale_temps,
    unwritable_error,
    write_features,
)
from histosweep.data._dataset import DataError, Dataset
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._pool import decode_all
from histosweep.data._spec import InputSpec
from histosweep.data._tiles import FALLBACK_MASK
from histosweep.storage import atomic_dir

log = logging.getLogger("histosweep")
_TRIES = 3


def build_specs(ds: Dataset, specs: list[InputSpec], *, cache_dir=None, workers=None,
                progress=True, features: bool | None = None) -> None:
    """Build every spec not cached yet in one decode of each image. features: also fill in the
    audit's features (None: when a spec asks for them, as the whole-picture caches do)."""
    specs = list(dict.fromkeys(specs))
    want_features = any(s.audit_features for s in specs) if features is None else features
    for _ in range(_TRIES):
        try:
            return _build(ds, specs, cache_dir, workers, progress, want_features)
        except _LostRace:
            # NOTE: another process renamed the same entry in between our two renames; its copy
            # is as good as ours, so build only what is still missing.
            continue
    raise DataError(f"{dataset_cache_dir(ds, cache_dir)}: other processes keep rebuilding this "
                    "cache at the same time; rerun")


class _LostRace(Exception):
    pass


def spec_present(base: Path, spec: InputSpec) -> bool:
    return (base / spec.key / "index.json").is_file()


def _build(ds: Dataset, specs, cache_dir, workers, progress, want_features: bool) -> None:
    base = dataset_cache_dir(ds, cache_dir)
    missing, need_features = _todo(ds, base, specs, want_features)
    if not missing and not need_features:
        return
    sweep_stale_temps(base)
    entries = [base / s.key for s in missing] + ([base / FEATURES_FILE] if need_features else [])
    what = f"image cache ({', '.join(s.key for s in missing) or 'audit features'})"
    # NOTE: one build per machine: the other slots and workers wait here, then find it built
    with _locked(base, entries, what):
        missing, need_features = _todo(ds, base, missing, need_features)
        if missing or need_features:
            _write(ds, base, missing, need_features, workers, progress)


@contextlib.contextmanager
def _locked(base: Path, entries: list[Path], what: str):
    """cache_lock, where a lock file that cannot be made is the cache folder's problem."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(cache_lock(entries, what=what))
    except OSError as exc:
        raise unwritable_error(base, exc) from exc
    with stack:
        yield


def _todo(ds: Dataset, base: Path, specs, want_features: bool) -> tuple[list, bool]:
    """(specs not built yet, whether audit features are missing)."""
    missing = [s for s in specs if not spec_present(base, s)]
    features = read_features(base) if want_features else {}
    need_features = want_features and any(s.sample_index not in features for s in ds.samples)
    return missing, need_features


def _write(ds: Dataset, base: Path, missing, need_features: bool, workers, progress) -> None:
    """Decode every image once into the missing specs (and features); rename them into place."""
    started = time.perf_counter()
    features = read_features(base)
    try:
        with contextlib.ExitStack() as stack:  # every temp folder renamed at once, or none
            writers = {s: _Writer(stack, base, len(ds.samples), s) for s in missing}
            desc = "cache " + ",".join(s.key for s in missing) if missing else "audit features"
            results = decode_all(ds.samples, missing, need_features, workers=workers,
                                 progress=progress, desc=desc)
            empty = _consume(ds, results, writers, features)
            for writer in writers.values():
                writer.finish(ds, empty)
        if need_features:
            write_features(base, features)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # a concurrent rename got there first
            raise _LostRace from exc
        raise unwritable_error(base, exc) from exc
    note_empty_masks(ds, empty)
    log.info("built cache %s of %d images in %.1f s", ",".join(s.key for s in missing) or
             "audit features", len(ds.samples), time.perf_counter() - started)


def _consume(ds: Dataset, results, writers: dict, features: dict) -> list[str]:
    """Write each decoded sample into every spec; collect features; return empty-mask ids."""
    empty = []
    for position, cuts, feats, mask_empty in results:
        sample_index = ds.samples[position].sample_index
        for spec, writer in writers.items():
            writer.put(position, *cuts[spec])
        if feats is not None:
            features[sample_index] = feats
        if mask_empty:
            empty.append(sample_index)
    return sorted(empty)


class _Writer:
    """Fills a spec's memory-mapped arrays in a temp folder renamed on success."""

    def __init__(self, stack: contextlib.ExitStack, base: Path, n: int, spec: InputSpec) -> None:
        self.spec = spec
        # NOTE: replace=True: two builders racing both finish; the last rename wins, readers of the
        # first keep their (unlinked) memory maps intact.
        # marker: names this process, so a sweep keeps the folder while it runs
        self.tmp = stack.enter_context(atomic_dir(base / spec.key, replace=True, marker=True))
        self.arrays = {name: open_npy(self.tmp / f"{name}.npy", shape, dtype)
                       for name, (shape, dtype) in spec.shapes(n).items()}
        self.fallbacks: dict[int, str] = {}

    def put(self, position: int, arrays: dict[str, np.ndarray], fallback: str) -> None:
        for name, value in arrays.items():
            self.arrays[name][position] = value
        if fallback != FALLBACK_MASK:
            self.fallbacks[position] = fallback

    def finish(self, ds: Dataset, empty_masks: list[str]) -> None:
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        ids = ds.sample_ids()
        fallbacks = {ids[p]: reason for p, reason in sorted(self.fallbacks.items())}
        head = {"version": CACHE_VERSION, "fingerprint": dataset_fingerprint(ds)}
        index = self.spec.index(head, ids, fallbacks, empty_masks)
        (self.tmp / "index.json").write_text(json.dumps(index))


def read_spec(ds: Dataset, base: Path, spec: InputSpec):
    """The container of a built cache, its arrays memory-mapped; refuses a stale or foreign one."""
    path = base / spec.key
    index = json.loads((path / "index.json").read_text())
    if index.get("version") != CACHE_VERSION or index.get("sample_ids") != ds.sample_ids():
        raise DataError(
            f"{path}: stale or foreign cache; delete this folder and rerun `histosweep prepare`"
        )
    note_empty_masks(ds, index.get("empty_masks", []))
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in spec.shapes(0)}
    return spec.opened(arrays, index, path)

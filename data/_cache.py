"""The per-machine cache folder: CACHE/<fingerprint[:16]>/ per dataset content, its audit
features.json, the empty-mask warnings, and the file helpers of the one cache builder (data._build).

Exercise: `histosweep prepare DATA`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from histosweep.constants import ENV_CACHE
from histosweep.data._dataset import DataError, Dataset
from histosweep.data._features import FEATURES_VERSION
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.storage import atomic_write_text, build_lock, sweep_dead_build_temps

log = logging.getLogger("histosweep")

CACHE_VERSION = 1
FEATURES_FILE = "features.json"


def default_cache_dir() -> Path:
    """$HISTOSWEEP_CACHE, else ~/.cache/histosweep."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "histosweep"


def dataset_cache_dir(ds: Dataset, cache_dir=None) -> Path:
    """CACHE/<fingerprint[:16]>: everything cached for this exact dataset content."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / dataset_fingerprint(ds)[:16]


def sweep_stale_temps(base: Path) -> None:
    """Remove temp folders of builds that are gone (SIGKILL skips cleanup): judged by their
    entry's build lock and their builder's pid, never by age (storage.dead_build_temps)."""
    for tmp in sweep_dead_build_temps(base):
        log.info("removed %s, left by a build that was stopped", tmp)


@contextlib.contextmanager
def cache_lock(targets, *, what: str):
    """Hold the build lock of every entry in `targets` (sorted, so two builders never wait for
    each other): one build per machine. Waiting for another process says so in one line."""
    with contextlib.ExitStack() as stack:
        waited = []

        def on_wait(holder) -> None:
            if not waited:  # one line per build, however many of its entries are locked
                by = holder.describe() if holder else "another process"
                log.warning("waiting for the %s build by %s", what, by)
                waited.append(holder)

        for target in sorted(set(map(Path, targets))):
            stack.enter_context(build_lock(target, on_wait=on_wait))
        yield bool(waited)


def unwritable_error(base: Path, exc: OSError) -> DataError:
    return DataError(
        f"{base}: cannot write the image cache ({exc.strerror or exc}); free some space or point "
        f"{ENV_CACHE} (or --cache) at a writable folder with room"
    )


def open_npy(path: Path, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """A writable .npy memory map whose disk space is reserved up front (ENOSPC now, not SIGBUS later)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.path.getsize(path))
    return array


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

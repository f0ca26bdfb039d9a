"""Content fingerprint of a dataset: what the cache, the audit and a study are keyed by.

Changing any image, mask or label changes it. Exercise: `histosweep prepare DATA --json` (fingerprint).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from histosweep.data._dataset import Dataset

_CHUNK = 1 << 20
# (resolved path, size, mtime_ns) -> sha256 hex of the file's bytes, for this process
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime_ns) in this process."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_HASHES.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
        digest = _FILE_HASHES[key] = hasher.hexdigest()
    return digest


def dataset_fingerprint(ds: Dataset) -> str:
    """sha256 hex over sorted (sample_index, label, image sha256, mask sha256)."""
    hasher = hashlib.sha256()
    for sample in sorted(ds.samples, key=lambda s: s.sample_index):
        parts = (
            sample.sample_index,
            sample.label or "",
            file_sha256(sample.image_path),
            file_sha256(sample.mask_path),
        )
        hasher.update("\x1f".join(parts).encode("utf-8") + b"\x1e")
    return hasher.hexdigest()

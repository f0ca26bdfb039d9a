"""Frozen-feature cache: fp16 embeddings of every image (or tile), whole or absent.

CACHE/<fingerprint[:16]>/embed/<backbone>-<weights sha256[:16]>/<input key>/
{features.npy (N, K, D) fp16, counts.npy (N,) int32, coverage.npy (N, K) fp16, index.json},
written in a temp folder and renamed. Exercise: `histosweep embed DATA --backbone NAME`.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosweep.data._cache import cache_lock, dataset_cache_dir, sweep_stale_temps
from histosweep.data._dataset import DataError, Dataset
from histosweep.storage import atomic_dir

EMBED_CACHE_VERSION = 1


@dataclass
class EmbeddingArrays:
    """What the embedder computes: K views per image (K = 1 for whole/mask_crop)."""

    features: np.ndarray  # (N, K, D) fp16; rows past counts[i] are zeros (padding tiles)
    counts: np.ndarray  # (N,) int32 valid views per image, >= 1
    coverage: np.ndarray  # (N, K) fp16 fraction of tumour-mask pixels in each view


@dataclass
class EmbeddingCache:
    """An opened cache entry (memory-mapped), rows in the dataset's sample order."""

    features: np.ndarray  # (N, K, D) fp16
    counts: np.ndarray  # (N,) int32
    coverage: np.ndarray  # (N, K) fp16
    sample_ids: list[str]
    identity: dict  # backbone, weights_sha256, input, dim, embed_size (the bundle records it)
    path: Path | None = None


def embedding_dir(ds: Dataset, *, backbone: str, weights_sha256: str, input_key: str,
                  cache_dir=None) -> Path:
    """The entry for (dataset content, backbone, its weights, input mode/resolution)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone).strip("_")
    return dataset_cache_dir(ds, cache_dir) / "embed" / f"{slug}-{weights_sha256[:16]}" / input_key


def write_embeddings(target: Path, arrays: EmbeddingArrays, *, sample_ids: list[str],
                     identity: dict) -> None:
    """Write the entry in a temp folder next to `target`, then rename it into place."""
    n, k, d = arrays.features.shape
    if arrays.counts.shape != (n,) or arrays.coverage.shape != (n, k) or len(sample_ids) != n:
        raise DataError(f"{target}: embeddings {arrays.features.shape}, counts "
                        f"{arrays.counts.shape}, coverage {arrays.coverage.shape} disagree")
    with atomic_dir(target, replace=True, marker=True) as tmp:  # marker: a sweep spares it
        np.save(tmp / "features.npy", arrays.features.astype(np.float16, copy=False))
        np.save(tmp / "counts.npy", arrays.counts.astype(np.int32, copy=False))
        np.save(tmp / "coverage.npy", arrays.coverage.astype(np.float16, copy=False))
        index = {"version": EMBED_CACHE_VERSION, "sample_ids": list(sample_ids),
                 "shape": [n, k, d], **identity}
        (tmp / "index.json").write_text(json.dumps(index))


@contextlib.contextmanager
def embedding_build_lock(target: Path):
    """Hold the build lock of the entry `target` (one build per machine; another process's
    build is waited for, with one line); temp folders of killed builds are swept first.
    Yields whether it waited. Check embeddings_present again inside: the wait may have built it."""
    sweep_stale_temps(target.parent)
    with cache_lock([target], what=f"embedding cache ({target.parent.name}/{target.name})") as waited:
        yield waited


def embeddings_present(target: Path) -> bool:
    return (target / "index.json").is_file()


def open_embeddings(target: Path, *, sample_ids: list[str]) -> EmbeddingCache:
    """Memory-map an entry; it must hold exactly `sample_ids` in that order."""
    index = json.loads((target / "index.json").read_text())
    if index.get("version") != EMBED_CACHE_VERSION or index.get("sample_ids") != list(sample_ids):
        raise DataError(f"{target}: stale or foreign embedding cache; delete this folder and rerun "
                        "`histosweep embed`")
    identity = {k: v for k, v in index.items() if k not in ("version", "sample_ids", "shape")}
    return EmbeddingCache(
        features=np.load(target / "features.npy", mmap_mode="r"),
        counts=np.load(target / "counts.npy"),
        coverage=np.load(target / "coverage.npy", mmap_mode="r"),
        sample_ids=list(sample_ids), identity=identity, path=target,
    )

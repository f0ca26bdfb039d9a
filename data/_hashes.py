"""Exact and near-duplicate search over stored pixel digests and perceptual hashes.

Hamming distances of 64-bit phash/dhash are computed blockwise with numpy (no Python pair loop).
Exercise: `histosweep prepare DATA --json` (duplicate_groups).
"""

from __future__ import annotations

import numpy as np

# Near duplicate: both hashes close. A re-export/re-scan sits at 0-4 bits; unrelated pictures
# average 32 (+-4), so 8 phash bits is > 5 standard deviations from chance.
NEAR_PHASH = 8
NEAR_DHASH = 12
_BLOCK = 1024  # rows per block: keeps the (block, N) distance matrix small


def hash_bits(hex_hashes: list[str]) -> np.ndarray:
    """(N, 64) uint8 bit matrix of 16-hex-digit hashes."""
    raw = np.array([bytes.fromhex(h) for h in hex_hashes], dtype="S8").view(np.uint8)
    return np.unpackbits(raw.reshape(len(hex_hashes), -1), axis=1)


def _distances(rows: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """(r, 64) x (N, 64) bit matrices -> (r, N) Hamming distances (int32)."""
    a = rows.astype(np.int32)
    b = bits.astype(np.int32)
    return a @ (1 - b).T + (1 - a) @ b.T


def nearest(i: int, feats: list[dict]) -> tuple[int | None, int]:
    """The picture closest to picture i by phash, and its distance (None when alone)."""
    if len(feats) < 2:
        return None, 64
    bits = hash_bits([f["phash"] for f in feats])
    distances = _distances(bits[i : i + 1], bits)[0]  # (N,)
    distances[i] = 65
    j = int(distances.argmin())
    return j, int(distances[j])


def duplicate_groups(ids: list[str], feats: list[dict]) -> list[list[str]]:
    """Groups (size >= 2) of exact (same pixels) or near (close phash AND dhash) duplicates."""
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in _pairs(feats):
        parent[find(a)] = find(b)
    groups: dict[int, list[str]] = {}
    for i, sid in enumerate(ids):
        groups.setdefault(find(i), []).append(sid)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def _pairs(feats: list[dict]):
    """(i, j) index pairs that are exact or near duplicates."""
    first_with: dict[str, int] = {}
    for i, f in enumerate(feats):
        if f["pixel_sha"] in first_with:
            yield first_with[f["pixel_sha"]], i
        first_with.setdefault(f["pixel_sha"], i)
    if len(feats) < 2:
        return
    phash = hash_bits([f["phash"] for f in feats])
    dhash = hash_bits([f["dhash"] for f in feats])
    for start in range(0, len(feats), _BLOCK):
        stop = min(start + _BLOCK, len(feats))
        close = (_distances(phash[start:stop], phash) <= NEAR_PHASH) & (
            _distances(dhash[start:stop], dhash) <= NEAR_DHASH
        )  # (block, N)
        for r, j in zip(*np.nonzero(close), strict=True):
            if start + r < j:
                yield start + int(r), int(j)

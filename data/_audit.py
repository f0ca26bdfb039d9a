"""Dataset audit: flags cartoons, stock-mask pictures and green-slime copies; groups duplicates.

Reads the features the cache build stored, computes only what is missing, caches the report as JSON.
Exercise: `histosweep prepare DATA` (table) or `histosweep prepare DATA --json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from histosweep.data._cache import (
    dataset_cache_dir,
    empty_mask_warning,
    read_features,
    write_features,
)
from histosweep.data._dataset import Dataset
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._hashes import duplicate_groups, nearest
from histosweep.data._pool import decode_all
from histosweep.storage import atomic_write_text

AUDIT_VERSION = 1  # bump when a rule or threshold changes: cached reports are then recomputed
AUDIT_FILE = "audit.json"
# Cartoon: most coloured pixels sit in flat regions (scanned tissue is textured everywhere).
CARTOON_FLAT = 0.5
CARTOON_COLOURED = 0.15
# Stock mask: this many different pictures sharing one identical mask are pasted, not annotated.
STOCK_MASK_GROUP = 3
# Green slime: green hue share (HSV); H&E stains (pink, purple) have essentially none.
SLIME_GREEN = 0.03
SLIME_SOURCE_DISTANCE = 24  # phash bits (of 64) within which another picture is named as the source


@dataclass
class AuditReport:
    samples: int
    excluded: list[dict]  # [{"sample_index", "reason", "kind"}]
    duplicate_groups: list[list[str]]  # kept samples of one group must stay in one fold
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"version": AUDIT_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> AuditReport:
        keys = ("samples", "excluded", "duplicate_groups", "warnings", "fingerprint")
        return cls(**{k: d[k] for k in keys if k in d})

    def excluded_ids(self) -> set[str]:
        return {entry["sample_index"] for entry in self.excluded}

    def kept_ids(self, sample_ids: list[str]) -> list[str]:
        """sample_ids minus the excluded ones, order kept."""
        excluded = self.excluded_ids()
        return [sid for sid in sample_ids if sid not in excluded]

    def groups_for(self, sample_ids: list[str]) -> np.ndarray:
        """(N,) int64 group id per sample: duplicates share one, every other sample has its own."""
        group_of = {sid: g for g, members in enumerate(self.duplicate_groups) for sid in members}
        next_id = len(self.duplicate_groups)
        out = np.empty(len(sample_ids), dtype=np.int64)
        for i, sid in enumerate(sample_ids):
            if sid in group_of:
                out[i] = group_of[sid]
            else:
                out[i], next_id = next_id, next_id + 1
        return out


def audit_dataset(
    ds: Dataset, *, cache_dir=None, workers: int | None = None, progress: bool = True
) -> AuditReport:
    """Audit `ds`; reuse CACHE/<fingerprint>/audit.json when present and current."""
    base = dataset_cache_dir(ds, cache_dir)
    fingerprint = dataset_fingerprint(ds)
    cached = _read_report(base / AUDIT_FILE, fingerprint)
    if cached is not None:
        return cached
    warnings: list[str] = []
    features = _features(ds, base, workers, progress, warnings)
    report = judge(ds, features)
    report.fingerprint = fingerprint
    report.warnings = warnings + report.warnings
    _write_report(base / AUDIT_FILE, report, report.warnings)
    return report


def _read_report(path: Path, fingerprint: str) -> AuditReport | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("version") != AUDIT_VERSION or stored.get("fingerprint") != fingerprint:
        return None
    return AuditReport.from_dict(stored)


def _write_report(path: Path, report: AuditReport, warnings: list[str]) -> None:
    try:
        atomic_write_text(path, json.dumps(report.to_dict(), indent=1))
    except OSError as exc:
        warnings.append(
            f"{path}: cannot store the audit ({exc.strerror or exc}); it will be recomputed next time"
        )


def _features(ds: Dataset, base: Path, workers, progress, warnings: list[str]) -> dict[str, dict]:
    """Stored features, plus those missing (decoded here, stored back)."""

    features = read_features(base)
    missing = [s for s in ds.samples if s.sample_index not in features]
    if not missing:
        return features
    for position, _, feats, _ in decode_all(
        missing, [], True, workers=workers, progress=progress, desc="audit"
    ):
        features[missing[position].sample_index] = feats
    try:
        write_features(base, features)
    except OSError as exc:
        warnings.append(f"{base}: cannot store audit features ({exc.strerror or exc})")
    return features


def judge(ds: Dataset, features: dict[str, dict]) -> AuditReport:
    """Apply the rules to per-sample features; every flag carries its reason in words."""
    ids = ds.sample_ids()
    feats = [features[sid] for sid in ids]
    reasons: dict[str, list[tuple[str, str]]] = {}
    for sid, f in zip(ids, feats, strict=True):
        if _is_cartoon(f):
            reasons.setdefault(sid, []).append(("cartoon", _cartoon_reason(f)))
    stock_groups, pair_warnings = _stock_mask_groups(ids, feats)
    for group in stock_groups:
        for sid in group:
            others = [o for o in group if o != sid]
            reasons.setdefault(sid, []).append(("stock-mask", _stock_reason(others)))
    for sid, reason in _slime(ids, feats, set(reasons)).items():
        reasons.setdefault(sid, []).append(("slime", reason))
    excluded = [
        {"sample_index": sid, "kind": flags[0][0], "reason": "; ".join(r for _, r in flags)}
        for sid, flags in sorted(reasons.items())
    ]
    kept = [i for i, sid in enumerate(ids) if sid not in reasons]
    groups = duplicate_groups([ids[i] for i in kept], [feats[i] for i in kept])
    grouped = {frozenset(g) for g in groups}
    warnings = [
        w for pair, w in pair_warnings if pair.isdisjoint(reasons) and not _inside(pair, grouped)
    ]
    warnings += _label_conflicts(ds, groups) + _empty_mask_warnings(ds, features)
    return AuditReport(
        samples=len(ids), excluded=excluded, duplicate_groups=groups, warnings=warnings
    )


def _is_cartoon(f: dict) -> bool:
    return f["flat_coloured_share"] >= CARTOON_FLAT and f["coloured_share"] >= CARTOON_COLOURED


def _cartoon_reason(f: dict) -> str:
    return (
        f"cartoon, not tissue: {f['flat_coloured_share']:.0%} of its coloured pixels lie in flat colour "
        f"regions (scanned tissue: under 10%), {f['vivid_share']:.0%} vivid pixels, "
        f"{f['hue_families']} hue families (H&E: 1-3)"
    )


def _stock_reason(others: list[str]) -> str:
    listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return (
        f"shares one identical mask with {len(others)} other different pictures ({listed}): "
        "pictures pasted onto a stock mask, not annotated tissue"
    )


def _stock_mask_groups(
    ids: list[str], feats: list[dict]
) -> tuple[list[list[str]], list[tuple[frozenset, str]]]:
    """Groups of >= STOCK_MASK_GROUP different pictures with one identical, non-trivial mask,
    plus (pair, warning) for two different pictures sharing a mask."""
    by_mask: dict[str, list[int]] = {}
    for i, f in enumerate(feats):
        if (
            not f["mask_empty"] and f["mask_fraction"] < 0.99
        ):  # empty/full masks are identical by nature
            by_mask.setdefault(f["mask_sha"], []).append(i)
    groups, warnings = [], []
    for members in by_mask.values():
        distinct = {feats[i]["pixel_sha"] for i in members}
        if len(distinct) >= STOCK_MASK_GROUP:
            groups.append([ids[i] for i in members])
        elif len(distinct) == 2 and len(members) == 2:
            a, b = ids[members[0]], ids[members[1]]
            warnings.append(
                (frozenset((a, b)), f"{a} and {b} have identical masks but different pictures")
            )
    return groups, warnings


def _slime(ids: list[str], feats: list[dict], already: set[str]) -> dict[str, str]:
    """sample_index -> reason for pictures with a green-slime share (and their likely source)."""
    out = {}
    # NOTE: a source is a clean picture: another slimed copy or a flagged picture shares the
    # slime's hash bits and would be named instead of the original.
    clean = [k for k, g in enumerate(feats) if ids[k] not in already and g["green_share"] < SLIME_GREEN]
    for i, f in enumerate(feats):
        if ids[i] in already or f["green_share"] < SLIME_GREEN:
            continue
        reason = f"green slime over {f['green_share']:.0%} of the picture (green hue in HSV; H&E stains have none)"
        j, distance = nearest(0, [f] + [feats[k] for k in clean])
        if j is not None and distance <= SLIME_SOURCE_DISTANCE:
            reason += f"; a smeared copy of {ids[clean[j - 1]]} (perceptual-hash distance {distance}/64)"
        out[ids[i]] = reason
    return out


def _inside(pair: frozenset, groups: set[frozenset]) -> bool:
    return any(pair <= g for g in groups)


def _label_conflicts(ds: Dataset, groups: list[list[str]]) -> list[str]:
    if not ds.labeled:
        return []
    label = {s.sample_index: s.label for s in ds.samples}
    return [
        f"duplicates {', '.join(g)} carry different labels ({', '.join(sorted({label[s] for s in g}))}); "
        "check train_labels.csv"
        for g in groups
        if len({label[s] for s in g}) > 1
    ]


def _empty_mask_warnings(ds: Dataset, features: dict[str, dict]) -> list[str]:
    return [
        empty_mask_warning(s.mask_path)
        for s in ds.samples
        if features[s.sample_index]["mask_empty"]
    ]

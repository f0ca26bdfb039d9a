"""Predict a test folder with an exported bundle: the weighted fold ensemble -> submission CSV.

`export-best --test` calls the same functions, so both write the same file.
Exercise: `histosweep predict BUNDLE --images TEST --out submission.csv [--tta]`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.data import CLASSES, decode_and_resize, load_dataset
from histosweep.model import ConfigError, TrainConfig
from histosweep.search._ensemble import ensemble_probs
from histosweep.search._errors import UserError
from histosweep.storage import atomic_write_text

log = logging.getLogger("histosweep")

MANIFEST = "manifest.json"
FOLDS_DIR = "folds"
BUNDLE_FORMAT = 1
SUBMISSION_HEADER = "sample_index,label"
# NOTE: a process pool costs ~1 s per worker to spawn; only worth it for real test folders.
_POOL_FROM = 64
_MANIFEST_KEYS = ("format", "classes", "config", "folds")


@dataclass(frozen=True)
class BundleFold:
    fold: int
    path: Path
    weight: float


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    config: Any  # model.TrainConfig
    classes: tuple[str, ...]
    folds: list[BundleFold]  # the shipped folds (weight > 0), in fold order


# --- the bundle ------------------------------------------------------------------------------
def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and check BUNDLE/manifest.json and that every fold file it names is there."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such bundle folder; pass the --out folder of histosweep export-best")
    manifest = _read_manifest(root / MANIFEST)
    config = _manifest_config(root, manifest)
    classes = _manifest_classes(root, manifest)
    folds = [_bundle_fold(root, entry) for entry in manifest["folds"] if _weight(root, entry) > 0]
    if not folds:
        raise UserError(f"{root / MANIFEST}: no fold has a weight > 0; re-export the bundle")
    total = sum(f.weight for f in folds)
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"{root / MANIFEST}: fold weights sum to {total:.6f}, not 1; re-export the bundle")
    return Bundle(root, manifest, config, classes, folds)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: missing; this is not a complete export-best bundle (re-export it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: expected a JSON object; re-export the bundle")
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; re-export the bundle")
    if manifest["format"] != BUNDLE_FORMAT:
        raise UserError(
            f"{path}: bundle format {manifest['format']!r}, this histosweep reads {BUNDLE_FORMAT}; "
            "use the histosweep version that exported it"
        )
    if not isinstance(manifest["folds"], list):
        raise UserError(f"{path}: 'folds' must be a list; re-export the bundle")
    return manifest


def _manifest_config(root: Path, manifest: dict[str, Any]):
    try:
        return TrainConfig.from_dict(manifest["config"])
    except (ConfigError, TypeError, AttributeError) as exc:
        raise UserError(f"{root / MANIFEST}: 'config' is not a usable TrainConfig ({exc})") from None


def _manifest_classes(root: Path, manifest: dict[str, Any]) -> tuple[str, ...]:
    classes = tuple(manifest["classes"]) if isinstance(manifest["classes"], list) else ()
    if classes != tuple(CLASSES):
        raise UserError(
            f"{root / MANIFEST}: classes {list(classes)} differ from this histosweep's "
            f"{list(CLASSES)}; use the histosweep version that exported it"
        )
    return classes


def _weight(root: Path, entry: Any) -> float:
    try:
        weight = float(entry["weight"])
    except (TypeError, KeyError, ValueError):
        raise UserError(f"{root / MANIFEST}: fold entry {entry!r} has no numeric 'weight'") from None
    if not np.isfinite(weight) or weight < 0:
        raise UserError(f"{root / MANIFEST}: fold entry {entry!r} has an invalid weight")
    return weight


def _bundle_fold(root: Path, entry: dict[str, Any]) -> BundleFold:
    rel = entry.get("file")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise UserError(f"{root / MANIFEST}: fold {entry.get('fold')} has no valid 'file'")
    path = root / rel
    if not path.is_file():
        raise UserError(
            f"{path}: fold {entry.get('fold')} checkpoint is missing from the bundle; "
            "copy the whole bundle folder or re-export it"
        )
    expected = entry.get("sha256")
    if expected and file_sha256(path) != expected:
        raise UserError(
            f"{path}: fold {entry.get('fold')} checkpoint is corrupt (sha256 differs from the "
            "manifest); copy the bundle again or re-export it"
        )
    return BundleFold(int(entry.get("fold", -1)), path, float(entry["weight"]))


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- the test folder -----------------------------------------------------------------------
def load_test_folder(folder, resolution: int, mode: str, *, workers: int | None = None,
                     progress: bool = True) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Validate TEST (every img_X needs its mask_X) and decode it: ids, (N,R,R,3), (N,R,R) uint8."""

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; pass the test folder holding img_*.png + mask_*.png")
    ds = load_dataset(folder, labeled=False)
    samples = sorted(ds.samples, key=lambda s: s.sample_index)
    images, masks = decode_samples(samples, resolution, mode, workers=workers, progress=progress)
    return [s.sample_index for s in samples], images, masks


def decode_samples(samples, resolution: int, mode: str, *, workers: int | None = None,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """decode_and_resize every sample (the cache's own path): (N, R, R, 3), (N, R, R) uint8."""
    from tqdm.auto import tqdm

    images = np.zeros((len(samples), resolution, resolution, 3), dtype=np.uint8)
    masks = np.zeros((len(samples), resolution, resolution), dtype=np.uint8)
    jobs = [(str(s.image_path), str(s.mask_path), resolution, mode) for s in samples]
    bar = tqdm(total=len(jobs), desc=f"decode {resolution}-{mode}", unit="img",
               disable=not progress, leave=False)
    with bar:
        for i, (image, mask) in enumerate(_decode_jobs(jobs, workers)):
            images[i], masks[i] = image, mask
            bar.update()
    return images, masks


def _decode_jobs(jobs: list[tuple], workers: int | None):
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, int(workers))
    if workers == 1 or len(jobs) < _POOL_FROM:
        yield from map(_decode_one, jobs)
        return
    import concurrent.futures
    import multiprocessing

    # NOTE: spawn, not fork: the parent may hold torch/OpenMP threads that a fork would corrupt.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=4)


def _decode_one(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    image_path, mask_path, resolution, mode = job
    return decode_and_resize(image_path, mask_path, resolution, mode)


# --- the ensemble ------------------------------------------------------------------------------
def ensemble_predict(bundle: Bundle, images: np.ndarray, masks: np.ndarray, *, batch_size: int = 32,
                     tta: bool = False, device: str | None = None, progress: bool = True) -> np.ndarray:
    """Weighted mean of the shipped folds' softmax: (N, C) float64 (the trial's ensemble rule)."""
    from histosweep.model import ModelError, load_checkpoint, pick_device, predict_probs

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1")
    target = pick_device(device)
    fold_probs = []
    for fold in bundle.folds:
        try:
            net, _ = load_checkpoint(fold.path, expect=bundle.config, device=target)
        except ModelError as exc:
            raise UserError(f"fold {fold.fold} of bundle {bundle.path}: {exc}") from None
        fold_probs.append(predict_probs(net, images, masks, batch_size=batch_size, tta=tta,
                                        progress=progress))  # (N, C)
        del net
    return ensemble_probs(fold_probs, np.asarray([f.weight for f in bundle.folds]))


def submission_text(sample_ids: list[str], probs: np.ndarray, classes) -> str:
    """`sample_index,label`, one row per sample, sorted by sample_index, labels as in training."""
    labels = np.asarray(probs).argmax(1)
    rows = sorted(zip(sample_ids, labels, strict=True))
    return SUBMISSION_HEADER + "\n" + "".join(f"{sid},{classes[int(k)]}\n" for sid, k in rows)


def predict_folder(bundle_dir, images_dir, out_csv, *, tta: bool = False, batch_size: int = 32,
                   device: str | None = None, workers: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Bundle + test folder -> submission CSV written atomically; returns a summary."""

    bundle = load_bundle(bundle_dir)
    cfg = bundle.config
    ids, images, masks = load_test_folder(images_dir, cfg.resolution, cfg.resize_mode,
                                          workers=workers, progress=progress)
    probs = ensemble_predict(bundle, images, masks, batch_size=batch_size, tta=tta, device=device,
                             progress=progress)
    out_csv = Path(out_csv)
    atomic_write_text(out_csv, submission_text(ids, probs, bundle.classes))  # mode as open() gives
    counts = {c: 0 for c in bundle.classes}
    for k in probs.argmax(1):
        counts[bundle.classes[int(k)]] += 1
    return {
        "bundle": str(bundle.path), "images": str(images_dir), "out": str(out_csv), "rows": len(ids),
        "folds": [f.fold for f in bundle.folds], "tta": tta, "label_counts": counts,
    }

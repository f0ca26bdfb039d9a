"""Predict a test folder with an exported bundle: the weighted ensemble of trials (each the equal
average of its fold models), the decision offsets, then the submission CSV.

`export-best --test` calls the same functions, so both write the same file.
Exercise: `histosweep predict BUNDLE --images TEST --out submission.csv [--tta]`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histosweep.bundle._ensemble import decide, ensemble_probs
from histosweep.bundle._frozen import check_frozen_weights
from histosweep.data import (
    CLASSES,
    DataError,
    Sample,
    allocate_inputs,
    decode_all,
    input_target,
    load_dataset,
    problems_line,
    store_input,
)
from histosweep.exceptions import UserError
from histosweep.model import ConfigError, TrainConfig
from histosweep.storage import atomic_write_text, nearest_existing, not_a_folder

log = logging.getLogger("histosweep")

MANIFEST = "manifest.json"
FOLDS_DIR = "folds"
BUNDLE_FORMAT = 2  # 2: members (trials) with weights, decision offsets; 1: one trial's folds
SUBMISSION_HEADER = ("sample_index", "label")
_MANIFEST_KEYS = ("format", "classes", "members", "decision")


@dataclass(frozen=True)
class BundleFold:
    fold: int
    path: Path


@dataclass(frozen=True)
class BundleMember:
    trial: int
    config: Any  # model.TrainConfig
    weight: float
    folds: list[BundleFold]  # averaged with equal weights
    embedding: dict | None = None  # frozen members: backbone, weights_sha256, dim, input

    @property
    def target(self):
        """The data.InputSpec its config reads (data.input_target)."""
        return input_target(self.config)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    classes: tuple[str, ...]
    members: list[BundleMember]
    offsets: np.ndarray  # (C,) added to log-probabilities before argmax

    def targets(self) -> list:
        """The distinct inputs (data.InputSpec) the members read, in member order."""
        return list(dict.fromkeys(m.target for m in self.members))


# --- the bundle ------------------------------------------------------------------------------
def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and check BUNDLE/manifest.json and that every fold file it names is there."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such bundle folder; pass the --out folder of histosweep export-best")
    manifest = _read_manifest(root / MANIFEST)
    classes = _manifest_classes(root, manifest)
    members = [_member(root, entry) for entry in manifest["members"]]
    members = [m for m in members if m.weight > 0]
    if not members:
        raise UserError(f"{root / MANIFEST}: no member has a weight > 0; re-export the bundle")
    total = sum(m.weight for m in members)
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"{root / MANIFEST}: member weights sum to {total:.6f}, not 1; re-export the bundle")
    return Bundle(root, manifest, classes, members, _offsets(root, manifest, len(classes)))


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: missing; this is not a complete export-best bundle (re-export it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: expected a JSON object; re-export the bundle")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(
            f"{path}: bundle format {manifest.get('format')!r}, this histosweep reads {BUNDLE_FORMAT}; "
            "use the histosweep version that exported it, or export the study again"
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; re-export the bundle")
    if not isinstance(manifest["members"], list) or not manifest["members"]:
        raise UserError(f"{path}: 'members' must be a non-empty list; re-export the bundle")
    return manifest


def _manifest_classes(root: Path, manifest: dict[str, Any]) -> tuple[str, ...]:
    classes = tuple(manifest["classes"]) if isinstance(manifest["classes"], list) else ()
    if classes != tuple(CLASSES):
        raise UserError(
            f"{root / MANIFEST}: classes {list(classes)} differ from this histosweep's "
            f"{list(CLASSES)}; use the histosweep version that exported it"
        )
    return classes


def _offsets(root: Path, manifest: dict[str, Any], n_classes: int) -> np.ndarray:
    raw = manifest["decision"].get("offsets") if isinstance(manifest["decision"], dict) else None
    try:
        offsets = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        offsets = np.zeros(0)
    if offsets.shape != (n_classes,) or not np.all(np.isfinite(offsets)):
        raise UserError(f"{root / MANIFEST}: decision.offsets must be {n_classes} finite numbers; "
                        "re-export the bundle")
    return offsets


def _member(root: Path, entry: Any) -> BundleMember:
    where = f"{root / MANIFEST}: member {entry.get('trial') if isinstance(entry, dict) else entry!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("folds"), list) or not entry["folds"]:
        raise UserError(f"{where} needs 'trial', 'weight', 'config' and a list of 'folds'; re-export the bundle")
    try:
        weight = float(entry["weight"])
    except (TypeError, KeyError, ValueError):
        raise UserError(f"{where} has no numeric 'weight'") from None
    if not np.isfinite(weight) or weight < 0:
        raise UserError(f"{where} has an invalid weight {entry['weight']!r}")
    try:
        config = TrainConfig.from_dict(entry["config"])
    except (ConfigError, TypeError, AttributeError, KeyError) as exc:
        raise UserError(f"{where}: 'config' is not a usable TrainConfig ({exc})") from None
    return BundleMember(int(entry.get("trial", -1)), config, weight,
                        [_bundle_fold(root, f) for f in entry["folds"]], entry.get("embedding"))


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
    return BundleFold(int(entry.get("fold", -1)), path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- images ----------------------------------------------------------------------------------
def check_test_folder(folder) -> list[Sample]:
    """Validate TEST without decoding it (every img_X needs its mask_X, headers verified, no
    training folder): its samples, sorted by sample_index. export-best calls it before selecting."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; pass the test folder holding img_*.png + mask_*.png")
    if (folder / "train_data").is_dir() or (folder / "train_labels.csv").is_file():
        raise UserError(
            f"{folder} is a training dataset (it holds train_data/ or train_labels.csv); pass the "
            "test folder holding img_*.png + mask_*.png"
        )
    try:
        ds = load_dataset(folder, labeled=False)
    except DataError as exc:
        raise DataError(problems_line(str(exc))) from None
    return sorted(ds.samples, key=lambda s: s.sample_index)


def load_test_folder(folder, targets: list, *, workers: int | None = None,
                     progress: bool = True) -> tuple[list[str], dict]:
    """Validate TEST (check_test_folder) and decode it once."""
    samples = check_test_folder(folder)
    arrays = decode_samples(samples, targets, workers=workers, progress=progress)
    return [s.sample_index for s in samples], arrays


def decode_samples(samples, targets: list, *, workers: int | None = None,
                   progress: bool = True) -> dict:
    """Each image decoded once and cut for every target (data.InputSpec; the cache's own path):
    {spec: arrays in spec.shapes() order}: pictures ((N, R, R, 3), (N, R, R)) uint8; tiles
    ((N, K, T, T, 3), (N, K, T, T), (N,))."""
    out = allocate_inputs(targets, len(samples))
    decoded = decode_all(list(samples), list(out), False, workers=workers, progress=progress,
                         desc="decode")
    for position, arrays, _features, _empty in decoded:
        for target, cut in arrays.items():
            store_input(out, position, target, cut)
    return out


# --- the ensemble ------------------------------------------------------------------------------
def member_probs(member: BundleMember, images: np.ndarray, masks: np.ndarray,
                 counts: np.ndarray | None = None, *, batch_size: int = 32, tta: bool = False,
                 device: str | None = None, progress: bool = True) -> np.ndarray:
    """Equal mean of one member's fold models' softmax: (N, C) float64."""
    from histosweep.model import ModelError, load_checkpoint, pick_device

    if member.config.train_mode == "frozen":  # embed once with the backbone, then the heads
        from histosweep.bundle._frozen import frozen_member_probs

        if tta:
            log.warning("trial %d is a frozen-feature member: predicted without TTA", member.trial)
        return frozen_member_probs(member, images, masks, counts, batch_size=batch_size,
                                   device=device, progress=progress)
    target = pick_device(device)
    fold_probs = []
    for fold in member.folds:
        try:
            net, _ = load_checkpoint(fold.path, expect=member.config, device=target)
        except ModelError as exc:
            raise UserError(f"trial {member.trial} fold {fold.fold} of the bundle: {exc}") from None
        fold_probs.append(_probs(net, images, masks, counts, batch_size=batch_size, tta=tta,
                                 progress=progress))  # (N, C)
        del net
    return np.mean(np.stack(fold_probs).astype(np.float64), axis=0)


def _probs(net, images, masks, counts, **kwargs) -> np.ndarray:
    """Pictures (counts None: data.InputSpec.layout "pictures"), or tile bags pooled per image."""
    from histosweep.model import predict_bag_probs, predict_probs

    if counts is None:
        return predict_probs(net, images, masks, **kwargs)
    return predict_bag_probs(net, images, masks, counts, **kwargs)


def ensemble_predict(bundle: Bundle, arrays: dict, *, batch_size: int = 32, tta: bool = False,
                     device: str | None = None, progress: bool = True) -> np.ndarray:
    """Weighted mean over members: (N, C) float64. `arrays` comes from decode_samples."""
    check_batch_size(batch_size)
    probs = [member_probs(m, *arrays[m.target], batch_size=batch_size, tta=tta, device=device,
                         progress=progress) for m in bundle.members]
    return ensemble_probs(probs, [m.weight for m in bundle.members])


def submission_text(sample_ids: list[str], preds: np.ndarray, classes) -> str:
    """`sample_index,label`, one row per sample, sorted by sample_index, labels as in training."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    writer.writerows((sid, classes[int(k)]) for sid, k in sorted(zip(sample_ids, preds, strict=True)))
    return buffer.getvalue()


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1; pass a positive batch size (default 32)")


def check_out_file(out) -> Path:
    """--out of predict, before any work: a file path (not a folder) whose folder is, or can be
    made, writable. Probes with a temp file that is removed at once; creates no folder."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass the path of the CSV file to write, "
                        f"e.g. --out {out / 'submission.csv'}")
    if why := not_a_folder(out.parent):
        raise UserError(f"--out {out}: {why}; pass --out with a path in a folder")
    above = nearest_existing(out.parent)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=above)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write in {above} ({exc.strerror or exc}); pass --out "
                        "with a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    return out


def check_out_place(out, *, bundle_dir, images_dir, overwrite: bool) -> None:
    """predict's --out may not land inside the bundle (it would replace the bundle's own
    manifest or CSV) or the test images folder, nor replace a file unless --overwrite."""
    out = Path(out)
    where = out.resolve()
    for flag, folder in (("the bundle", bundle_dir), ("--images", images_dir)):
        if where.is_relative_to(Path(folder).resolve()):
            raise UserError(f"--out {out} is inside {flag} folder {folder}; write the CSV "
                            "elsewhere, e.g. --out submission.csv")
    if out.is_file() and not overwrite:  # a folder: check_out_file's own line
        raise UserError(f"--out {out} exists; pass --overwrite to replace it, or another --out")


def predict_folder(bundle_dir, images_dir, out_csv, *, tta: bool = False, batch_size: int = 32,
                   device: str | None = None, workers: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Bundle + test folder -> submission CSV written atomically; returns a summary. Every input
    is checked before the images are decoded."""
    check_batch_size(batch_size)
    out_csv = check_out_file(out_csv)
    bundle = load_bundle(bundle_dir)
    check_frozen_weights(bundle.members)
    ids, arrays = load_test_folder(images_dir, bundle.targets(), workers=workers, progress=progress)
    probs = ensemble_predict(bundle, arrays, batch_size=batch_size, tta=tta, device=device,
                             progress=progress)
    preds = decide(probs, bundle.offsets)
    try:
        atomic_write_text(out_csv, submission_text(ids, preds, bundle.classes))  # mode as open() gives
    except OSError as exc:  # disk full, or --out changed since the check: nothing is left
        raise UserError(f"--out {out_csv}: cannot write the CSV ({exc.strerror or exc}); free some "
                        "space or pass --out with a writable folder") from exc
    counts = {c: 0 for c in bundle.classes}
    for k in preds:
        counts[bundle.classes[int(k)]] += 1
    return {
        "bundle": str(bundle.path), "images": str(images_dir), "out": str(out_csv), "rows": len(ids),
        "members": [{"trial": m.trial, "weight": m.weight, "folds": [f.fold for f in m.folds]}
                    for m in bundle.members],
        "tta": tta, "label_counts": counts,
    }

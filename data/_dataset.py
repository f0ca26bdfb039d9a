"""Dataset discovery and validation for the challenge layout (train_labels.csv + train_data/).

Collects every problem in one pass and raises one DataError listing them all.
Exercise: `histosweep prepare DATA` (or `python -c "import data; print(data.load_dataset('DATA'))"`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histosweep.constants import CLASSES, MAX_IMAGE_PIXELS
from histosweep.exceptions import HistosweepError

LABELS_CSV = "train_labels.csv"
TRAIN_DIR = "train_data"
CSV_HEADER = ("sample_index", "label")
# NOTE: the challenge ships PNGs; the other suffixes cost nothing and spare a conversion step.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NAME = re.compile(r"^(img|mask)_(.+)$")
_MAX_LISTED = 50  # problems listed in one error; a wrong folder can produce thousands


class DataError(HistosweepError):
    """A data problem written for people: one problem per line, each naming the file and the fix."""


@dataclass(frozen=True)
class Sample:
    sample_index: str  # as in train_labels.csv / submission.csv, e.g. "img_0000.png"
    image_path: Path
    mask_path: Path
    label: str | None  # one of CLASSES; None for an unlabeled (test) folder


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    labeled: bool
    warnings: list[str] = field(default_factory=list)

    def sample_ids(self) -> list[str]:
        return [s.sample_index for s in self.samples]

    def labels(self) -> np.ndarray:
        """Class ids (position in CLASSES), int64, one per sample."""
        if not self.labeled:
            raise DataError(f"{self.root} is an unlabeled folder: it has no labels")
        return np.array([CLASSES.index(s.label) for s in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)


def load_dataset(root, *, labeled: bool = True, min_per_class: int = 0) -> Dataset:
    """Discover and validate a dataset; raise DataError listing every problem found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder; pass the folder holding {LABELS_CSV} and {TRAIN_DIR}/"
        )
    if labeled and root.name == TRAIN_DIR and (root.parent / LABELS_CSV).is_file() \
            and not (root / LABELS_CSV).exists():
        raise DataError(f"{root}: this is the {TRAIN_DIR}/ folder of the dataset {root.parent}; "
                        f"pass {root.parent} (the folder holding {LABELS_CSV} and {TRAIN_DIR}/)")
    problems: list[str] = []
    warnings: list[str] = []
    if labeled:
        folder = root / TRAIN_DIR
        rows = _read_labels(root / LABELS_CSV, problems)
    else:
        folder = _unlabeled_folder(root)
        rows = None
    pairs = _find_pairs(folder, problems) if folder.is_dir() else {}
    if labeled and not folder.is_dir():
        problems.append(f"{folder}: missing folder; put the images and masks in {TRAIN_DIR}/")
    samples = _assemble(root, folder, pairs, rows, problems, warnings)
    for sample in samples:
        _check_files(sample, problems)
    if not samples and not problems:
        where = root / LABELS_CSV if labeled else folder
        problems.append(f"{where}: no samples found; the dataset is empty")
    if labeled and samples and min_per_class > 0:
        _check_class_counts(root, samples, min_per_class, problems)
    if problems:
        raise DataError(_problem_text(problems))
    return Dataset(root=root, samples=samples, labeled=labeled, warnings=warnings)


def _problem_text(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    shown = problems[:_MAX_LISTED]
    more = [f"... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
    return "\n".join([f"{len(problems)} problem(s) in the dataset:", *shown, *more])


def _read_labels(csv_path: Path, problems: list[str]) -> dict[str, tuple[str, int]] | None:
    """sample_index -> (label, csv line); None when the file is unusable."""
    if not csv_path.is_file():
        problems.append(f"{csv_path}: missing; write it with the header 'sample_index,label'")
        return None
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(
            f"{csv_path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}, "
            "e.g. a Latin-1 or Excel export); save it as UTF-8 (CSV UTF-8) and rerun"
        )
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = tuple(cell.strip() for cell in next(reader, []))
    if header != CSV_HEADER:
        problems.append(
            f"{csv_path}: header is {','.join(header) or '(empty)'!r}; it must be 'sample_index,label'"
        )
        return None
    return _parse_rows(csv_path, reader, problems)


def _parse_rows(csv_path: Path, reader, problems: list[str]) -> dict[str, tuple[str, int]]:
    rows: dict[str, tuple[str, int]] = {}
    allowed = ", ".join(CLASSES)
    for line_no, row in enumerate(reader, start=2):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) != 2:
            problems.append(f"{csv_path} line {line_no}: expected 2 columns, found {len(cells)}")
            continue
        sample_index, label = cells
        if label not in CLASSES:
            problems.append(
                f"{csv_path} line {line_no}: unknown label {label!r} for {sample_index}; allowed: {allowed}"
            )
        if sample_index in rows:
            first = rows[sample_index][1]
            problems.append(
                f"{csv_path} line {line_no}: sample_index {sample_index} duplicated (first on line {first}); keep one row"
            )
            continue
        rows[sample_index] = (label, line_no)
    return rows


def _unlabeled_folder(root: Path) -> Path:
    """The folder holding img_*/mask_* files: root itself, else train_data/, else a lone subfolder."""
    if _has_images(root):
        return root
    candidates = [root / TRAIN_DIR] + sorted(p for p in root.iterdir() if p.is_dir())
    with_images = [p for p in candidates if p.is_dir() and _has_images(p)]
    return with_images[0] if with_images else root


def _has_images(folder: Path) -> bool:
    return any(_split_name(p) for p in folder.iterdir() if p.is_file())


def _split_name(path: Path) -> tuple[str, str] | None:
    """('img' | 'mask', id) for img_<id>.<suffix> / mask_<id>.<suffix>; None otherwise."""
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    match = _NAME.match(path.stem)
    return (match.group(1), match.group(2)) if match else None


def _find_pairs(folder: Path, problems: list[str]) -> dict[str, tuple[Path | None, Path | None]]:
    """image file name -> (image path, mask path); reports images without masks and vice versa."""
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    pairs: dict[str, tuple[Path | None, Path | None]] = {}
    for path in sorted(folder.iterdir()):
        kind_id = _split_name(path) if path.is_file() else None
        if kind_id:
            found = images if kind_id[0] == "img" else masks
            if kind_id[1] in found:  # img_1.png beside img_1.jpg: neither may win silently
                problems.append(_same_stem(found[kind_id[1]], path))
                if found is images:  # known, so a CSV row naming it is not also "missing"
                    pairs[path.name] = (path, None)
            found.setdefault(kind_id[1], path)
    for key, image in images.items():
        mask = masks.get(key)
        if mask is None:
            problems.append(
                f"{image}: no mask; add {folder / ('mask_' + key + image.suffix)} or remove the image"
            )
        pairs[image.name] = (image, mask)
    for key, mask in masks.items():
        if key not in images:
            problems.append(
                f"{mask}: mask without an image img_{key}{mask.suffix}; add the image or remove the mask"
            )
    return pairs


def _same_stem(first: Path, second: Path) -> str:
    return (
        f"{first} and {second}: two files for one sample {first.stem}; "
        "keep one of them (remove or rename the other)"
    )


def _assemble(root, folder, pairs, rows, problems, warnings) -> list[Sample]:
    if rows is None:  # unlabeled, or an unusable CSV (already reported)
        entries = {name: None for name in pairs} if pairs else {}
    else:
        entries = {name: label for name, (label, _) in rows.items()}
        _report_unlisted(root, folder, pairs, rows, problems, warnings)
    samples = []
    for name in sorted(entries):
        image, mask = pairs.get(name, (None, None))
        if image is not None and mask is not None:
            samples.append(Sample(name, image, mask, entries[name]))
    return samples


def _report_unlisted(root, folder, pairs, rows, problems, warnings) -> None:
    csv_path = root / LABELS_CSV
    for name, (_, line_no) in rows.items():
        if name not in pairs:
            problems.append(
                f"{csv_path} line {line_no}: {name} is listed but {folder / name} is missing; add the file or remove the row"
            )
    for name in sorted(set(pairs) - set(rows)):
        warnings.append(f"{folder / name}: not listed in {csv_path}; ignored")


def _check_files(sample: Sample, problems: list[str]) -> None:
    """Cheap checks: non-empty, decodable header + PIL verify, mask size == image size."""
    image_size = _verified_size(sample.image_path, problems)
    mask_size = _verified_size(sample.mask_path, problems)
    if image_size and mask_size and image_size != mask_size:
        problems.append(
            f"{sample.mask_path}: mask is {mask_size[0]}x{mask_size[1]} but {sample.image_path.name} is "
            f"{image_size[0]}x{image_size[1]}; re-export the mask at the image's size"
        )


def _verified_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    if path.stat().st_size == 0:
        problems.append(f"{path}: empty file (0 bytes); re-export it or remove the sample")
        return None
    try:
        with open_image(path) as img:
            size = img.size
            img.verify()
        return size
    except DataError as exc:
        problems.append(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        problems.append(
            f"{path}: cannot be decoded ({type(exc).__name__}: {exc}); re-export it or remove the sample"
        )
        return None


@contextlib.contextmanager
def open_image(path: Path) -> Iterator:
    """PIL's Image.open under our one size rule: up to MAX_IMAGE_PIXELS an image opens without
    PIL's DecompressionBombWarning; above it, a DataError naming the file (never a warning)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError:
            raise DataError(_too_large(path, None)) from None
    with img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise DataError(_too_large(path, img.size))
        yield img


def _too_large(path: Path, size: tuple[int, int] | None) -> str:
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "larger than that"
    return (
        f"{path}: {what}; images are limited to {MAX_IMAGE_PIXELS:,} pixels "
        "(~179 megapixels); downscale it or remove the sample"
    )


def _check_class_counts(root: Path, samples: list[Sample], min_per_class: int, problems) -> None:
    counts = {name: 0 for name in CLASSES}
    for sample in samples:
        if sample.label in counts:
            counts[sample.label] += 1
    for name, count in counts.items():
        if count < min_per_class:
            problems.append(
                f"{root / LABELS_CSV}: class {name!r} has {count} sample(s), fewer than {min_per_class} "
                "(the number of folds); add samples or use fewer folds"
            )


def problems_line(text: str, shown: int = 3) -> str:
    """data.DataError's text (one problem, or 'N problem(s) in the dataset:' and one per line)
    as one line: the count and the first `shown` problems, '; '-separated."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    head, problems = lines[0].rstrip(":"), [p for p in lines[1:] if not p.startswith("... and ")]
    count = head.split(maxsplit=1)[0]
    rest = (int(count) if count.isdigit() else len(problems)) - min(shown, len(problems))
    more = f"; ... and {rest} more" if rest > 0 else ""
    return f"{head}: {'; '.join(problems[:shown])}{more}"

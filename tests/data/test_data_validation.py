"""load_dataset: discovery, sorting, and one clear line per problem naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from histosweep.data import CLASSES, DataError, load_dataset


def _error(root: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(root, **kwargs)
    return str(info.value)


def _rewrite_csv(root: Path, edit) -> None:
    path = root / "train_labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_loads_sorted_labeled_samples(synth_dataset, synth_root):
    ds = synth_dataset
    ids = ds.sample_ids()
    assert len(ids) == 64 and ids == sorted(ids)
    assert ds.labeled and ds.root == synth_root
    labels = ds.labels()
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(len(CLASSES)))
    first = ds.samples[0]
    assert first.image_path.name == "img_0000.png" and first.mask_path.name == "mask_0000.png"


def test_missing_csv_is_named(labeled_copy):
    (labeled_copy / "train_labels.csv").unlink()
    message = _error(labeled_copy)
    assert "train_labels.csv" in message and "sample_index,label" in message


def test_wrong_header_is_named(labeled_copy):
    _rewrite_csv(labeled_copy, lambda lines: ["image,class"] + lines[1:])
    message = _error(labeled_copy)
    assert "train_labels.csv" in message and "header" in message


def test_unknown_label_lists_the_allowed_ones(labeled_copy):
    _rewrite_csv(labeled_copy, lambda lines: lines[:3] + ["img_0002.png,Luminal C"] + lines[4:])
    message = _error(labeled_copy)
    assert "train_labels.csv line 4" in message and "'Luminal C'" in message
    assert all(name in message for name in CLASSES)


def test_duplicated_sample_index(labeled_copy):
    _rewrite_csv(labeled_copy, lambda lines: lines + [lines[1]])
    message = _error(labeled_copy)
    assert "img_0000.png duplicated" in message and "train_labels.csv" in message


def test_image_without_mask_and_mask_without_image(labeled_copy):
    (labeled_copy / "train_data" / "mask_0005.png").unlink()
    (labeled_copy / "train_data" / "img_0006.png").unlink()
    _rewrite_csv(
        labeled_copy, lambda lines: [line for line in lines if not line.startswith("img_0006")]
    )
    message = _error(labeled_copy)
    assert "img_0005.png: no mask" in message and "mask_0005.png" in message
    assert "mask_0006.png: mask without an image" in message
    assert message.startswith("2 problem(s)")  # both found in one pass


def test_listed_but_missing_image(labeled_copy):
    (labeled_copy / "train_data" / "img_0007.png").unlink()
    (labeled_copy / "train_data" / "mask_0007.png").unlink()
    message = _error(labeled_copy)
    assert "img_0007.png is listed" in message and "train_labels.csv line" in message


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot be decoded"),
        (lambda p: p.write_bytes(b"not a png at all" * 10), "cannot be decoded"),
    ],
    ids=["zero-byte", "truncated", "garbage"],
)
def test_broken_image_is_named(labeled_copy, damage, expected):
    path = labeled_copy / "train_data" / "img_0009.png"
    damage(path)
    message = _error(labeled_copy)
    assert str(path) in message and expected in message


def test_mask_size_mismatch(labeled_copy):
    from PIL import Image

    mask = labeled_copy / "train_data" / "mask_0010.png"
    Image.new("L", (20, 30)).save(mask)
    message = _error(labeled_copy)
    assert str(mask) in message and "20x30" in message


def test_empty_dataset(tmp_path):
    (tmp_path / "train_data").mkdir()
    (tmp_path / "train_labels.csv").write_text("sample_index,label\n")
    message = _error(tmp_path)
    assert "train_labels.csv" in message and "empty" in message


def test_min_per_class_counts_the_folds(labeled_copy, synth_dataset):
    rare = int(np.bincount(synth_dataset.labels()).min())
    assert load_dataset(labeled_copy, min_per_class=rare).samples
    message = _error(labeled_copy, min_per_class=rare + 1)
    assert "train_labels.csv" in message and "'Triple negative'" in message and "folds" in message


def test_all_problems_in_one_error(labeled_copy):
    (labeled_copy / "train_data" / "img_0011.png").write_bytes(b"")
    _rewrite_csv(labeled_copy, lambda lines: [lines[0], "img_0000.png,Nope"] + lines[2:])
    lines = _error(labeled_copy).splitlines()
    assert lines[0] == "2 problem(s) in the dataset:"
    assert any("img_0011.png" in line for line in lines) and any("'Nope'" in line for line in lines)


def test_unlabeled_folder_and_train_data_style_subfolder(synth_root, tmp_path):
    test = load_dataset(synth_root / "TEST", labeled=False)
    assert len(test.samples) == 12 and all(s.label is None for s in test.samples)
    with pytest.raises(DataError, match="unlabeled"):
        test.labels()
    nested = tmp_path / "TEST"
    shutil.copytree(synth_root / "TEST", nested / "train_data")
    assert load_dataset(nested, labeled=False).sample_ids() == test.sample_ids()


def test_unlisted_image_is_a_warning(labeled_copy):
    _rewrite_csv(
        labeled_copy, lambda lines: [line for line in lines if not line.startswith("img_0012")]
    )
    ds = load_dataset(labeled_copy)
    assert "img_0012.png" not in ds.sample_ids()
    assert any("img_0012.png" in w and "not listed" in w for w in ds.warnings)


def test_long_problem_lists_are_capped(labeled_copy):
    for mask in sorted((labeled_copy / "train_data").glob("mask_*.png")):
        mask.unlink()
    lines = _error(labeled_copy).splitlines()
    assert lines[0] == "64 problem(s) in the dataset:"
    assert len(lines) == 52 and lines[-1] == "... and 14 more"


def test_latin1_labels_csv_says_save_as_utf8(labeled_copy):
    csv = labeled_copy / "train_labels.csv"
    csv.write_bytes(csv.read_bytes() + "img_é.png,Luminal A\n".encode("latin-1"))  # Excel-style
    message = _error(labeled_copy)
    assert str(csv) in message and "UTF-8" in message and "save it as UTF-8" in message
    assert "\n" not in message and "codec" not in message


def test_same_sample_in_two_formats_names_both_files(labeled_copy):
    from PIL import Image

    folder = labeled_copy / "train_data"
    png = sorted(folder.glob("img_*.png"))[0]
    Image.open(png).convert("RGB").save(png.with_suffix(".jpg"))
    message = _error(labeled_copy)
    assert str(png) in message and str(png.with_suffix(".jpg")) in message
    assert "keep one" in message and "\n" not in message


def test_image_above_the_pixel_limit_is_one_problem_at_validation(labeled_copy):
    """prepare/create validation applies the same limit as decoding (no DecompressionBomb text)."""
    from PIL import Image

    image = sorted((labeled_copy / "train_data").glob("img_*.png"))[0]
    mask = image.with_name(image.name.replace("img_", "mask_"))
    for path in (image, mask):
        Image.new("L", (13_500, 13_400), 0).save(path, compress_level=1)
    message = _error(labeled_copy)
    assert str(image) in message and str(mask) in message
    assert "178,956,970 pixels" in message and "Decompression" not in message

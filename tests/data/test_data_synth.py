"""synthesize: the challenge layout, variable sizes, imbalance, determinism, a learnable signal."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image

from histosweep.data import CLASSES, DataError, open_cache, synthesize


def _digest(root) -> str:
    hasher = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hasher.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return hasher.hexdigest()


def test_challenge_layout(synth_root, truth):
    rows = list(csv.reader(open(synth_root / "train_labels.csv")))
    assert rows[0] == ["sample_index", "label"] and len(rows) == 65
    assert all(label in CLASSES for _, label in rows[1:])
    train = synth_root / "train_data"
    assert len(list(train.glob("img_*.png"))) == len(list(train.glob("mask_*.png"))) == 64
    assert len(list((synth_root / "TEST").glob("img_*.png"))) == 12
    assert set(truth) >= {
        "cartoons",
        "stock_mask_group",
        "slime",
        "exact_duplicates",
        "near_duplicates",
    }
    assert len(truth["test_labels"]) == 12


def test_sizes_vary_and_masks_fit(synth_root):
    sizes = set()
    for image in sorted((synth_root / "train_data").glob("img_*.png"))[:20]:
        with (
            Image.open(image) as img,
            Image.open(image.with_name(image.name.replace("img_", "mask_"))) as mask,
        ):
            assert img.mode == "RGB" and img.size == mask.size and min(img.size) == 96
            assert max(img.size) <= 192 and np.asarray(mask).max() == 255
            sizes.add(img.size)
    assert len(sizes) > 5


def test_last_class_is_rare(synth_dataset):
    counts = np.bincount(synth_dataset.labels(), minlength=4)
    assert counts[3] == counts.min() and 5 <= counts[3] <= 0.15 * counts.sum()


def test_deterministic_for_a_seed(tmp_path):
    one = synthesize(tmp_path / "a", n_train=24, n_test=2, seed=3, short_side=48)
    two = synthesize(tmp_path / "b", n_train=24, n_test=2, seed=3, short_side=48)
    other = synthesize(tmp_path / "c", n_train=24, n_test=2, seed=4, short_side=48)
    assert _digest(one) == _digest(two) != _digest(other)


def test_existing_folder_is_left_alone(tmp_path):
    root = synthesize(tmp_path / "d", n_train=24, n_test=0, seed=0, short_side=48)
    assert (
        synthesize(root, n_train=24, n_test=0, seed=0, short_side=48) == root
    )  # same request: kept
    with pytest.raises(DataError, match="not empty"):
        synthesize(root, n_train=30, n_test=0, seed=0, short_side=48)


def test_real_size_pictures_draw():
    from histosweep.data import _synth_draw as draw

    rng = np.random.default_rng(0)
    rgb, mask = draw.tissue(rng, 1024, 2048, 3)
    assert rgb.shape == (1024, 2048, 3) and rgb.dtype == np.uint8 and mask.shape == (1024, 2048)
    assert 0.02 < mask.mean() < 0.5


def test_class_signal_is_learnable_at_64px(synth_dataset, synth_audit):
    """Mean colour inside the mask at 64 px already separates the classes (a CNN sees more)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    report, cache_dir = synth_audit
    cached = open_cache(synth_dataset, 64, cache_dir=cache_dir, build=False)
    keep = cached.indices_of(report.kept_ids(synth_dataset.sample_ids()))
    images = cached.images[keep].astype(np.float32)  # (N, 64, 64, 3)
    masks = cached.masks[keep].astype(np.float32)[..., None]  # (N, 64, 64, 1)
    inside = (images * masks).sum((1, 2)) / masks.sum((1, 2))  # (N, 3)
    outside = (images * (1 - masks)).sum((1, 2)) / (1 - masks).sum((1, 2)).clip(1)
    features = np.concatenate([inside, inside - outside], axis=1)
    labels = synth_dataset.labels()[keep]
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), features, labels, cv=3).mean()
    assert accuracy > 0.6  # chance is ~0.35


def test_detail_signal_is_in_nucleus_size_at_equal_stain(tmp_path):
    import json

    from histosweep.data._synth_draw import nuclei_spots, nucleus_pattern

    sizes = [len(nucleus_pattern(class_id)) for class_id in range(4)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # bigger nuclei per class ...
    for class_id in range(4):
        cover = nuclei_spots(np.random.default_rng(class_id), 256, 256, class_id).mean()
        assert 0.26 < cover < 0.34  # ... fewer of them: the same stained share, the same colour
    out = synthesize(tmp_path / "d", n_train=24, n_test=2, short_side=64, signal_kind="detail")
    assert json.loads((out / "synth_truth.json").read_text())["params"]["signal_kind"] == "detail"
    with pytest.raises(DataError, match="signal-kind"):
        synthesize(tmp_path / "e", n_train=24, n_test=2, signal_kind="colour")

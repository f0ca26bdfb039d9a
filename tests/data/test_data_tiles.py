"""Input modes: mask crops and native-resolution tile bags (ranking, fallbacks, cache, one decode)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from histosweep import data
from histosweep.data import CropSpec, DataError, TileSpec, load_dataset, open_inputs
from histosweep.data._tiles import otsu_threshold, tissue_mask
from histosweep.model import ConfigError, TrainConfig


def _picture(height=96, width=128):
    rng = np.random.default_rng(0)
    rgb = rng.integers(200, 255, (height, width, 3), dtype=np.uint8)  # pale background
    return rgb


def test_tiles_rank_by_mask_coverage_and_pad_with_zeros():
    rgb = _picture()
    mask = np.zeros(rgb.shape[:2], bool)
    mask[:64, :64] = True  # exactly the top-left 2x2 tiles of 32 px (grid starts at 0, 0)
    mask[64:80, 96:] = True  # half of one tile: below min_mask 0.6
    out, fallback = TileSpec(32, 1.0, 6, 0.6).cut(Image.fromarray(rgb), mask)
    assert fallback == "mask"
    assert int(out["counts"]) == 4
    assert out["masks"][:4].all()  # every chosen tile is all tumour
    assert not out["images"][4:].any() and not out["masks"][4:].any()  # padding is zeros
    corners = [(y, x) for y in (0, 32) for x in (0, 32)]
    for tile in out["images"][:4]:  # the pixels of one of the four covered grid tiles
        assert any((rgb[y:y + 32, x:x + 32] == tile).all() for y, x in corners)


def test_mask_below_min_takes_the_best_covered_tiles():
    rgb = _picture()
    mask = np.zeros(rgb.shape[:2], bool)
    mask[10:20, 10:20] = True  # 100 of 1024 px of one tile
    out, fallback = TileSpec(32, 1.0, 4, 0.5).cut(Image.fromarray(rgb), mask)
    assert fallback == "mask_below_min"
    assert int(out["counts"]) == 1
    assert out["masks"][0].sum() == 100


def test_empty_mask_ranks_by_otsu_tissue():
    rgb = _picture()
    rgb[32:64, 96:128] = 60  # one dark (stained) tile
    out, fallback = TileSpec(32, 1.0, 2, 0.5).cut(Image.fromarray(rgb), np.zeros(rgb.shape[:2], bool))
    assert fallback == "tissue"
    assert int(out["counts"]) == 2
    assert (out["images"][0] == 60).all()  # the darkest tissue first
    assert out["masks"][:2].all()  # empty mask: the whole tile is the mask, as in whole mode


def test_image_smaller_than_a_tile_becomes_one_letterboxed_tile():
    rgb = _picture(20, 40)
    mask = np.ones(rgb.shape[:2], bool)
    out, fallback = TileSpec(64, 1.0, 3, 0.5).cut(Image.fromarray(rgb), mask)
    assert fallback == "small_image"
    assert int(out["counts"]) == 1 and out["images"][0].any()
    assert not out["images"][1:].any()


def test_tile_scale_halves_the_picture_before_cutting():
    rgb = _picture(128, 128)
    mask = np.ones(rgb.shape[:2], bool)
    full, _ = TileSpec(32, 1.0, 64, 0.5).cut(Image.fromarray(rgb), mask)
    half, _ = TileSpec(32, 0.5, 64, 0.5).cut(Image.fromarray(rgb), mask)
    assert (int(full["counts"]), int(half["counts"])) == (16, 4)


def test_mask_crop_resizes_the_grown_bounding_box():
    rgb = _picture()
    rgb[40:60, 50:70] = 0
    mask = np.zeros(rgb.shape[:2], bool)
    mask[40:60, 50:70] = True
    out, fallback = CropSpec(32, "stretch", 0.0).cut(Image.fromarray(rgb), mask)
    assert fallback == "mask"
    assert out["images"].max() == 0 and out["masks"].all()  # exactly the box, nothing around it
    out, fallback = CropSpec(32, "stretch", 0.5).cut(Image.fromarray(rgb), mask)
    assert out["images"].max() > 0 and not out["masks"].all()  # the margin shows context
    _, fallback = CropSpec(32, "stretch", 0.1).cut(Image.fromarray(rgb), np.zeros_like(mask))
    assert fallback == "whole_image"


def test_otsu_splits_a_bimodal_picture():
    grey = np.concatenate([np.full(500, 50), np.full(500, 200)]).astype(np.uint8)
    assert 50 <= otsu_threshold(grey) < 200
    rgb = np.stack([grey.reshape(25, 40)] * 3, -1)
    assert tissue_mask(rgb).sum() == 500


def test_config_rejects_bad_tile_values():
    for bad in ({"input_mode": "patches"}, {"tile_size": 8}, {"tile_scale": 0.0},
                {"tiles_per_image": 0}, {"tile_min_mask": 1.5}, {"tile_pool": "sum"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig(**bad)


@pytest.fixture()
def small_ds(labeled_copy):
    ds = load_dataset(labeled_copy)
    ds.samples = ds.samples[:10]
    return ds


def test_open_inputs_builds_tiles_once_with_layout_and_fallbacks(small_ds, tmp_path, monkeypatch):
    cfg = TrainConfig(input_mode="tiles", tile_size=32, tiles_per_image=5, tile_min_mask=0.3)
    tiles = open_inputs(small_ds, cfg, cache_dir=tmp_path, workers=1, progress=False)
    n = len(small_ds.samples)
    assert tiles.images.shape == (n, 5, 32, 32, 3) and tiles.images.dtype == np.uint8
    assert tiles.masks.shape == (n, 5, 32, 32) and set(np.unique(tiles.masks)) <= {0, 1}
    assert tiles.counts.shape == (n,) and tiles.counts.min() >= 1 and tiles.counts.max() <= 5
    for i, k in enumerate(tiles.counts):
        assert not tiles.images[i, k:].any()  # padding after the valid tiles
    index = json.loads((tiles.path / "index.json").read_text())
    assert tiles.path.name == "tiles-32-s1-k5-m0.3" and index["sample_ids"] == tiles.sample_ids
    assert index["fallbacks"] == tiles.fallbacks

    def no_decoding(job):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(data._pool, "decode_sample", no_decoding)
    again = open_inputs(small_ds, cfg, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.counts, tiles.counts)


def test_one_decode_per_image_builds_whole_crop_and_tiles_together(small_ds, tmp_path, monkeypatch):
    real, opened = data._pool.load_rgb, []

    def counting(path):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(data._pool, "load_rgb", counting)
    targets = [(32, "stretch"), CropSpec(32, "pad", 0.1), TileSpec(32, 1.0, 3, 0.5)]
    data.build_inputs(small_ds, targets, cache_dir=tmp_path, workers=1, progress=False)
    assert len(opened) == len(small_ds.samples) == len(set(opened))
    whole = data.open_cache(small_ds, 32, "stretch", cache_dir=tmp_path, build=False)
    assert whole.images.shape == (len(small_ds.samples), 32, 32, 3)
    features = json.loads((whole.path.parent / "features.json").read_text())["samples"]
    assert set(features) == set(small_ds.sample_ids())  # the audit's features came with it
    crop = open_inputs(small_ds, TrainConfig(input_mode="mask_crop", resolution=32,
                                             resize_mode="pad"), cache_dir=tmp_path, build=False)
    assert crop.images.shape == (len(small_ds.samples), 32, 32, 3) and crop.input_mode == "mask_crop"


def test_failed_tile_build_leaves_nothing(small_ds, tmp_path, monkeypatch):
    real, calls = data._pool.decode_sample, []

    def fail_midway(job):
        calls.append(job[0])
        if len(calls) == 4:
            raise DataError("simulated decode failure")
        return real(job)

    monkeypatch.setattr(data._pool, "decode_sample", fail_midway)
    cfg = TrainConfig(input_mode="tiles", tile_size=32, tiles_per_image=3)
    with pytest.raises(DataError, match="simulated"):
        open_inputs(small_ds, cfg, cache_dir=tmp_path, workers=1, progress=False)
    assert not [p for p in tmp_path.rglob("*") if "tiles-" in p.name]
    with pytest.raises(DataError, match="histosweep prepare"):
        open_inputs(small_ds, cfg, cache_dir=tmp_path, build=False)

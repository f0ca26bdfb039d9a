"""The uint8 cache: round trip, sharing, invalidation, no half cache, unwritable folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histosweep import data
from histosweep.data import (
    DataError,
    build_cache,
    dataset_fingerprint,
    decode_and_resize,
    load_dataset,
    open_cache,
)


@pytest.fixture()
def small_ds(labeled_copy):
    """The first 10 samples of a writable copy: quick to cache."""
    ds = load_dataset(labeled_copy)
    ds.samples = ds.samples[:10]
    return ds


def _entries(cache_dir):
    return sorted(p.relative_to(cache_dir).as_posix() for p in cache_dir.rglob("*"))


def test_round_trip_matches_decode_and_resize(small_ds, tmp_path):
    build_cache(
        small_ds,
        resolutions=[32, 48],
        modes=("stretch", "pad"),
        cache_dir=tmp_path,
        workers=1,
        progress=False,
    )
    for resolution, mode in [(32, "stretch"), (48, "pad")]:
        cached = open_cache(small_ds, resolution, mode, cache_dir=tmp_path, build=False)
        assert isinstance(cached.images, np.memmap) and not cached.images.flags.writeable
        assert cached.images.shape == (10, resolution, resolution, 3) and cached.masks.shape == (
            10,
            resolution,
            resolution,
        )
        assert cached.sample_ids == small_ds.sample_ids() and cached.mode == mode
        for row, sample in enumerate(small_ds.samples):
            image, mask = decode_and_resize(sample.image_path, sample.mask_path, resolution, mode)
            np.testing.assert_array_equal(cached.images[row], image)
            np.testing.assert_array_equal(cached.masks[row], mask)
        assert set(np.unique(cached.masks)) <= {0, 1}


def test_process_pool_gives_the_same_cache(small_ds, tmp_path):
    build_cache(small_ds, resolutions=[32], cache_dir=tmp_path / "one", workers=1, progress=False)
    build_cache(small_ds, resolutions=[32], cache_dir=tmp_path / "two", workers=2, progress=False)
    one = open_cache(small_ds, 32, cache_dir=tmp_path / "one", build=False)
    two = open_cache(small_ds, 32, cache_dir=tmp_path / "two", build=False)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.masks, two.masks)


def test_second_open_builds_nothing(small_ds, tmp_path, monkeypatch):
    first = open_cache(small_ds, 32, cache_dir=tmp_path, progress=False)
    files = {p: p.stat().st_mtime_ns for p in first.path.iterdir()}

    def no_decoding(job):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(data._pool, "decode_sample", no_decoding)
    again = open_cache(small_ds, 32, cache_dir=tmp_path, progress=False)
    build_cache(small_ds, resolutions=[32], cache_dir=tmp_path, progress=False)
    assert again.path == first.path
    assert {p: p.stat().st_mtime_ns for p in again.path.iterdir()} == files


def test_changing_one_file_changes_fingerprint_and_path(small_ds, tmp_path):
    before = dataset_fingerprint(small_ds)
    path_before = open_cache(small_ds, 32, cache_dir=tmp_path, progress=False).path
    image = small_ds.samples[4].image_path
    Image.open(image).transpose(Image.Transpose.ROTATE_180).save(
        image
    )  # same name and size, new content
    changed = load_dataset(small_ds.root)
    changed.samples = changed.samples[:10]
    assert dataset_fingerprint(changed) != before
    path_after = open_cache(changed, 32, cache_dir=tmp_path, progress=False).path
    assert path_after != path_before and path_before.is_dir()


def test_fingerprint_covers_labels(small_ds):
    from dataclasses import replace

    before = dataset_fingerprint(small_ds)
    first = small_ds.samples[0]
    other = "Luminal B" if first.label != "Luminal B" else "Luminal A"
    relabelled = data.Dataset(
        small_ds.root, [replace(first, label=other)] + small_ds.samples[1:], True
    )
    assert dataset_fingerprint(relabelled) != before


def test_failed_build_leaves_no_half_cache(small_ds, tmp_path, monkeypatch):
    real = data._pool.decode_sample
    calls = []

    def fail_midway(job):
        calls.append(job[0])
        if len(calls) == 5:
            raise DataError("simulated decode failure")
        return real(job)

    monkeypatch.setattr(data._pool, "decode_sample", fail_midway)
    with pytest.raises(DataError, match="simulated"):
        build_cache(small_ds, resolutions=[32, 48], cache_dir=tmp_path, workers=1, progress=False)
    leftovers = _entries(tmp_path)
    assert not [e for e in leftovers if e.endswith(("32-stretch", "48-stretch")) or ".tmp" in e], (
        leftovers
    )
    with pytest.raises(DataError, match="histosweep prepare"):
        open_cache(small_ds, 32, cache_dir=tmp_path, build=False)


def test_unwritable_cache_folder_names_folder_and_env(small_ds, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DataError) as info:
        build_cache(small_ds, resolutions=[32], cache_dir=blocker, workers=1, progress=False)
    assert str(blocker) in str(info.value) and "HISTOSWEEP_CACHE" in str(info.value)


def test_default_cache_dir_follows_the_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HISTOSWEEP_CACHE", str(tmp_path / "c"))
    assert data.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HISTOSWEEP_CACHE")
    assert data.default_cache_dir().parts[-2:] == (".cache", "histosweep")


def test_bad_mode_and_resolution_are_errors(small_ds, tmp_path):
    with pytest.raises(DataError, match="resize mode"):
        build_cache(small_ds, resolutions=[32], modes=("zoom",), cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="too small"):
        build_cache(small_ds, resolutions=[4], cache_dir=tmp_path, progress=False)


def _build_in_child(args):
    ds, cache_dir = args
    build_cache(ds, resolutions=[32, 40], cache_dir=cache_dir, workers=1, progress=False)
    return True


def test_concurrent_builders_both_succeed(small_ds, tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(3) as pool:
        assert pool.map(_build_in_child, [(small_ds, tmp_path)] * 3) == [True] * 3
    cached = open_cache(small_ds, 40, cache_dir=tmp_path, build=False)
    image, mask = decode_and_resize(
        small_ds.samples[3].image_path, small_ds.samples[3].mask_path, 40, "stretch"
    )
    np.testing.assert_array_equal(cached.images[3], image)
    assert not [e for e in _entries(tmp_path) if ".tmp" in e or ".old-" in e]

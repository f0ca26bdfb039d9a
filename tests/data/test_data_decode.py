"""decode_and_resize: mode conversion, mask thresholding, resize modes, the empty-mask fallback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histosweep.data import DataError, build_cache, decode_and_resize, load_dataset, open_cache


def _save_pair(folder, image: Image.Image, mask: np.ndarray, name="0000"):
    image.save(folder / f"img_{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(folder / f"mask_{name}.png")
    return folder / f"img_{name}.png", folder / f"mask_{name}.png"


def _gradient(width=48, height=32) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(_gradient())
    image = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    img, msk = _save_pair(tmp_path, image, np.ones((32, 48), bool))
    rgb, mask = decode_and_resize(img, msk, 40, "stretch")
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert mask.shape == (40, 40) and mask.dtype == np.uint8 and set(np.unique(mask)) == {1}
    if mode in ("L", "LA", "I;16"):  # grey stays grey
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((32, 48, 4), np.uint8)  # fully transparent black
    img, msk = _save_pair(tmp_path, Image.fromarray(rgba, "RGBA"), np.ones((32, 48), bool))
    rgb, _ = decode_and_resize(img, msk, 32, "stretch")
    assert (rgb == 255).all()


@pytest.mark.parametrize("mask_mode", ["1", "L", "LA", "RGB", "RGBA", "P"])
def test_mask_is_thresholded_above_zero(tmp_path, mask_mode):
    img = tmp_path / "img_0000.png"
    Image.fromarray(_gradient(64, 64)).save(img)
    values = np.zeros((64, 64), np.uint8)
    values[:, 32:] = 1  # faint but > 0: still tumour
    mask_image = Image.fromarray(values * (255 if mask_mode == "1" else 1), "L").convert(mask_mode)
    mask_image.save(tmp_path / "mask_0000.png")
    _, mask = decode_and_resize(img, tmp_path / "mask_0000.png", 32, "stretch")
    assert mask[:, :15].sum() == 0 and (mask[:, 17:] == 1).all()


def test_pad_mode_letterboxes_with_zeros(tmp_path):
    img, msk = _save_pair(
        tmp_path, Image.fromarray(np.full((20, 80, 3), 200, np.uint8)), np.ones((20, 80), bool)
    )
    rgb, mask = decode_and_resize(img, msk, 64, "pad")
    assert rgb.shape == (64, 64, 3)
    assert (rgb[:20] == 0).all() and (rgb[-20:] == 0).all() and (rgb[28:36] == 200).all()
    assert mask[:20].sum() == 0 and (mask[28:36] == 1).all()


def test_reflect_mode_fills_the_square_with_content(tmp_path):
    img, msk = _save_pair(
        tmp_path, Image.fromarray(np.full((20, 80, 3), 200, np.uint8)), np.ones((20, 80), bool)
    )
    rgb, mask = decode_and_resize(img, msk, 64, "reflect")
    assert rgb.shape == (64, 64, 3) and (rgb == 200).all() and (mask == 1).all()


def test_stretch_keeps_a_small_tumour(tmp_path):
    mask = np.zeros((400, 400), bool)
    mask[200:203, 200:203] = True  # 9 pixels: a majority-vote resize to 16 px would erase it
    img, msk = _save_pair(tmp_path, Image.fromarray(np.zeros((400, 400, 3), np.uint8)), mask)
    _, small = decode_and_resize(img, msk, 16, "stretch")
    assert small.sum() >= 1


def test_unknown_mode_is_an_error(tmp_path):
    img, msk = _save_pair(tmp_path, Image.fromarray(_gradient()), np.ones((32, 48), bool))
    with pytest.raises(DataError, match="resize mode"):
        decode_and_resize(img, msk, 32, "squash")


def test_empty_mask_becomes_full_with_a_warning(labeled_copy, tmp_path):
    mask_path = labeled_copy / "train_data" / "mask_0003.png"
    size = Image.open(mask_path).size
    Image.new("L", size, 0).save(mask_path)
    _, mask = decode_and_resize(
        labeled_copy / "train_data" / "img_0003.png", mask_path, 32, "stretch"
    )
    assert (mask == 1).all()
    ds = load_dataset(labeled_copy)
    build_cache(ds, resolutions=[32], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert any(str(mask_path) in w and "empty" in w for w in ds.warnings)
    fresh = load_dataset(labeled_copy)  # a later process: the warning comes from the cache index
    cached = open_cache(fresh, 32, cache_dir=tmp_path / "cache", build=False)
    assert (cached.masks[ds.sample_ids().index("img_0003.png")] == 1).all()
    assert any(str(mask_path) in w for w in fresh.warnings)


def test_16_bit_grey_scales_by_bit_depth_not_by_brightest_pixel(tmp_path):
    """65535 -> 255 always: a dark 16-bit image (peak 200 of 65535) stays black, a bright one
    scales linearly; a 16-bit mask is tumour where > 0."""
    from histosweep.data._decode import load_mask, load_rgb

    ramp = (np.arange(48 * 32).reshape(32, 48) * 42).astype(np.uint16)  # 0 .. 64470
    dark = (np.arange(48 * 32).reshape(32, 48) % 201).astype(np.uint16)  # 0 .. 200 of 65535
    for name, grey in (("ramp", ramp), ("dark", dark)):
        Image.fromarray(grey).save(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").mode == "I;16"
        rgb = np.asarray(load_rgb(tmp_path / f"{name}.png"))
        want = np.round(grey.astype(np.float64) * 255 / 65535).astype(np.uint8)
        assert rgb.dtype == np.uint8 and (np.abs(rgb[..., 0].astype(int) - want) <= 1).all(), name
    mask16 = np.zeros((32, 48), np.uint16)
    mask16[4:9, 5:20], mask16[20, 30] = 65535, 1  # any value > 0 is tumour
    Image.fromarray(mask16).save(tmp_path / "mask16.png")
    assert (load_mask(tmp_path / "mask16.png") == (mask16 > 0)).all()


def _big_grey_png(path, width: int, height: int) -> None:
    Image.new("L", (width, height), 0).save(path, compress_level=1)  # all black: a few KB


def test_images_up_to_the_pixel_limit_decode_without_bomb_warning_and_larger_are_refused(tmp_path):
    """One rule (histosweep.constants.MAX_IMAGE_PIXELS, PIL's hard limit): 100 MP (above PIL's
    89 MP warning) loads silently; 180 MP is one DataError naming the file and the limit."""
    import warnings

    from histosweep.constants import MAX_IMAGE_PIXELS
    from histosweep.data._decode import load_mask, load_rgb

    big, huge = tmp_path / "big.png", tmp_path / "huge.png"
    _big_grey_png(big, 10_000, 10_000)  # 100 MP: between 89 and 179 MP
    _big_grey_png(huge, 13_500, 13_400)  # 180.9 MP
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would raise here
        assert load_rgb(big).size == (10_000, 10_000)
        assert load_mask(big).shape == (10_000, 10_000)
    for load in (load_rgb, load_mask):
        with pytest.raises(DataError) as info:
            load(huge)
        message = str(info.value)
        assert str(huge) in message and f"{MAX_IMAGE_PIXELS:,} pixels" in message
        assert "\n" not in message and "Decompression" not in message

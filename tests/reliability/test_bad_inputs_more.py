"""More of the bad-input catalogue (issue 16): inputs refused by `prepare` and `create` before
any study exists. Same contract as test_bad_inputs.py: the real CLI exits 1 with one final
`error:` line naming the culprit and the fix, no traceback, the output folders untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.reliability._helpers import PASSWORD, error_line, run_cli, snapshot, tiny_dataset
from tests.reliability.test_bad_inputs import Case, _create, _data, _prepare, _space

pytestmark = pytest.mark.slow


def latin1_labels_csv(tmp):
    data = _data(tmp)
    csv = data / "train_labels.csv"
    csv.write_bytes(csv.read_bytes() + "img_é.png,Luminal A\n".encode("latin-1"))
    return _prepare(tmp, data, [str(csv), "not UTF-8", "save it as UTF-8"])


def same_sample_png_and_jpg(tmp):
    data = _data(tmp)
    png = data / "train_data" / "img_0001.png"
    Image.open(png).convert("RGB").save(png.with_suffix(".jpg"))
    return _prepare(tmp, data, [str(png), str(png.with_suffix(".jpg")), "keep one"])


def image_above_pixel_limit(tmp):
    data = _data(tmp)
    for name in ("img_0002.png", "mask_0002.png"):
        Image.new("L", (13_500, 13_400), 0).save(data / "train_data" / name, compress_level=1)
    return Case(_prepare(tmp, data, []).args,
                [str(data / "train_data" / "img_0002.png"), "178,956,970 pixels", "downscale"],
                [tmp / "cache"], listing=True)  # image and mask: two problems, one listing


def study_name_with_slash(tmp):
    case = _create(tmp, _data(tmp), ["'team/a'", "'/'", "'team-a'"])
    case.args[1] = "team/a"
    return case


def space_fractional_int_step(tmp):
    space = _space(tmp, "epochs = 2", "epochs = { low = 2, high = 10, step = 0.5 }")
    return _create(tmp, _data(tmp), [str(space), "epochs", "step 0.5", "whole number"], space=space)


def space_searched_seed(tmp):
    space = _space(tmp, "epochs = 2", "epochs = 2\nseed = [0, 1, 2]")
    return _create(tmp, _data(tmp), [str(space), "seed", "--seed"], space=space)


CATALOGUE = [latin1_labels_csv, same_sample_png_and_jpg, image_above_pixel_limit,
             study_name_with_slash, space_fractional_int_step, space_searched_seed]


@pytest.mark.parametrize("build", CATALOGUE, ids=[f.__name__ for f in CATALOGUE])
def test_bad_input_before_a_study_is_one_clear_line(build, tmp_path):
    case = build(tmp_path)
    before = snapshot(tmp_path, *case.watch)
    proc = run_cli(*case.args, cwd=tmp_path)
    message = error_line(proc, listing=case.listing)
    missing = [c for c in case.culprit if c not in message]
    assert not missing, f"{missing} not named in: {message}"
    assert snapshot(tmp_path, *case.watch) == before


def test_16_bit_png_images_and_masks_prepare_like_their_8_bit_twins(tmp_path):
    """A dataset saved as 16-bit grey PNGs builds the same cache as its 8-bit twin (v16 * 255 /
    65535): bright images (v * 257) and dark ones (raw 0..255 of 65535, which stay near black),
    masks 0/65535 read as > 0."""
    from histosweep.data import load_dataset, open_cache

    caches = {}
    for depth in (8, 16):
        data = tiny_dataset(tmp_path / f"d{depth}")
        for i, png in enumerate(sorted((data / "train_data").glob("*.png"))):
            grey = np.asarray(Image.open(png).convert("L")).astype(np.int64)
            v16 = grey * 257 if png.name.startswith("mask_") or i % 2 == 0 else grey
            out = v16 if depth == 16 else (v16 * 255 + 32767) // 65535
            Image.fromarray(out.astype(np.uint16 if depth == 16 else np.uint8)).save(png)
        cache = tmp_path / f"cache{depth}"
        proc = run_cli("prepare", str(data), "--resolutions", "32", "--cache", str(cache),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        caches[depth] = open_cache(load_dataset(data), 32, cache_dir=cache, progress=False)
    assert np.abs(caches[8].images.astype(int) - caches[16].images.astype(int)).max() <= 1
    assert (caches[8].masks == caches[16].masks).all() and caches[16].masks.any()


def test_debug_traceback_hides_the_password(tmp_path):
    """--debug prints the traceback through the same redaction as the error line: a gRPC URL with
    credentials fails inside Optuna with the password in the exception text."""
    url = f"grpc://histosweep:{PASSWORD}@127.0.0.1:13000"
    proc = run_cli("status", "x", "--storage", url, "--debug", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr  # the traceback is there ...
    assert PASSWORD not in proc.stdout + proc.stderr  # ... without the password
    assert "***" in proc.stderr

"""Bad input to `predict` and `export-best` is refused up front, in one line, before any image
is decoded, any trial selected or any checkpoint fetched (through the real CLI, real files).

"Before decoding" is shown with a test image whose header verifies but whose pixels cannot be
decoded: were the images decoded first, the error would name that image instead."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from histosweep.cli import main

# a module import, so that test_export's tests are not collected a second time here
from tests.bundle import test_export as export_tests


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished tiny study and its bundle (exported without --test)."""
    paths = export_tests.build_tiny_study(tmp_path_factory.mktemp("early-study"))
    out = paths.root / "bundle"
    assert main(export_tests.export_args(paths, out)) == 0
    return paths, out


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _error(capsys, *args: str) -> str:
    """Exit 1 and exactly one `error:` line on stderr, no traceback, nothing 'unexpected'."""
    code, _, err = _run(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0], lines[0]
    return lines[0]


def _poisoned_png(path: Path) -> None:
    """Zero the compressed pixel data (fixing the CRCs): PIL's verify passes, decoding fails."""
    data, out, pos = path.read_bytes(), bytearray(path.read_bytes()[:8]), 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IDAT":
            body = bytes(len(body))
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        pos += 12 + n
    path.write_bytes(bytes(out))


@pytest.fixture()
def poisoned_test(built, tmp_path) -> Path:
    """A copy of the test folder whose img_0000.png validates but cannot be decoded."""
    paths, _ = built
    test = tmp_path / "poisoned"
    shutil.copytree(paths.test, test)
    _poisoned_png(test / "img_0000.png")
    return test


def _predict(bundle: Path, images: Path, out, *extra: str) -> list[str]:
    return ["predict", str(bundle), "--images", str(images), "--out", str(out), "--no-progress", *extra]


def test_the_poisoned_image_fails_only_when_decoded(built, poisoned_test, tmp_path, capsys):
    """The premise of the tests below: with good arguments, decoding is what fails."""
    _, bundle = built
    line = _error(capsys, *_predict(bundle, poisoned_test, tmp_path / "s.csv"))
    assert "img_0000.png: cannot be decoded" in line
    assert not (tmp_path / "s.csv").exists()


# --- predict --out -----------------------------------------------------------------------
def test_predict_out_that_is_a_folder_is_refused_before_decoding(built, poisoned_test, tmp_path, capsys):
    _, bundle = built
    folder = tmp_path / "d"
    folder.mkdir()
    line = _error(capsys, *_predict(bundle, poisoned_test, folder))
    assert f"--out {folder} is a folder" in line and "submission.csv" in line
    assert list(folder.iterdir()) == []


def test_predict_out_under_a_regular_file_is_refused_before_decoding(built, poisoned_test, tmp_path, capsys):
    _, bundle = built
    blocker = tmp_path / "space.toml"
    blocker.write_text("not a folder\n")
    out = blocker / "x.csv"
    line = _error(capsys, *_predict(bundle, poisoned_test, out))
    assert f"--out {out}" in line and f"{blocker} is a file, not a folder" in line
    assert blocker.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poisoned", "space.toml"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_predict_out_in_an_unwritable_folder_is_refused_before_decoding(built, poisoned_test, capsys):
    """/proc refuses new files even for root, where permission bits would not."""
    _, bundle = built
    line = _error(capsys, *_predict(bundle, poisoned_test, "/proc/x.csv"))
    assert "--out /proc/x.csv: cannot write in /proc" in line and "writable folder" in line


def test_predict_out_in_a_new_folder_still_works(built, tmp_path, capsys):
    """The up-front check creates nothing and leaves no probe file: the folder is made on write."""
    paths, bundle = built
    out = tmp_path / "new" / "deeper" / "s.csv"
    code, stdout, err = _run(capsys, *_predict(bundle, paths.test, out))
    assert code == 0 and "8 rows" in stdout, err
    assert [p.name for p in out.parent.iterdir()] == ["s.csv"]


def _without_masks(source: Path, copy: Path, *numbers: int) -> Path:
    """A copy of the test folder with the masks of these sample numbers removed."""
    shutil.copytree(source, copy)
    for number in numbers:
        (copy / f"mask_{number:04d}.png").unlink()
    return copy


# --- predict --batch-size ---------------------------------------------------------------------
@pytest.mark.parametrize("size", ["0", "-4"])
def test_predict_batch_size_below_one_is_refused_before_decoding(built, poisoned_test, tmp_path,
                                                                 capsys, size):
    _, bundle = built
    line = _error(capsys, *_predict(bundle, poisoned_test, tmp_path / "s.csv", "--batch-size", size))
    assert f"--batch-size {size}: must be >= 1" in line
    assert not (tmp_path / "s.csv").exists()


def test_predict_test_folder_with_several_problems_is_one_line(built, tmp_path, capsys):
    paths, bundle = built
    test = _without_masks(paths.test, tmp_path / "test", 3, 5)
    line = _error(capsys, *_predict(bundle, test, tmp_path / "s.csv"))
    assert "2 problem(s)" in line and "img_0003.png: no mask" in line and "img_0005.png: no mask" in line
    assert not (tmp_path / "s.csv").exists()


# --- export-best --test / --out -----------------------------------------------------------------
def test_export_test_folder_without_a_mask_is_refused_before_selection(built, tmp_path, capsys):
    """Progress stays on: the stage lines (selecting, fetching, scoring) would show work done."""
    paths, _ = built
    test = _without_masks(paths.test, tmp_path / "T2", 3)
    out = tmp_path / "parent" / "e"
    args = [a for a in export_tests.export_args(paths, out, "--test", str(test)) if a != "--no-progress"]
    line = _error(capsys, *args)
    assert f"{test / 'img_0003.png'}: no mask" in line
    assert not (tmp_path / "parent").exists()  # no bundle, no temp folder, no lock file


def test_export_out_under_a_regular_file_is_refused_before_selection(built, tmp_path, capsys):
    paths, _ = built
    blocker = tmp_path / "space.toml"
    blocker.write_text("x\n")
    args = [a for a in export_tests.export_args(paths, blocker / "e") if a != "--no-progress"]
    line = _error(capsys, *args)
    assert f"{blocker} is a file, not a folder" in line
    assert blocker.read_text() == "x\n"


# --- export-best --data -----------------------------------------------------------------------
def test_export_with_data_that_is_not_a_training_set_names_the_problems(built, tmp_path, capsys):
    """The lockbox re-check is skipped with a warning (README: `--data` only says where the
    data moved); the warning says what is wrong with the folder, not just how many problems."""
    paths, _ = built
    out = tmp_path / "e2"
    code, stdout, err = _run(capsys, *export_tests.export_args(paths, out, "--data", str(paths.test),
                                                               "--json"))
    assert code == 0, err
    warnings = json.loads(stdout)["warnings"]
    assert len(warnings) == 1
    text = warnings[0]
    assert f"training data at {paths.test} is not readable" in text
    assert "problem(s) in the dataset: " in text and "train_labels.csv: missing" in text
    assert "pass --data DATA" in text
    assert f"warning: {text}" in err.splitlines()
    assert json.loads((out / "manifest.json").read_text())["metrics"]["lockbox_f1_bundle"] is None

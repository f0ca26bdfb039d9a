"""`histosweep predict BUNDLE --images TEST --out CSV`: ids, order, label strings, count, the same
file as export-best --test, and one-line errors for broken inputs (through the real CLI)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from histosweep.cli import main

# a module import, so that test_export's tests are not collected a second time here
from tests.bundle import test_export as export_tests


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A finished tiny study exported with --test; returns (study paths, bundle folder)."""
    paths = export_tests.build_tiny_study(tmp_path_factory.mktemp("predict-study"))
    out = paths.root / "bundle"
    assert main(export_tests.export_args(paths, out, "--test", str(paths.test))) == 0
    return paths, out


def predict(capsys, bundle_dir, images, out, *extra):
    code = main(["predict", str(bundle_dir), "--images", str(images), "--out", str(out),
                 "--no-progress", *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_predict_writes_one_sorted_row_per_test_image(bundle, tmp_path, capsys):
    from histosweep.data import CLASSES

    paths, b = bundle
    out = tmp_path / "sub" / "submission.csv"
    code, stdout, _ = predict(capsys, b, paths.test, out)
    assert code == 0 and "8 rows" in stdout
    header, rows = read_rows(out)
    assert header == ["sample_index", "label"]
    expected = sorted(p.name for p in paths.test.glob("img_*.png"))
    assert len(expected) == 8
    assert [r[0] for r in rows] == expected  # every image once, sorted
    assert all(r[1] in CLASSES for r in rows)
    assert out.read_bytes() == (b / "submission.csv").read_bytes()  # same code as export-best --test


def test_predict_tta_and_json(bundle, tmp_path, capsys):
    paths, b = bundle
    test = tmp_path / "three"  # TTA runs 8 views per image: keep it small
    test.mkdir()
    for k in ("0005", "0001", "0006"):
        for kind in ("img", "mask"):
            shutil.copy(paths.test / f"{kind}_{k}.png", test)
    out = tmp_path / "tta.csv"
    code, stdout, _ = predict(capsys, b, test, out, "--tta", "--batch-size", "2", "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["rows"] == 3 and summary["tta"] is True
    assert sum(summary["label_counts"].values()) == 3
    assert [r[0] for r in read_rows(out)[1]] == ["img_0001.png", "img_0005.png", "img_0006.png"]


def test_bundle_loads_with_normalised_weights(bundle):
    from histosweep.bundle import load_bundle

    _, b = bundle
    loaded = load_bundle(b)
    assert sum(m.weight for m in loaded.members) == pytest.approx(1.0)
    assert all(m.weight > 0 and m.folds for m in loaded.members)
    assert all(f.path.is_file() for m in loaded.members for f in m.folds)
    assert loaded.offsets.shape == (4,)


def _error(capsys, *args) -> str:
    code = main(list(args))
    _, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_training_folder_is_refused(bundle, tmp_path, capsys):
    """`--images DATA` (the training set) would predict images the models trained on."""
    paths, b = bundle
    line = _error(capsys, "predict", str(b), "--images", str(paths.data), "--out", str(tmp_path / "s.csv"))
    assert str(paths.data) in line and "training dataset" in line and "test folder" in line
    assert not (tmp_path / "s.csv").exists()


def test_csv_rows_are_quoted_by_the_csv_module(tmp_path):
    from histosweep.bundle._predict import submission_text

    text = submission_text(["img_b,1.png", "img_a.png"], [1, 0], ["x", 'y "quoted"'])
    assert list(csv.reader(text.splitlines())) == [
        ["sample_index", "label"], ["img_a.png", "x"], ["img_b,1.png", 'y "quoted"']]


def test_empty_test_folder(bundle, tmp_path, capsys):
    _, b = bundle
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error(capsys, "predict", str(b), "--images", str(empty), "--out", str(tmp_path / "s.csv"))
    assert str(empty) in line and "no samples" in line
    assert not (tmp_path / "s.csv").exists()


def test_image_without_mask(bundle, tmp_path, capsys):
    paths, b = bundle
    test = tmp_path / "test"
    shutil.copytree(paths.test, test)
    (test / "mask_0003.png").unlink()
    line = _error(capsys, "predict", str(b), "--images", str(test), "--out", str(tmp_path / "s.csv"))
    assert "img_0003.png: no mask" in line


def test_bundle_missing_a_fold_file(bundle, tmp_path, capsys):
    paths, b = bundle
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    victim = sorted((broken / "folds").iterdir())[0]
    victim.unlink()
    line = _error(capsys, "predict", str(broken), "--images", str(paths.test), "--out",
                  str(tmp_path / "s.csv"))
    assert victim.name in line and "missing" in line
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(("damage", "needle"), [
    ("delete", "manifest.json: missing"),
    ("garble", "not valid JSON"),
    ("no-decision", "missing key(s) decision"),
    ("format-1", "bundle format 1, this histosweep reads 2"),
])
def test_bad_manifest(bundle, tmp_path, capsys, damage, needle):
    paths, b = bundle
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    manifest = broken / "manifest.json"
    if damage == "delete":
        manifest.unlink()
    elif damage == "garble":
        manifest.write_text("{not json")
    elif damage == "no-decision":
        doc = json.loads(manifest.read_text())
        del doc["decision"]
        manifest.write_text(json.dumps(doc))
    else:  # a bundle of the single-trial, holdout-selected era
        doc = json.loads(manifest.read_text())
        doc["format"] = 1
        manifest.write_text(json.dumps(doc))
    line = _error(capsys, "predict", str(broken), "--images", str(paths.test), "--out",
                  str(tmp_path / "s.csv"))
    assert needle in line


def test_corrupt_fold_file(bundle, tmp_path, capsys):
    paths, b = bundle
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    victim = sorted((broken / "folds").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    victim.write_bytes(bytes(data))
    line = _error(capsys, "predict", str(broken), "--images", str(paths.test), "--out",
                  str(tmp_path / "s.csv"))
    assert victim.name in line and "corrupt" in line

"""The bad-input catalogue: malformed inputs to prepare, create, the space file, worker,
export-best and predict. Each runs the real CLI in a subprocess and must exit 1 with one final
`error:` line naming the culprit (file, key or value) and the fix, print no traceback and no
password, and leave the output locations exactly as they were.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability._helpers import (
    CLOSED_PORT,
    PASSWORD,
    error_line,
    run_cli,
    snapshot,
    tiny_dataset,
    write_png,
)
from tests.search._helpers import tiny_space

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class Case:
    args: list[str]
    culprit: list[str]  # every one must appear in the error
    watch: list[Path] = field(default_factory=list)  # output locations besides the case folder
    listing: bool = False  # a DataError listing several problems (one per indented line)


def _data(tmp: Path, labels=None) -> Path:
    return tiny_dataset(tmp / "data", labels)


def _prepare(tmp: Path, data: Path, culprit: list[str]) -> Case:
    cache = tmp / "cache"
    return Case(["prepare", str(data), "--resolutions", "32", "--cache", str(cache)], culprit, [cache])


def _create(tmp: Path, data: Path, culprit: list[str], *, space: Path | None = None,
            folds: int = 2, storage: str | None = None, listing: bool = False) -> Case:
    space = space or tiny_space(tmp)
    storage = storage or f"sqlite:///{tmp / 'study.db'}"
    return Case(["create", "c", "--data", str(data), "--space", str(space), "--folds", str(folds),
                 "--storage", storage], culprit, listing=listing)


# --- prepare: the dataset ----------------------------------------------------------------------
def wrong_csv_header(tmp, _):
    data = _data(tmp)
    csv = data / "train_labels.csv"
    csv.write_text(csv.read_text().replace("sample_index,label", "image,class", 1))
    return _prepare(tmp, data, [str(csv), "image,class", "sample_index,label"])


def duplicated_row(tmp, _):
    data = _data(tmp)
    csv = data / "train_labels.csv"
    csv.write_text(csv.read_text() + "img_0001.png,Luminal A\n")
    return _prepare(tmp, data, [str(csv), "img_0001.png duplicated", "keep one row"])


def zero_byte_image(tmp, _):
    data = _data(tmp)
    (data / "train_data" / "img_0002.png").write_bytes(b"")
    return _prepare(tmp, data, [str(data / "train_data" / "img_0002.png"), "0 bytes"])


def text_named_png(tmp, _):
    data = _data(tmp)
    (data / "train_data" / "img_0003.png").write_text("this is not a picture\n")
    return _prepare(tmp, data, [str(data / "train_data" / "img_0003.png"), "cannot be decoded"])


def truncated_png(tmp, _):
    data = _data(tmp)
    png = data / "train_data" / "img_0004.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return _prepare(tmp, data, [str(png), "cannot be decoded"])


def mask_of_another_size(tmp, _):
    data = _data(tmp)
    write_png(data / "train_data" / "mask_0005.png", (20, 20), mask=True)
    return _prepare(tmp, data, [str(data / "train_data" / "mask_0005.png"), "20x20", "40x32"])


def image_without_mask(tmp, _):
    data = _data(tmp)
    (data / "train_data" / "mask_0006.png").unlink()
    return _prepare(tmp, data, [str(data / "train_data" / "img_0006.png"), "no mask"])


def empty_dataset(tmp, _):
    data = _data(tmp, labels=[])
    return _prepare(tmp, data, [str(data / "train_labels.csv"), "no samples"])


# --- create: the dataset against the folds, the space file, the storage -------------------------
def single_class_dataset(tmp, _):
    data = _data(tmp, labels=["Luminal A"] * 8)
    return _create(tmp, data, ["train_labels.csv", "'Luminal B' has 0", "'HER2(+)' has 0",
                               "'Triple negative' has 0", "fewer folds"], listing=True)


def more_folds_than_a_class(tmp, _):
    labels = ["Luminal A"] * 3 + ["Luminal B"] * 3 + ["HER2(+)"] * 3 + ["Triple negative"] * 2
    data = _data(tmp, labels)
    return _create(tmp, data, ["train_labels.csv", "'Triple negative' has 2", "fewer than 3"], folds=3)


def _space(tmp: Path, old: str, new: str) -> Path:
    space = tiny_space(tmp)
    assert old in space.read_text()
    space.write_text(space.read_text().replace(old, new))
    return space


def space_key_misspelled(tmp, _):
    space = _space(tmp, "lr = {", "learning_rate = {")
    return _create(tmp, _data(tmp), [str(space), "'learning_rate'", "did you mean 'lr'"], space=space)


def space_low_above_high(tmp, _):
    space = _space(tmp, "low = 5e-4, high = 2e-3", "low = 2e-3, high = 5e-4")
    return _create(tmp, _data(tmp), [str(space), "lr", "low 0.002 > high 0.0005", "swap"], space=space)


def unknown_backbone(tmp, _):
    space = _space(tmp, '"convnext_atto"', '"convnext_tiy"')
    return _create(tmp, _data(tmp), [str(space), "convnext_tiy"], space=space)


def unreachable_database(tmp, trained):
    url = f"postgresql+psycopg2://histosweep:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/histosweep"
    return _create(tmp, trained.data, [f"127.0.0.1:{CLOSED_PORT}", "histosweep:***@",
                                       "check the host, port"], storage=url)


def nonexistent_database(tmp, trained):
    url = trained.url.rsplit("/", 1)[0] + "/no_such_db_here"
    return _create(tmp, trained.data, ["no_such_db_here", "does not exist"], storage=url)


# --- worker ------------------------------------------------------------------------------------
def _worker(tmp: Path, trained, *extra: str) -> list[str]:
    (tmp / "artifacts").mkdir()  # the shared store exists already; the log folder is elsewhere
    return ["worker", *extra, "--storage", trained.url, "--artifacts", str(tmp / "artifacts"),
            "--log-dir", str(tmp.parent / f"{tmp.name}-logs"), "--no-progress"]


def worker_unknown_study(tmp, trained):
    return Case(_worker(tmp, trained, "no-such-study"), ["'no-such-study'", "histosweep create"])


def worker_data_changed(tmp, trained):
    data = _data(tmp)
    return Case(_worker(tmp, trained, "rel", "--data", str(data)), [str(data), "fingerprint"])


def worker_bad_gpus(tmp, trained):
    return Case(_worker(tmp, trained, "rel", "--gpus", "0,x"), ["--gpus '0,x'", "cpu, all"])


# --- export-best -------------------------------------------------------------------------------
def export_without_complete_trial(tmp, trained):
    from histosweep.search import CreateOptions, create_study

    create_study("idle", trained.url, CreateOptions(data=trained.data, space_file=trained.space,
                                                    folds=2, skip_if_exists=True), progress=False)
    return Case(["export-best", "idle", "--out", str(tmp / "bundle"), "--storage", trained.url,
                 "--artifacts", str(trained.artifacts)], ["'idle'", "no COMPLETE trial",
                                                          "histosweep worker idle"])


def export_trial_not_in_study(tmp, trained):
    return Case(["export-best", "rel", "--trial", "99", "--out", str(tmp / "bundle"), "--storage",
                 trained.url, "--artifacts", str(trained.artifacts)], ["no trial 99", "'rel'"])


# --- predict -----------------------------------------------------------------------------------
def _predict(tmp: Path, bundle: Path, images: Path, culprit: list[str]) -> Case:
    return Case(["predict", str(bundle), "--images", str(images), "--out", str(tmp / "sub.csv"),
                 "--no-progress"], culprit)


def predict_empty_folder(tmp, trained):
    (tmp / "empty").mkdir()
    return _predict(tmp, trained.bundle, tmp / "empty", [str(tmp / "empty"), "no samples"])


def predict_image_without_mask(tmp, trained):
    test = tmp / "test"
    test.mkdir()
    write_png(test / "img_0000.png", (40, 32))
    return _predict(tmp, trained.bundle, test, [str(test / "img_0000.png"), "no mask"])


def predict_bundle_missing_a_fold(tmp, trained):
    bundle = tmp / "bundle"
    shutil.copytree(trained.bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    shipped = manifest["members"][0]["folds"][0]
    (bundle / shipped["file"]).unlink()
    return _predict(tmp, bundle, trained.data / "TEST",
                    [str(bundle / shipped["file"]), f"fold {shipped['fold']}", "re-export"])


CATALOGUE: list[Callable] = [
    wrong_csv_header, duplicated_row, zero_byte_image, text_named_png, truncated_png,
    mask_of_another_size, image_without_mask, empty_dataset,
    single_class_dataset, more_folds_than_a_class,
    space_key_misspelled, space_low_above_high, unknown_backbone,
    unreachable_database, nonexistent_database,
    worker_unknown_study, worker_data_changed, worker_bad_gpus,
    export_without_complete_trial, export_trial_not_in_study,
    predict_empty_folder, predict_image_without_mask, predict_bundle_missing_a_fold,
]


@pytest.mark.parametrize("build", CATALOGUE, ids=[f.__name__ for f in CATALOGUE])
def test_bad_input_is_one_clear_line_and_leaves_nothing(build, trained, tmp_path):
    case = build(tmp_path, trained)
    before = snapshot(tmp_path, *case.watch)
    proc = run_cli(*case.args, cwd=tmp_path)
    message = error_line(proc, listing=case.listing)
    missing = [c for c in case.culprit if c not in message]
    assert not missing, f"{missing} not named in: {message}"
    assert PASSWORD not in proc.stdout + proc.stderr
    assert snapshot(tmp_path, *case.watch) == before  # nothing partial left behind

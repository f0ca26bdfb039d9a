"""input_mode = tiles end to end: create -> worker -> export-best --test -> predict give the same
CSV, the bundle's manifest stores the tiling, the trial records its input and fallbacks."""

from __future__ import annotations

import json

import pytest

from histosweep.cli import main
from tests.search._helpers import load

SPACE_TILES = """
[params]
input_mode = "tiles"
tile_size = 32
tile_scale = 1.0
tiles_per_image = 4
tile_min_mask = 0.3
tile_bag = 2
tile_pool = ["mean", "attention"]
resolution = 32
resize_mode = "stretch"
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 16
epochs = 1
batch_size = 8
t0 = 1
lr = 1e-3
weight_decay = 0.01
label_smoothing = 0.1
dropout = 0.1
cutmix_prob = 0.5
cutmix_alpha = 1.0
color_jitter_prob = 0.5
bn_recalibration_images = 8
"""


@pytest.fixture(scope="module")
def tile_study(tmp_path_factory):
    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.data import synthesize

    paths = DemoPaths(tmp_path_factory.mktemp("tile-study"))
    synthesize(paths.data, n_train=32, n_test=6, seed=1, short_side=64)
    space = paths.root / "space.toml"
    space.write_text(SPACE_TILES)
    create_demo_study(paths, space, folds=2, pruner="none", progress=False)
    assert run_demo_workers(paths, trials=2, workers=1, progress=False) == 0
    return paths


def test_tiles_study_exports_and_predicts_the_same_csv(tile_study, tmp_path, capsys):
    paths = tile_study
    trials = load("demo", paths.storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        assert t.user_attrs["input"]["mode"] == "tiles"
        assert t.user_attrs["input"]["key"] == "tiles-32-s1-k4-m0.3"
        assert isinstance(t.user_attrs["input"]["fallbacks"], dict)
    out = tmp_path / "bundle"
    code = main(["export-best", "demo", "--out", str(out), "--storage", paths.storage,
                 "--artifacts", str(paths.artifacts), "--no-progress", "--test", str(paths.test)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for member in manifest["members"]:
        assert member["input"]["mode"] == "tiles"
        assert member["input"]["spec"] == {"size": 32, "scale": 1.0, "count": 4, "min_mask": 0.3}
        assert member["config"]["tile_pool"] in ("mean", "attention")
    assert "tiles-32-s1-k4-m0.3" in (out / "report.html").read_text()
    predicted = tmp_path / "predicted.csv"
    code = main(["predict", str(out), "--images", str(paths.test), "--out", str(predicted),
                 "--no-progress"])
    capsys.readouterr()
    assert code == 0
    rows = predicted.read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0] == "sample_index,label"
    assert predicted.read_bytes() == (out / "submission.csv").read_bytes()


def test_check_reports_missing_then_present_tile_caches(synth_root, tmp_path, monkeypatch):
    from histosweep.data import TileSpec, build_inputs, load_dataset
    from histosweep.fleet._check import check_caches
    from histosweep.search import load_space

    monkeypatch.setenv("HISTOSWEEP_CACHE", str(tmp_path / "cache"))
    space_file = tmp_path / "space.toml"
    space_file.write_text('[params]\nresolution = 32\ninput_mode = ["whole", "tiles"]\n'
                          "tile_size = 32\ntiles_per_image = 3\n")
    space, ds = load_space(space_file), load_dataset(synth_root)
    before = check_caches(space, ds)
    assert "missing: 32-stretch, tiles-32-s1-k3-m0.5" in before.detail
    build_inputs(ds, [(32, "stretch"), TileSpec(32, 1.0, 3, 0.5)], workers=1, progress=False)
    after = check_caches(space, ds)
    assert after.ok and after.detail == "present: 32-stretch, tiles-32-s1-k3-m0.5"

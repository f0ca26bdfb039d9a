"""The input-mode registry: a toy mode (the centre of each picture) defined and registered in
this file alone runs create -> worker -> export-best -> predict with no edit of the package."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from histosweep import data
from histosweep.model import ConfigError, TrainConfig
from tests.search._helpers import TINY_SPACE

TOY = "centre_crop"


@dataclass(frozen=True)
class CentreSpec(data.PictureSpec):
    """The middle half of the picture (both sides halved), resized to `resolution` px."""

    input_mode = TOY
    fields = ("resolution", "resize_mode")

    resolution: int
    mode: str

    @property
    def key(self) -> str:
        return f"centre-{self.resolution}-{self.mode}"

    def cut(self, image: Image.Image, mask: np.ndarray):
        height, width = mask.shape
        box = (width // 4, height // 4, width - width // 4, height - height // 4)
        centre = mask[box[1]:box[3], box[0]:box[2]]
        img, msk = data.resize_pair(image.crop(box), centre, self.resolution, self.mode)
        return {"images": img, "masks": msk}, data.FALLBACK_MASK


SPACE = TINY_SPACE.format(epochs=1) + f'input_mode = "{TOY}"\n'


@pytest.fixture()
def toy_mode():
    data.register_input(CentreSpec)
    yield CentreSpec
    data.unregister_input(TOY)


def test_built_in_modes_keep_their_cache_keys():
    assert data.input_modes() == data.INPUT_MODES  # the CLI's choices (histosweep.constants)
    keys = [data.input_key(data.input_target(TrainConfig(input_mode=mode)))
            for mode in data.INPUT_MODES]
    assert keys == ["384-stretch", "crop-384-stretch-m0.1", "tiles-256-s1-k16-m0.5"]
    manifest = data.input_manifest(TrainConfig(input_mode="mask_crop"))
    assert manifest == {"mode": "mask_crop", "key": "crop-384-stretch-m0.1",
                        "spec": {"resolution": 384, "mode": "stretch", "margin": 0.1}}
    assert data.input_manifest(TrainConfig()) == {"mode": "whole", "key": "384-stretch"}


def test_a_mode_is_a_valid_input_mode_only_while_registered(toy_mode):
    cfg = TrainConfig(input_mode=TOY, resolution=48)
    assert data.input_target(cfg) == CentreSpec(48, "stretch")
    assert data.input_key(data.input_target(cfg)) == "centre-48-stretch"
    assert TOY in data.input_modes()
    with pytest.raises(data.DataError, match="already registered"):
        data.register_input(type("Other", (CentreSpec,), {}))
    data.unregister_input(TOY)
    with pytest.raises(ConfigError, match="input_mode"):
        TrainConfig(input_mode=TOY)
    data.register_input(CentreSpec)  # the fixture removes it again


def test_toy_mode_searches_exports_and_predicts(toy_mode, synth_root, tmp_path, monkeypatch):
    from histosweep.bundle import ExportOptions, export_best, predict_folder
    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.search import CreateOptions, create_study

    monkeypatch.setenv("HISTOSWEEP_CACHE", str(tmp_path / "cache"))
    storage, artifacts = f"sqlite:///{tmp_path / 'study.db'}", str(tmp_path / "artifacts")
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    create_study("toy", storage, CreateOptions(data=synth_root, space_file=space, folds=2,
                                               pruner="none"), progress=False)
    code = run_workers(WorkerOptions(study="toy", storage=storage, artifacts=artifacts, gpus="cpu",
                                     n_trials=1, progress=False, log_dir=str(tmp_path / "logs")))
    assert code == 0
    ds = data.load_dataset(synth_root)
    cache = data.open_inputs(ds, TrainConfig(input_mode=TOY, resolution=32), build=False)
    assert cache.path.name == "centre-32-stretch" and cache.spec == CentreSpec(32, "stretch")
    assert cache.images.shape == (len(ds.samples), 32, 32, 3)

    bundle = tmp_path / "bundle"
    export_best(ExportOptions(study="toy", out=bundle, storage=storage, artifacts=artifacts,
                              progress=False))
    member = json.loads((bundle / "manifest.json").read_text())["members"][0]
    assert member["input"]["mode"] == TOY and member["input"]["key"] == "centre-32-stretch"
    assert member["input"]["spec"] == {"resolution": 32, "mode": "stretch"}
    out = tmp_path / "submission.csv"
    summary = predict_folder(bundle, synth_root / "TEST", out, progress=False)
    rows = out.read_text().splitlines()
    assert rows[0] == "sample_index,label" and len(rows) == 1 + summary["rows"] > 1

"""train_mode = frozen end to end, offline, with a tiny ViT (timm's test_vit: the VisionTransformer
construction, random init) whose weights come from a local safetensors file the test writes:
create -> worker (embeds on demand) -> export-best --test -> predict gives the same CSV, the
bundle names the backbone and its weights sha256, and other weights are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from histosweep.cli import main
from histosweep.storage import study_storage, trial_id
from tests.search._helpers import load

SPACE_FROZEN = """
[params]
train_mode = "frozen"
resolution = 32
resize_mode = "stretch"
image_backbone = "test_vit"
image_pretrained_path = "{weights}"
frozen_head = ["linear", "mlp"]
tile_pool = "attention"
head_hidden = {{ low = 16, high = 64, log = true }}
optimizer = "adamw"
epochs = 3
batch_size = 8
lr = {{ low = 1e-3, high = 1e-2, log = true }}
weight_decay = {{ low = 1e-4, high = 1e-1, log = true }}
dropout = {{ low = 0.0, high = 0.3 }}
"""


def write_vit_weights(path: Path, seed: int) -> Path:
    """A timm state dict for test_vit (the 'pretrained' weights a user would stage)."""
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("test_vit", num_classes=0)
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def frozen_study(tmp_path_factory):
    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.data import synthesize

    root = tmp_path_factory.mktemp("frozen-study")
    paths = DemoPaths(root)
    synthesize(paths.data, n_train=40, n_test=6, seed=0, short_side=64)
    weights = write_vit_weights(root / "vit.safetensors", seed=1)
    space = root / "space.toml"
    space.write_text(SPACE_FROZEN.format(weights=weights))
    create_demo_study(paths, space, folds=2, pruner="none", holdout=0.2, progress=False)
    assert run_demo_workers(paths, trials=3, workers=1, progress=False) == 0
    return paths, weights


def test_frozen_trials_complete_on_cached_embeddings(frozen_study):
    import optuna

    paths, _ = frozen_study
    trials = load("demo", paths.storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    embedding = trials[0].user_attrs["embedding"]
    assert embedding["backbone"] == "test_vit" and embedding["dim"] == 64
    assert len(embedding["weights_sha256"]) == 64
    assert all(t.user_attrs["embedding"] == embedding for t in trials)  # one cache, shared
    assert all(0.0 <= t.value <= 1.0 for t in trials)
    assert all(len(t.user_attrs["fold_0"]["curve"]) == 3 for t in trials)  # reported per epoch


def test_export_and_predict_write_the_same_csv(frozen_study, tmp_path, capsys):
    paths, _ = frozen_study
    out = tmp_path / "bundle"
    assert main(["export-best", "demo", "--out", str(out), "--storage", paths.storage,
                 "--artifacts", str(paths.artifacts), "--no-progress", "--json", "--test",
                 str(paths.test)]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the bundle re-embeds the lockbox images and reproduces the stored lockbox F1 exactly
    assert summary["warnings"] == [] and summary["metrics"]["lockbox_f1_reproduced"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    member = manifest["members"][0]
    assert member["config"]["train_mode"] == "frozen"
    assert member["embedding"]["backbone"] == "test_vit"
    assert len(member["embedding"]["weights_sha256"]) == 64
    csv = tmp_path / "predict.csv"
    assert main(["predict", str(out), "--images", str(paths.test), "--out", str(csv),
                 "--no-progress"]) == 0
    assert csv.read_bytes() == (out / "submission.csv").read_bytes()
    assert len(csv.read_text().splitlines()) == 1 + 6


def test_predict_refuses_other_backbone_weights(frozen_study, tmp_path, capsys):
    paths, weights = frozen_study
    out = tmp_path / "bundle"
    assert main(["export-best", "demo", "--out", str(out), "--storage", paths.storage,
                 "--artifacts", str(paths.artifacts), "--no-progress", "--single"]) == 0
    write_vit_weights(weights, seed=2)  # the staged file now holds other weights
    try:
        capsys.readouterr()
        code = main(["predict", str(out), "--images", str(paths.test), "--out",
                     str(tmp_path / "x.csv"), "--no-progress"])
        err = capsys.readouterr().err
    finally:
        write_vit_weights(weights, seed=1)
    assert code == 1 and "weights sha256" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_check_names_an_unstaged_hub_backbone(synth_root, tmp_path, monkeypatch, capsys):
    from histosweep.search import CreateOptions, create_study

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    space = tmp_path / "space.toml"
    space.write_text('[params]\ntrain_mode = "frozen"\nimage_backbone = "hf-hub:MahmoodLab/uni"\n'
                     'pretrained = true\nresolution = 224\n')
    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_study("uni", url, CreateOptions(data=synth_root, space_file=space, folds=2),
                 progress=False)
    (tmp_path / "artifacts").mkdir()
    code = main(["check", "uni", "--storage", url, "--artifacts", str(tmp_path / "artifacts")])
    err = [line for line in capsys.readouterr().err.splitlines() if "hf-hub:MahmoodLab/uni" in line]
    assert code == 1 and len(err) == 1 and err[0].startswith("error: weights: ")
    assert str(tmp_path / "hf" / "hub" / "models--MahmoodLab--uni") in err[0]
    assert "HF_HUB_OFFLINE=1" in err[0] and "own token" in err[0]


def test_packaged_frozen_space_loads_as_frozen_trials():
    from importlib import resources

    from histosweep.search import load_space

    path = resources.files("histosweep.search").joinpath("frozen_space.toml")
    space = load_space(str(path))
    cfg = space.fixed_config()
    assert cfg.train_mode == "frozen" and cfg.image_backbone == "hf-hub:MahmoodLab/uni"
    assert {"lr", "weight_decay", "dropout", "head_hidden", "epochs"} <= set(space.searched())


def test_retry_of_a_failed_frozen_trial_reuses_its_finished_fold(frozen_study, tmp_path):
    """The retry of a trial that died after fold 0 (system attr retry_history) trains only
    fold 1 and, the config and seed being the same, scores what the complete trial scored."""
    import optuna

    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.search import CreateOptions, create_study

    paths, _ = frozen_study
    one = tmp_path / "one.toml"  # the frozen space with every searched key fixed
    one.write_text("\n".join(line for line in (paths.root / "space.toml").read_text().splitlines()
                             if "low" not in line and not line.startswith("frozen_head"))
                   + '\nfrozen_head = "mlp"\nhead_hidden = 32\nlr = 3e-3\nweight_decay = 1e-3\n')
    create_study("resume", paths.storage, CreateOptions(data=paths.data, space_file=one, folds=2,
                                                        pruner="none"), progress=False)
    options = WorkerOptions(study="resume", storage=paths.storage, artifacts=str(paths.artifacts),
                            n_trials=1, log_dir=str(tmp_path / "logs"), progress=False)
    assert run_workers(options) == 0
    study = load("resume", paths.storage)
    done = study.get_trials()[0]
    dead = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={},
                                     distributions={},
                                     user_attrs={"fold_0": done.user_attrs["fold_0"]})
    study.add_trial(dead)
    study.enqueue_trial({})
    *_, failed, waiting = study.get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL
    study_storage(study).set_trial_system_attr(trial_id(waiting), "retry_history", [failed.number])
    study_storage(study).set_trial_system_attr(trial_id(waiting), "failed_trial", failed.number)
    assert run_workers(WorkerOptions(**{**options.__dict__, "n_trials": 2})) == 0
    retry = load("resume", paths.storage).get_trials()[-1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_folds"] == [0]
    assert retry.user_attrs["fold_0"]["checkpoint"] == done.user_attrs["fold_0"]["checkpoint"]
    assert retry.user_attrs["fold_1"]["checkpoint"] != done.user_attrs["fold_1"]["checkpoint"]
    assert retry.value == pytest.approx(done.value)


def test_a_losing_frozen_trial_is_pruned_per_epoch(frozen_study, tmp_path):
    """Two finished trials scored F1 = 1.0 at every step: the percentile pruner stops the frozen
    trial after its warm-up epoch, from its per-epoch reports."""
    import optuna

    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.search import CreateOptions, create_study

    paths, _ = frozen_study
    create_study("prune", paths.storage, CreateOptions(data=paths.data, folds=2,
                 space_file=paths.root / "space.toml", pruner="percentile"), progress=False)
    study = load("prune", paths.storage)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, intermediate_values={s: 1.0 for s in range(6)},
            user_attrs={"fold_val_f1": [1.0, 1.0]}))
    assert run_workers(WorkerOptions(study="prune", storage=paths.storage, n_trials=3,
                                     artifacts=str(paths.artifacts), progress=False,
                                     log_dir=str(tmp_path / "logs"))) == 0
    trial = load("prune", paths.storage).get_trials()[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["config"]["train_mode"] == "frozen"
    assert trial.user_attrs["epochs_run"] < trial.user_attrs["epochs_planned"] == 6


def test_frozen_tiles_embed_each_tile_and_predict_the_same_csv(tmp_path, capsys):
    """input_mode = tiles with a frozen backbone: one embedding per tile (cache (N, K, D)),
    attention/mean pooling in the head, and export and predict tile the test images alike."""
    import numpy as np
    import optuna

    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.data import synthesize

    paths = DemoPaths(tmp_path / "study")
    synthesize(paths.data, n_train=32, n_test=5, seed=3, short_side=64)
    weights = write_vit_weights(tmp_path / "vit.safetensors", seed=1)
    space = tmp_path / "space.toml"
    space.write_text(SPACE_FROZEN.format(weights=weights).replace(
        'tile_pool = "attention"',
        'input_mode = "tiles"\ntile_size = 32\ntile_scale = 1.0\ntiles_per_image = 4\n'
        'tile_min_mask = 0.3\ntile_pool = ["mean", "attention"]'))
    create_demo_study(paths, space, folds=2, pruner="none", holdout=0.2, progress=False)
    assert run_demo_workers(paths, trials=2, workers=1, progress=False) == 0
    trials = load("demo", paths.storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    key = trials[0].user_attrs["embedding"]["input"]
    assert key.startswith("tiles-32-") and "-k4-" in key
    cached = list(Path(os.environ["HISTOSWEEP_CACHE"]).rglob(f"embed/*/{key}/features.npy"))
    assert len(cached) == 1
    features = np.load(cached[0], mmap_mode="r")
    counts = np.load(cached[0].with_name("counts.npy"))
    assert features.shape[1:] == (4, 64) and features.dtype == np.float16
    assert counts.min() >= 1 and counts.max() <= 4 and counts.max() > 1  # real bags, no empty one

    out = tmp_path / "bundle"
    assert main(["export-best", "demo", "--out", str(out), "--storage", paths.storage,
                 "--artifacts", str(paths.artifacts), "--no-progress", "--json", "--test",
                 str(paths.test)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["warnings"] == [] and summary["metrics"]["lockbox_f1_reproduced"] is True
    member = json.loads((out / "manifest.json").read_text())["members"][0]
    assert member["input"]["mode"] == "tiles" and member["embedding"]["input"] == key
    csv = tmp_path / "predict.csv"
    assert main(["predict", str(out), "--images", str(paths.test), "--out", str(csv),
                 "--no-progress"]) == 0
    assert csv.read_bytes() == (out / "submission.csv").read_bytes()

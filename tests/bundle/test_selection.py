"""Honest selection: a trial's value is its out-of-fold macro-F1 and the holdout is a lockbox.

The proof: a study whose holdout labels are permuted runs the very same search (same params,
same values, same intermediate values, same pruning) as the original; and nothing per trial
names the holdout.
"""

from __future__ import annotations

import numpy as np
import pytest
from optuna.trial import TrialState

from histosweep.fleet import WorkerOptions, run_workers
from histosweep.model import macro_f1
from histosweep.search import CreateOptions, create_study, open_study
from histosweep.storage import open_artifact_store
from histosweep.trial_files import fetch_probs
from tests.search._helpers import load, tiny_space

PARAMS = [{"lr": 5e-4, "cutmix_prob": 0.0}, {"lr": 2e-3, "cutmix_prob": 0.5},
          {"lr": 1e-3, "cutmix_prob": 0.0}, {"lr": 6e-4, "cutmix_prob": 0.5}]


def _search(name: str, storage: str, artifacts, data, space, tmp_path, *, permute_holdout: bool):
    create_study(name, storage, CreateOptions(data=data, space_file=space, folds=2, pruner="median",
                                              holdout=0.2),  # a lockbox to permute
                 progress=False)
    study = load(name, storage)
    if permute_holdout:
        settings = study.user_attrs["histosweep"]
        labels = np.asarray(settings["labels"])
        holdout = np.asarray(settings["split"]["holdout"])
        permuted = labels.copy()
        permuted[holdout] = (labels[holdout] + 1) % 4  # every holdout label changes
        study.set_user_attr("histosweep", {**settings, "labels": permuted.tolist()})
    for params in PARAMS:
        study.enqueue_trial(params)
    code = run_workers(WorkerOptions(study=name, storage=storage, artifacts=str(artifacts), gpus="cpu",
                                     trials_per_gpu=1, n_trials=len(PARAMS),
                                     log_dir=str(tmp_path / "logs"), progress=False))
    assert code == 0
    return load(name, storage).get_trials()


@pytest.mark.slow
def test_permuted_holdout_labels_change_nothing_in_the_search(synth_root, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    artifacts = tmp_path / "artifacts"
    space = tiny_space(tmp_path, epochs=2)
    original = _search("original", storage, artifacts, synth_root, space, tmp_path, permute_holdout=False)
    permuted = _search("permuted", storage, artifacts, synth_root, space, tmp_path, permute_holdout=True)
    assert len(original) == len(permuted) == len(PARAMS)
    assert load("original", storage).metric_names == ["oof_macro_f1"]  # named in the dashboard
    for a, b in zip(original, permuted, strict=True):
        assert a.state == b.state and a.params == b.params
        assert a.value == b.value  # exactly: nothing the trial computes reads a holdout label
        assert a.intermediate_values == b.intermediate_values
        assert a.user_attrs.get("pruned_reason") == b.user_attrs.get("pruned_reason")
    for t in original + permuted:
        assert not [k for k in t.user_attrs if "holdout" in k], t.user_attrs.keys()


@pytest.mark.slow
def test_value_is_the_out_of_fold_macro_f1(synth_root, tmp_path):
    """Recompute the value from the stored fold predictions: each sample by the fold that did
    not train on it, over every non-holdout sample."""
    storage = f"sqlite:///{tmp_path / 'oof.db'}"
    artifacts = tmp_path / "artifacts"
    trials = _search("oof", storage, artifacts, synth_root, tiny_space(tmp_path, epochs=1), tmp_path,
                     permute_holdout=False)
    settings = open_study("oof", storage).user_attrs["histosweep"]
    labels = np.asarray(settings["labels"])
    folds = settings["split"]["folds"]
    store = open_artifact_store(str(artifacts))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        rows, probs = [], []
        for k, fold in enumerate(folds):
            val = fold["val"]
            stored = fetch_probs(store, t.user_attrs[f"fold_{k}"], what="test")
            assert list(stored["val_rows"]) == list(val)
            rows += list(val)
            probs.append(stored["val_probs"])
        assert sorted(rows) == sorted(set(range(len(labels))) - set(settings["split"]["holdout"]))
        assert t.value == pytest.approx(macro_f1(labels[rows], np.concatenate(probs)), abs=1e-12)


@pytest.mark.slow
def test_pruning_steps_are_comparable_when_epochs_is_searched(synth_root, tmp_path):
    """Step = fold * (most epochs the space can pick) + epoch: fold 1 of a 1-epoch trial reports
    at the same step as fold 1 of a 2-epoch trial, not at the 2-epoch trial's fold-0 epoch 1."""
    storage = f"sqlite:///{tmp_path / 'steps.db'}"
    space = tmp_path / "epochs.toml"
    space.write_text(tiny_space(tmp_path, epochs=1).read_text().replace("epochs = 1", "epochs = [1, 2]"))
    create_study("steps", storage, CreateOptions(data=synth_root, space_file=space, folds=2, pruner="none"),
                 progress=False)
    study = load("steps", storage)
    study.enqueue_trial({"epochs": 1, "lr": 1e-3, "cutmix_prob": 0.0})
    study.enqueue_trial({"epochs": 2, "lr": 1e-3, "cutmix_prob": 0.0})
    assert run_workers(WorkerOptions(study="steps", storage=storage, artifacts=str(tmp_path / "a"),
                                     gpus="cpu", n_trials=2, log_dir=str(tmp_path / "logs"),
                                     progress=False)) == 0
    one, two = load("steps", storage).get_trials()
    assert sorted(one.intermediate_values) == [0, 2]  # fold 0 epoch 0, fold 1 epoch 0
    assert sorted(two.intermediate_values) == [0, 1, 2, 3]

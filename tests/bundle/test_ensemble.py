"""Greedy ensemble selection (Caruana 2004) and the macro-F1 decision offsets, on crafted
out-of-fold probabilities where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from histosweep.bundle._ensemble import decide, ensemble_probs, fit_offsets, greedy_selection
from histosweep.model import macro_f1


def _onehot_probs(preds, n_classes=4, confidence=0.7):
    probs = np.full((len(preds), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_selection_combines_complementary_trials_and_skips_a_useless_one():
    labels = np.repeat(np.arange(4), 25)  # (100,)
    # A is confidently right on the first half of every class and unsure-and-wrong on the rest,
    # B the other way round; C is confidently wrong everywhere
    half = np.tile(np.arange(25) < 13, 4)[:, None]
    pa = np.where(half, _onehot_probs(labels, confidence=0.9), _onehot_probs((labels + 1) % 4, confidence=0.4))
    pb = np.where(~half, _onehot_probs(labels, confidence=0.9), _onehot_probs((labels + 2) % 4, confidence=0.4))
    pc = _onehot_probs((labels + 3) % 4, confidence=0.9)
    sel = greedy_selection([pa, pb, pc], labels, rounds=10)
    assert sel.weights.sum() == pytest.approx(1.0)
    assert sel.weights[2] == 0.0  # the noise trial is never picked
    assert sel.weights[0] > 0 and sel.weights[1] > 0
    assert sel.oof_f1 > max(macro_f1(labels, pa), macro_f1(labels, pb))
    assert sel.oof_f1 == pytest.approx(macro_f1(labels, ensemble_probs([pa, pb, pc], sel.weights)))
    # weights are picks / length of the kept prefix
    assert list(sel.weights) == [sel.path.count(i) / len(sel.path) for i in range(3)]


def test_selection_keeps_the_best_prefix_not_the_last_round():
    labels = np.repeat(np.arange(4), 10)
    perfect = _onehot_probs(labels, confidence=0.97)
    worse = _onehot_probs((labels + 1) % 4, confidence=0.97)
    sel = greedy_selection([perfect, worse], labels, rounds=8)
    assert sel.path == [0] and list(sel.weights) == [1.0, 0.0] and sel.oof_f1 == 1.0


def test_offsets_fix_a_biased_classifier_and_never_hurt():
    labels = np.repeat(np.arange(4), 30)
    rng = np.random.default_rng(1)
    logits = np.eye(4)[labels] * 1.0 + rng.normal(0, 0.6, (120, 4))
    logits[:, 0] += 1.2  # a bias towards class 0 that argmax pays for in macro-F1
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    offsets = fit_offsets(probs, labels)
    assert offsets.shape == (4,)
    assert macro_f1(labels, decide(probs, offsets)) > macro_f1(labels, probs) + 0.05
    assert offsets[0] < 0  # it learned to discount class 0
    balanced = _onehot_probs(labels)
    assert list(fit_offsets(balanced, labels)) == [0.0] * 4  # nothing to gain: stays at argmax
    assert np.array_equal(decide(probs, np.zeros(4)), probs.argmax(1))


def test_offsets_are_kept_only_when_they_carry_over_to_rows_they_were_not_fitted_on():
    from histosweep.bundle._ensemble import fit_checked_offsets

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 60)
    logits = rng.normal(size=(240, 4)) + 1.5 * np.eye(4)[labels]
    logits[:, 0] += 1.5  # a systematic bias towards class 0: every part of the data shows it
    biased = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    kept = fit_checked_offsets(biased, labels)
    assert kept.kept and kept.offsets[0] < 0 and np.array_equal(kept.offsets, kept.fitted)
    assert kept.cross_fitted_f1 > kept.argmax_f1

    noise = rng.dirichlet(np.ones(4), size=40)  # no signal: what offsets gain on it is noise
    labels = np.repeat(np.arange(4), 10)
    dropped = fit_checked_offsets(noise, labels)
    assert dropped.fitted.any()  # coordinate ascent found a "gain" on the rows it fitted ...
    assert not dropped.kept and not dropped.offsets.any()  # ... that did not carry over
    assert dropped.cross_fitted_f1 <= dropped.argmax_f1
    assert dropped.as_dict()["fitted_offsets"] == [float(o) for o in dropped.fitted]

    single = fit_checked_offsets(noise[:5], np.array([0, 1, 2, 3, 3]))
    assert not single.kept and "single OOF row" in single.reason

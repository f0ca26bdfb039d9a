"""BBC-CV (bundle._bootstrap) and the batched selection methods (bundle._selection) on planted
candidates whose true macro-F1 is known: the estimate recovers it, naive best-of-N is optimistic,
out-of-bag labels never reach a selection, and the batched greedy equals export's greedy."""

from __future__ import annotations

import numpy as np
import pytest

from histosweep.bundle._bootstrap import BBCOptions, bbc_cv, select_in_bag, stratified_counts
from histosweep.bundle._ensemble import greedy_selection
from histosweep.bundle._selection import METHODS, normalise_weights, select_batch
from histosweep.model import macro_f1

C = 4


def planted(accuracies, n: int, seed: int):
    """Candidates that predict the true class with probability `acc` (else a random other class),
    as softened probabilities; labels balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % C
    probs = []
    for acc in accuracies:
        right = rng.random(n) < acc
        wrong = (labels + rng.integers(1, C, n)) % C
        pred = np.where(right, labels, wrong)
        p = rng.dirichlet(np.ones(C), n) * 0.3
        p[np.arange(n), pred] += 0.7
        probs.append(p)
    return np.stack(probs), labels


def true_f1(acc: float) -> float:
    """Macro-F1 of a planted candidate on infinite balanced data (errors spread evenly)."""
    probs, labels = planted([acc], 40_000, seed=99)
    return macro_f1(labels, probs[0])


def test_pure_noise_bbc_is_chance_and_naive_best_of_n_is_optimistic():
    probs, labels = planted([0.25] * 12, 240, seed=1)  # 0.25 = chance: no signal at all
    naive = max(macro_f1(labels, p) for p in probs)  # what "the best trial's OOF F1" reports
    est = bbc_cv(probs, labels, BBCOptions(resamples=200, calibrate=False))
    assert abs(est["ensemble"]["mean"] - 0.25) < 0.04
    assert abs(est["single_best"]["mean"] - 0.25) < 0.04
    assert naive > est["single_best"]["mean"] + 0.03  # the optimism BBC-CV removes
    low, high = est["single_best"]["ci95"]
    assert low < 0.25 < high


def test_one_good_candidate_among_noise_is_recovered():
    probs, labels = planted([0.7] + [0.25] * 7, 300, seed=2)
    est = bbc_cv(probs, labels, BBCOptions(resamples=200, single=True, calibrate=False))
    truth = true_f1(0.7)
    assert abs(est["single_best"]["mean"] - truth) < 0.05
    assert abs(est["ensemble"]["mean"] - truth) < 0.05
    low, high = est["ensemble"]["ci95"]
    assert low < truth < high


def test_search_gain_is_paired_against_the_reference():
    probs, labels = planted([0.7, 0.4, 0.25], 300, seed=3)
    est = bbc_cv(probs, labels, BBCOptions(resamples=200, calibrate=False), reference=1)
    gain = est["search_gain"]
    assert gain["mean"] == pytest.approx(est["ensemble"]["mean"] - est["reference"]["mean"], abs=2e-6)
    assert gain["ci95"][0] > 0  # planted: the search found a clearly better trial
    worse = bbc_cv(probs, labels, BBCOptions(resamples=200, calibrate=False, fixed=(2,)),
                   reference=0)
    assert worse["search_gain"]["ci95"][1] < 0


@pytest.mark.parametrize("method", METHODS)
def test_out_of_bag_labels_change_no_selection(method):
    """Flip every out-of-bag label of a resample: its ranking, ensemble and offsets are equal."""
    probs, labels = planted([0.6, 0.5, 0.45, 0.4, 0.3], 120, seed=4)
    counts = stratified_counts(labels, 3, np.random.default_rng(0))
    opts = BBCOptions(method=method, candidates=4, calibrate=True)
    for w in counts:
        w = w[None, :]
        flipped = labels.copy()
        flipped[w[0] == 0] = (labels[w[0] == 0] + 1) % C
        assert (flipped != labels).any()
        a = select_in_bag(probs, labels, w, opts, np.random.default_rng(7))
        b = select_in_bag(probs, flipped, w, opts, np.random.default_rng(7))
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_stratified_counts_keep_class_sizes():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 7 + [3] * 3)
    counts = stratified_counts(labels, 50, np.random.default_rng(1))
    for c in range(C):
        assert (counts[:, labels == c].sum(1) == (labels == c).sum()).all()
    assert ((counts == 0).sum(1) > 0).all()  # every resample leaves rows out of bag


def test_batched_greedy_equals_exports_greedy():
    probs, labels = planted([0.6, 0.55, 0.5, 0.45], 100, seed=5)
    batched = select_batch("greedy", probs[:, None], labels, np.ones((1, labels.size)),
                           np.random.default_rng(0))[0]
    assert np.allclose(batched, greedy_selection(list(probs), labels).weights)


@pytest.mark.parametrize("method", ["bagged", "cmaes"])
def test_other_methods_give_normalised_weights_favouring_the_good_candidate(method):
    probs, labels = planted([0.8, 0.3, 0.25, 0.25], 160, seed=6)
    w = select_batch(method, probs[:, None], labels, np.ones((1, labels.size)),
                     np.random.default_rng(0))[0]
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w.argmax() == 0


def test_normalise_weights_trims_scales_and_rounds_to_the_greedy_grid():
    w = normalise_weights(np.array([[0.5, -1.0, 0.3, 0.2], [-1.0, -2.0, -0.1, -3.0]]))
    assert np.allclose(w.sum(1), 1.0) and w[0, 1] == 0
    assert np.allclose(w * 25, np.round(w * 25))
    assert np.abs(w[1] - 0.25).max() <= 1 / 25  # nothing positive: equal weights, on the grid


def test_bbc_is_seeded():
    probs, labels = planted([0.6, 0.5, 0.4], 90, seed=8)
    a = bbc_cv(probs, labels, BBCOptions(resamples=100))
    assert a == bbc_cv(probs, labels, BBCOptions(resamples=100))
    assert a != bbc_cv(probs, labels, BBCOptions(resamples=100, seed=1))


def test_chunks_in_worker_processes_give_the_same_figures(monkeypatch):
    """Large work goes to spawned processes, chunk by chunk, each chunk with its own seed: the
    figures are the serial run's, to the last digit."""
    import histosweep.bundle._bootstrap as bootstrap

    probs, labels = planted([0.6, 0.55, 0.5, 0.45], 120, seed=3)
    opts = BBCOptions(resamples=120, method="bagged", candidates=4)
    monkeypatch.setattr(bootstrap, "PARALLEL_WORK", 10**12)
    assert bootstrap._workers(probs, opts, 3) == 1
    serial = bbc_cv(probs, labels, opts, reference=0)
    monkeypatch.setattr(bootstrap, "PARALLEL_WORK", 1)
    if bootstrap._workers(probs, opts, 3) < 2:
        pytest.fail("this test needs at least 2 CPUs to run chunks in processes")
    assert bbc_cv(probs, labels, opts, reference=0) == serial


def test_the_search_gain_is_the_searchs_not_the_decision_offsets():
    """The reference and the single best are scored as export would ship them alone (their own
    offsets, fitted and checked in bag): exporting the reference itself gains exactly 0."""
    probs, labels = planted([0.6, 0.45, 0.4], 160, seed=5)
    alone = bbc_cv(probs, labels, BBCOptions(resamples=100, fixed=(1,)), reference=1)
    assert alone["search_gain"] == {"mean": 0.0, "ci95": [0.0, 0.0]} and alone["method"] == "trials"
    single = bbc_cv(probs, labels, BBCOptions(resamples=100, single=True), reference=0)
    assert single["ensemble"] == single["single_best"] and single["method"] == "single"

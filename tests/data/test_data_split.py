"""make_split: stratified, group-respecting, reproducible holdout + folds."""

from __future__ import annotations

import numpy as np
import pytest

from histosweep.data import DataError, Split, make_split


@pytest.fixture()
def labels_groups():
    rng = np.random.default_rng(7)
    labels = rng.choice(4, size=120, p=[0.35, 0.3, 0.25, 0.1])
    groups = np.arange(120)
    for a, b in [(3, 50), (4, 51), (5, 52), (60, 61)]:  # duplicate pairs of the same class
        labels[b] = labels[a]
        groups[b] = groups[a]
    groups[[70, 71, 72]] = 70  # a triple
    labels[[71, 72]] = labels[70]
    return labels, groups


def test_holdout_and_folds_partition_everything(labels_groups):
    labels, groups = labels_groups
    split = make_split(labels, groups, folds=5, holdout=0.2, seed=0)
    rest = sorted(set(range(len(labels))) - set(split.holdout))
    assert 0.15 <= len(split.holdout) / len(labels) <= 0.25
    assert len(split.folds) == 5
    all_val = sorted(i for _, val in split.folds for i in val)
    assert all_val == rest  # each non-holdout sample validates exactly once
    for train, val in split.folds:
        assert sorted(train + val) == rest and not set(train) & set(val)


def test_groups_never_straddle_two_sides(labels_groups):
    labels, groups = labels_groups
    split = make_split(labels, groups, folds=4, holdout=0.2, seed=3)
    held = set(groups[split.holdout])
    rest = set(groups[sorted(set(range(len(labels))) - set(split.holdout))])
    assert not held & rest
    for train, val in split.folds:
        assert not set(groups[train]) & set(groups[val])


def test_stratified(labels_groups):
    labels, groups = labels_groups
    split = make_split(labels, groups, folds=5, holdout=0.2, seed=0)
    overall = np.bincount(labels, minlength=4) / len(labels)
    held = np.bincount(labels[split.holdout], minlength=4) / len(split.holdout)
    assert np.abs(held - overall).max() < 0.08
    for _, val in split.folds:
        assert (np.bincount(labels[val], minlength=4) >= 1).all()  # even the rare class


def test_reproducible_and_seed_dependent(labels_groups):
    labels, groups = labels_groups
    one = make_split(labels, groups, folds=5, seed=0)
    assert make_split(labels, groups, folds=5, seed=0) == one
    assert make_split(labels, groups, folds=5, seed=1) != one


def test_dict_round_trip(labels_groups):
    split = make_split(*labels_groups, folds=3, seed=0)
    assert Split.from_dict(split.to_dict()) == split
    assert set(split.to_dict()) == {"holdout", "folds"}


def test_no_holdout(labels_groups):
    split = make_split(*labels_groups, folds=3, holdout=0.0, seed=0)
    assert split.holdout == [] and len(split.folds) == 3


def test_too_few_of_a_class_for_the_folds():
    labels = np.array([0] * 20 + [1] * 20 + [2] * 20 + [3] * 4)
    with pytest.raises(DataError, match="'Triple negative' has [0-9]") as info:
        make_split(labels, np.arange(len(labels)), folds=5, holdout=0.2, seed=0)
    assert "--folds" in str(info.value)
    assert make_split(labels, np.arange(len(labels)), folds=3, holdout=0.0, seed=0).folds


def test_holdout_above_half_is_refused(labels_groups):
    """The holdout is one of round(1/h) splits: 0.6 would silently become 0.5."""
    assert 0.4 <= len(make_split(*labels_groups, folds=3, holdout=0.5, seed=0).holdout) / len(
        labels_groups[0]) <= 0.6
    with pytest.raises(DataError, match=r"--holdout 0.6: use a fraction in \[0, 0.5\]"):
        make_split(*labels_groups, folds=3, holdout=0.6, seed=0)

"""Fixed per-study splits: a stratified holdout, then K stratified folds of the rest.

Duplicate groups never straddle two sides. Exercise: `histosweep create STUDY --data DATA --folds 5`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from histosweep.data._dataset import CLASSES, DataError


@dataclass
class Split:
    holdout: list[int]  # indices into the list of kept sample ids
    folds: list[tuple[list[int], list[int]]]  # (train, val) per fold, same indexing

    def to_dict(self) -> dict:
        return {
            "holdout": list(self.holdout),
            "folds": [{"train": list(t), "val": list(v)} for t, v in self.folds],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(
            holdout=[int(i) for i in d["holdout"]],
            folds=[([int(i) for i in f["train"]], [int(i) for i in f["val"]]) for f in d["folds"]],
        )


def make_split(
    labels: np.ndarray, groups: np.ndarray, *, folds: int, holdout: float = 0.2, seed: int = 0
) -> Split:
    """Stratified, group-respecting holdout + `folds` folds; the same inputs give the same split."""
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise DataError(
            f"labels {labels.shape} and groups {groups.shape} must be two equal-length vectors"
        )
    if folds < 2:
        raise DataError(f"--folds {folds}: use at least 2 folds")
    if not 0.0 <= holdout <= 0.5:
        raise DataError(f"--holdout {holdout}: use a fraction in [0, 0.5], e.g. 0.2")
    everything = np.arange(len(labels))
    held = _holdout(labels, groups, holdout, seed) if holdout > 0 else np.array([], dtype=np.int64)
    rest = np.setdiff1d(everything, held)
    _check_counts(labels[rest], folds)
    fold_list = [
        (sorted(rest[t].tolist()), sorted(rest[v].tolist()))
        for t, v in _group_kfold(labels[rest], groups[rest], folds, seed)
    ]
    return Split(holdout=sorted(held.tolist()), folds=fold_list)


def _group_kfold(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    if len(np.unique(groups)) < n_splits:
        raise DataError(
            f"only {len(np.unique(groups))} independent samples for {n_splits} splits; add samples"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class" warnings: counts are checked by us
        warnings.simplefilter("ignore", UserWarning)
        return list(splitter.split(np.zeros(len(labels)), labels, groups))


def _holdout(labels: np.ndarray, groups: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """One split of StratifiedGroupKFold(round(1/holdout)): its test part is the holdout."""
    n_splits = max(2, round(1.0 / holdout))
    _, test = _group_kfold(labels, groups, n_splits, seed)[0]
    return np.sort(test)


def _check_counts(labels: np.ndarray, folds: int) -> None:
    counts = np.bincount(labels, minlength=len(CLASSES))
    short = [f"{_class_name(c)} has {n}" for c, n in enumerate(counts) if n < folds]
    if short:
        raise DataError(
            f"too few samples outside the holdout for {folds} folds: {', '.join(short)}; "
            "lower --folds or --holdout, or add samples"
        )


def _class_name(class_id: int) -> str:
    return repr(CLASSES[class_id]) if class_id < len(CLASSES) else f"class {class_id}"

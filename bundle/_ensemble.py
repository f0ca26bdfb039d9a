"""The final ensemble, searched after training: greedy selection with replacement over the top
trials' out-of-fold probabilities (Caruana et al. 2004), and per-class decision offsets for
macro-F1. Selection and offsets see out-of-fold data only; the holdout is scored elsewhere, once.

Exercise: `histosweep export-best STUDY --out bundle --candidates 20`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histosweep.model import macro_f1

SELECTION_ROUNDS = 25  # AutoGluon's weighted ensemble default; weights are multiples of 1/25
OFFSET_GRID = np.round(np.linspace(-1.0, 1.0, 21), 6)  # added to log-probabilities, per class
OFFSET_PASSES = 3  # coordinate-ascent sweeps over the classes


@dataclass(frozen=True)
class Selection:
    weights: np.ndarray  # (M,) picks / rounds of the kept prefix; sums to 1
    path: list[int]  # candidate picked at each round of the kept prefix
    oof_f1: float  # OOF macro-F1 of the weighted ensemble
    oof_log_loss: float


def ensemble_probs(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted mean of (N, C) probability matrices: (N, C) float64."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # (M, N, C)
    return np.tensordot(np.asarray(weights, dtype=np.float64), stacked, axes=1)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def greedy_selection(oof: list[np.ndarray], labels: np.ndarray, *,
                     rounds: int = SELECTION_ROUNDS) -> Selection:
    """Caruana's forward selection with replacement, keeping the best prefix of the path.

    Each round adds the candidate whose inclusion gives the best OOF macro-F1 of the running
    average (ties: lower log loss, then the better-ranked candidate). The kept prefix is the
    shortest one with the best (F1, -log loss); weights = picks / prefix length.
    """
    labels = np.asarray(labels, dtype=np.int64)
    total = np.zeros_like(np.asarray(oof[0], dtype=np.float64))
    path: list[int] = []
    scores: list[tuple[float, float]] = []
    for r in range(1, rounds + 1):
        best = None
        for m, p in enumerate(oof):
            avg = (total + p) / r
            # NOTE: rounded, so that re-picking a member (same average up to float noise) ties
            key = (round(macro_f1(labels, avg), 12), round(-log_loss(labels, avg), 9))
            if best is None or key > best[0]:
                best = (key, m)
        (f1, neg_ll), m = best
        total += oof[m]
        path.append(m)
        scores.append((f1, neg_ll))
    keep = max(range(rounds), key=lambda i: (scores[i], -i)) + 1
    weights = np.bincount(path[:keep], minlength=len(oof)) / keep
    return Selection(weights, path[:keep], scores[keep - 1][0], -scores[keep - 1][1])


def fit_offsets(probs: np.ndarray, labels: np.ndarray, *, grid=OFFSET_GRID,
                passes: int = OFFSET_PASSES) -> np.ndarray:
    """Per-class offsets on log-probabilities maximising OOF macro-F1 (coordinate ascent).

    Starts at zero and moves a class only for a strict gain, so a calibrated rule is never worse
    than argmax on the data it was fitted on.
    """
    labels = np.asarray(labels, dtype=np.int64)
    logp = np.log(np.clip(probs, 1e-12, None))
    offsets = np.zeros(probs.shape[1])
    best = macro_f1(labels, logp)
    for _ in range(passes):
        moved = False
        for c in range(probs.shape[1]):
            for value in grid:
                trial = offsets.copy()
                trial[c] = value
                score = macro_f1(labels, logp + trial)
                if score > best + 1e-12:
                    best, offsets, moved = score, trial, True
        if not moved:
            break
    return offsets


def decide(probs: np.ndarray, offsets) -> np.ndarray:
    """Class ids: argmax of log-probabilities plus the per-class offsets."""
    return (np.log(np.clip(probs, 1e-12, None)) + np.asarray(offsets, dtype=np.float64)).argmax(1)

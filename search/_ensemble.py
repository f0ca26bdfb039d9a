"""The ensemble rule shared by the objective, export-best and predict.

Top-k folds by validation macro-F1, weights ∝ exp(F1 / temperature), normalised to sum 1.
"""

from __future__ import annotations

import numpy as np


def fold_weights(val_f1: list[float] | np.ndarray, *, top_k: int, temperature: float) -> np.ndarray:
    """Weight per fold (zeros outside the top-k); k is clamped to the number of folds."""
    scores = np.asarray(val_f1, dtype=np.float64)
    k = max(1, min(int(top_k), scores.size))
    order = np.argsort(-scores, kind="stable")[:k]  # ties -> lower fold index first
    logits = scores[order] / float(temperature)
    w = np.exp(logits - logits.max())  # shift for stability: exp(F1/T) overflows at small T
    weights = np.zeros_like(scores)
    weights[order] = w / w.sum()
    return weights


def ensemble_probs(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of per-fold probabilities: (N, C)."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # (F, N, C)
    return np.tensordot(np.asarray(weights, dtype=np.float64), stacked, axes=1)


"""Class weights and a weighted, label-smoothed cross-entropy that accepts soft (CutMix) targets.

Exercise: `pytest tests/model/test_loss.py`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from histosweep.model._errors import ModelError


def class_weights(labels: np.ndarray, num_classes: int = 4) -> torch.Tensor:
    """Inverse-frequency weights from a fold's TRAIN labels, mean 1 over the classes.

    NOTE: a class absent from the labels gets weight 1 (neutral). It never appears as a
    target, so its weight only touches the label-smoothing term, where 0 would silently
    drop it and a huge value would swamp the loss.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ModelError(
            f"class labels must be in [0, {num_classes}); got {labels.min()}..{labels.max()}"
        )
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)  # (C,)
    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float64)
    if present.any():
        inverse = 1.0 / counts[present]
        weights[present] = inverse / inverse.mean()  # mean 1 over present classes
    return torch.tensor(weights, dtype=torch.float32)


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    weight: torch.Tensor | None,
    label_smoothing: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of logits (B, C) against soft targets (B, C) (rows sum to 1).

    Uses the same normalisation as `F.cross_entropy` with class indices: the weighted sum is
    divided by sum_i sum_c w_c t_ic, so one-hot targets give exactly F.cross_entropy(logits,
    y, weight=w, label_smoothing=s); CutMix targets lam*a + (1-lam)*b with b a permutation of
    the batch's labels give exactly lam*CE(a) + (1-lam)*CE(b).
    reduction: "mean" (as above), "sum" (numerator only, for accumulation with a shared
    denominator, see `target_weight_sum`), "none" (per-sample numerators (B,)).
    """
    num_classes = logits.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C)
    targets = targets.to(log_probs.dtype)
    w = _weight_vector(weight, num_classes, log_probs)  # (C,)
    smoothed = targets * (1.0 - label_smoothing) + label_smoothing / num_classes  # (B, C)
    per_sample = -(smoothed * log_probs * w).sum(dim=1)  # (B,)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.sum() / target_weight_sum(targets, w)
    raise ValueError(f"reduction must be mean, sum or none; got {reduction!r}")


def target_weight_sum(targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """sum_i sum_c w_c t_ic: the mean's denominator (clamped so an all-zero batch gives 0 loss)."""
    w = _weight_vector(weight, targets.shape[1], targets)
    return (targets.to(w.dtype) * w).sum().clamp_min(1e-12)


def _weight_vector(
    weight: torch.Tensor | None, num_classes: int, like: torch.Tensor
) -> torch.Tensor:
    if weight is None:
        return torch.ones(num_classes, dtype=torch.float32, device=like.device)
    return weight.to(device=like.device, dtype=torch.float32)

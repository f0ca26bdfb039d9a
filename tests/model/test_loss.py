"""Class weights and the soft-target cross-entropy (CutMix-correct, equal to F.cross_entropy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from histosweep.model import ModelError, class_weights, soft_cross_entropy
from histosweep.model._loss import target_weight_sum


def test_class_weights_are_inverse_frequency_with_mean_one():
    labels = np.array([0] * 8 + [1] * 4 + [2] * 2 + [3] * 1)
    weights = class_weights(labels, 4)
    assert weights.shape == (4,) and weights.dtype == torch.float32
    assert weights.mean().item() == pytest.approx(1.0)
    ratios = (weights / weights[0]).tolist()
    assert ratios == pytest.approx([1.0, 2.0, 4.0, 8.0])


def test_absent_class_gets_neutral_weight_and_balanced_gets_ones():
    weights = class_weights(np.array([0, 0, 1, 1, 1, 1]), 4)
    assert weights[2].item() == 1.0 and weights[3].item() == 1.0
    assert weights[0].item() == pytest.approx(2 * weights[1].item())
    assert torch.allclose(class_weights(np.array([0, 1, 2, 3] * 5), 4), torch.ones(4))
    with pytest.raises(ModelError, match="labels"):
        class_weights(np.array([0, 4]), 4)


def _case(seed: int = 0, batch: int = 8, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=gen) * 3  # (B, C)
    labels = torch.randint(0, classes, (batch,), generator=gen)  # (B,)
    weight = torch.tensor([0.5, 1.0, 1.5, 2.0])
    return logits, labels, weight


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_one_hot_targets_equal_f_cross_entropy(smoothing):
    logits, labels, weight = _case()
    ours = soft_cross_entropy(
        logits, F.one_hot(labels, 4).float(), weight=weight, label_smoothing=smoothing
    )
    theirs = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    plain = soft_cross_entropy(logits, F.one_hot(labels, 4).float(), weight=None, label_smoothing=0)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.77, 1.0])
def test_cutmix_targets_equal_the_lambda_mix_of_two_losses(lam):
    logits, labels_a, weight = _case(seed=1)
    labels_b = labels_a[torch.randperm(len(labels_a), generator=torch.Generator().manual_seed(2))]
    assert not torch.equal(labels_a, labels_b)  # a real mix, not a no-op
    targets = lam * F.one_hot(labels_a, 4).float() + (1 - lam) * F.one_hot(labels_b, 4).float()
    ours = soft_cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    expected = lam * F.cross_entropy(logits, labels_a, weight=weight, label_smoothing=0.1) + (
        1 - lam
    ) * F.cross_entropy(logits, labels_b, weight=weight, label_smoothing=0.1)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sum_over_micro_batches_with_shared_denominator_equals_the_mean():
    logits, labels, weight = _case(seed=3)
    targets = 0.6 * F.one_hot(labels, 4).float() + 0.4 * F.one_hot(labels.flip(0), 4).float()
    denominator = target_weight_sum(targets, weight)
    parts = [
        soft_cross_entropy(
            logits[s], targets[s], weight=weight, label_smoothing=0.1, reduction="sum"
        )
        for s in (slice(0, 3), slice(3, 8))
    ]
    whole = soft_cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    assert (sum(parts) / denominator).item() == pytest.approx(whole.item(), rel=1e-6)
    per_sample = soft_cross_entropy(
        logits, targets, weight=weight, label_smoothing=0.1, reduction="none"
    )
    assert per_sample.shape == (8,)
    assert per_sample.sum().item() == pytest.approx(sum(parts).item(), rel=1e-6)


def test_gradient_flows_to_the_logits():
    logits, labels, weight = _case(seed=4)
    logits.requires_grad_(True)
    soft_cross_entropy(
        logits, F.one_hot(labels, 4).float(), weight=weight, label_smoothing=0.1
    ).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0

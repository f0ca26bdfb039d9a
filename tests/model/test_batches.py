"""Batching helpers: seeded epoch order, effective batches, micro-batch chunks, row source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosweep.model._batches import (
    RowSource,
    effective_batches,
    epoch_order,
    epoch_seed,
    micro_chunks,
)


def test_epoch_order_is_a_seeded_permutation():
    rows = np.arange(10, 40)
    first = epoch_order(rows, seed=3, epoch=0)
    assert sorted(first.tolist()) == rows.tolist()
    assert np.array_equal(first, epoch_order(rows, seed=3, epoch=0))
    assert not np.array_equal(first, epoch_order(rows, seed=3, epoch=1))
    assert not np.array_equal(first, epoch_order(rows, seed=4, epoch=0))
    assert epoch_seed(3, 0) == epoch_seed(3, 0) != epoch_seed(3, 1)


@pytest.mark.parametrize(
    ("n", "batch", "sizes"), [(9, 4, [4, 4]), (10, 4, [4, 4, 2]), (8, 4, [4, 4]), (1, 4, [])]
)
def test_effective_batches_drop_a_final_single(n, batch, sizes):
    batches = effective_batches(np.arange(n), batch)
    assert [len(b) for b in batches] == sizes


@pytest.mark.parametrize(
    ("n", "micro"), [(16, 16), (16, 4), (16, 5), (7, 2), (3, 2), (2, 2), (9, 4)]
)
def test_micro_chunks_cover_the_batch_with_at_least_two_rows(n, micro):
    chunks = micro_chunks(n, micro)
    covered = np.concatenate([np.arange(n)[c] for c in chunks])
    assert covered.tolist() == list(range(n))
    sizes = [c.stop - c.start for c in chunks]
    assert min(sizes) >= 2
    # an odd batch in pairs needs one chunk of 3; otherwise never above the micro-batch
    assert max(sizes) <= micro or (micro == 2 and n % 2 == 1 and max(sizes) == 3)


def test_row_source_gathers_the_requested_rows():
    images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    masks = (np.arange(6 * 4 * 4).reshape(6, 4, 4) % 2).astype(np.uint8)
    labels = np.array([0, 1, 2, 3, 0, 1])
    source = RowSource(images, masks, labels, torch.device("cpu"), stage_rows=np.arange(6))
    assert not source.staged  # staging is a CUDA-only optimisation
    img, msk, lab = source.batch(np.array([4, 1]))
    assert img.dtype == torch.uint8 and img.shape == (2, 4, 4, 3)
    assert torch.equal(img, torch.from_numpy(images[[4, 1]]))
    assert torch.equal(msk, torch.from_numpy(masks[[4, 1]]))
    assert lab.tolist() == [0, 1]

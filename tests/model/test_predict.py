"""predict_probs: shapes, order, batch-size independence, flip/rot90 TTA; pick_device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosweep.model import ModelError, TrainConfig, build_model, pick_device, predict_probs


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model(TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t"))
    return model.eval()


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)  # (N, R, R, 3)
    masks = (rng.random((7, 32, 32)) > 0.5).astype(np.uint8)  # (N, R, R)
    return images, masks


def test_probs_shape_sum_and_dtype(net, arrays):
    probs = predict_probs(net, *arrays, batch_size=3)
    assert probs.shape == (7, 4) and probs.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert not net.training


def test_batch_size_and_row_order_do_not_change_a_row(net, arrays):
    images, masks = arrays
    whole = predict_probs(net, images, masks, batch_size=32)
    small = predict_probs(net, images, masks, batch_size=2)
    assert np.allclose(whole, small, atol=1e-6)
    perm = np.array([6, 2, 0, 5, 1, 4, 3])
    shuffled = predict_probs(net, images[perm], masks[perm], batch_size=4)
    assert np.allclose(shuffled, whole[perm], atol=1e-6)
    assert not np.allclose(whole[0], whole[1])  # rows really differ, so order is tested


def test_tta_is_the_mean_over_the_eight_flips_and_rotations(net, arrays):
    images, masks = arrays
    tta = predict_probs(net, images, masks, batch_size=4, tta=True)
    views = []
    for flip in (False, True):
        img = images[:, :, ::-1] if flip else images  # flip the width axis
        msk = masks[:, :, ::-1] if flip else masks
        for k in range(4):
            views.append(
                predict_probs(
                    net,
                    np.ascontiguousarray(np.rot90(img, k, axes=(1, 2))),
                    np.ascontiguousarray(np.rot90(msk, k, axes=(1, 2))),
                )
            )
    assert np.allclose(tta, np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(tta, views[0], atol=1e-4)  # TTA really averaged something


def test_empty_input_and_bad_lengths(net, arrays):
    images, masks = arrays
    assert predict_probs(net, images[:0], masks[:0]).shape == (0, 4)
    with pytest.raises(ModelError, match="7 images but 6 masks"):
        predict_probs(net, images, masks[:6])


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected

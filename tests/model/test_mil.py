"""TilePool: padded tiles never change an image's vector; each mode pools as documented."""

import pytest
import torch

from histosweep.model._mil import TILE_POOLS, TilePool


@pytest.mark.parametrize("mode", TILE_POOLS)
def test_padding_tiles_do_not_change_the_pooled_vector(mode):
    torch.manual_seed(0)
    pool = TilePool(mode, dim=8).eval()
    real = torch.randn(1, 3, 8)
    padded = torch.cat([real, 1e3 * torch.randn(1, 2, 8)], dim=1)
    valid = torch.tensor([[True, True, True, False, False]])
    assert torch.allclose(pool(real), pool(padded, valid), atol=1e-5)


def test_mean_and_max_pool_the_valid_tiles():
    x = torch.tensor([[[1.0, 4.0], [3.0, 0.0], [100.0, 100.0]]])
    valid = torch.tensor([[True, True, False]])
    assert torch.equal(TilePool("mean", 2)(x, valid), torch.tensor([[2.0, 2.0]]))
    assert torch.equal(TilePool("max", 2)(x, valid), torch.tensor([[3.0, 4.0]]))


def test_attention_weights_sum_to_one_and_learn():
    torch.manual_seed(0)
    pool = TilePool("attention", dim=4, hidden=8)
    x = torch.randn(2, 5, 4)
    valid = torch.ones(2, 5, dtype=torch.bool)
    w = pool.weights(x, valid)
    assert torch.allclose(w.sum(1), torch.ones(2))
    pool(x, valid).sum().backward()
    assert pool.attention_w.weight.grad.abs().sum() > 0


def test_an_empty_bag_is_refused():
    with pytest.raises(ValueError, match="empty bag"):
        TilePool("mean", 2)(torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool))

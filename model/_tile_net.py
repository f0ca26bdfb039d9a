"""TileNet: the dual-branch network applied to every tile of an image's bag (each tile with its
mask tile), the tiles' fused features pooled per image (model.TilePool), then the same head.

Exercise: `pytest tests/model/test_tiles.py`.
"""

from __future__ import annotations

import torch

from histosweep.model._mil import TilePool
from histosweep.model._net import DualBranchNet


class TileNet(DualBranchNet):
    """image (B, K, 3, T, T) + mask (B, K, 1, T, T) + valid (B, K) -> logits (B, num_classes)."""

    def __init__(self, *args, tile_pool: str = "attention", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tile_pool = TilePool(tile_pool, self.feature_dim)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, tiles = image.shape[:2]
        if valid is None:
            valid = torch.ones((batch, tiles), dtype=torch.bool, device=image.device)
        # NOTE: only the valid tiles go through the backbones: padding costs no compute.
        fused = self.forward_features(image[valid], mask[valid])  # (n_valid, F)
        features = fused.new_zeros((batch, tiles, fused.shape[1]))  # (B, K, F)
        features[valid] = fused
        return self.head(self.tile_pool(features, valid))  # (B, F) -> (B, C)

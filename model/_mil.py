"""Pooling of per-tile features into one per-image vector: mean, max, or gated attention MIL
(Ilse, Tomczak & Welling 2018, "Attention-based Deep Multiple Instance Learning").

Shared by the fine-tuned tile model and the frozen-embedding head. Bags are padded to K tiles;
`valid` (B, K) marks the real ones, so a padded tile never changes an image's vector.
Exercise: `pytest tests/model/test_mil.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from histosweep.constants import TILE_POOLS


class TilePool(nn.Module):
    """(B, K, D) tile features + (B, K) bool validity -> (B, D) image features."""

    def __init__(self, mode: str, dim: int, hidden: int = 128) -> None:
        super().__init__()
        if mode not in TILE_POOLS:
            raise ValueError(f"tile_pool must be one of {TILE_POOLS}, got {mode!r}")
        self.mode, self.dim = mode, dim
        if mode == "attention":
            self.attention_v = nn.Linear(dim, hidden)  # tanh branch
            self.attention_u = nn.Linear(dim, hidden)  # sigmoid gate
            self.attention_w = nn.Linear(hidden, 1)

    def weights(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K) pooling weights that sum to 1 over each image's valid tiles (mean/attention)."""
        if self.mode == "attention":
            gated = torch.tanh(self.attention_v(x)) * torch.sigmoid(self.attention_u(x))
            scores = self.attention_w(gated).squeeze(-1).float()  # (B, K)
        else:
            scores = torch.zeros(x.shape[:2], device=x.device)
        scores = scores.masked_fill(~valid, float("-inf"))
        return torch.softmax(scores, dim=1).to(x.dtype)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if not bool(valid.any(dim=1).all()):
            raise ValueError("every image needs at least one valid tile (empty bag)")
        if self.mode == "max":
            return x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        return (self.weights(x, valid).unsqueeze(-1) * x).sum(dim=1)

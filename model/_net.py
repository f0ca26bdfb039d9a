"""DualBranchNet: a timm image backbone on RGB, a timm mask backbone on the binary mask,
pooled features concatenated into a small MLP head. Exercise: `pytest tests/model/test_net.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from histosweep.model._backbones import create_backbone


def _pooled_width(backbone: nn.Module) -> int:
    # NOTE: timm models with a pre-logits layer (e.g. mobilenetv3) emit head_hidden_size
    # features when num_classes=0; everything else emits num_features.
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class DualBranchNet(nn.Module):
    """Image branch (in_chans=3) + mask branch (in_chans=1) -> concat -> head -> logits."""

    def __init__(
        self,
        image_backbone: str,
        mask_backbone: str,
        *,
        num_classes: int = 4,
        head_hidden: int = 256,
        dropout: float = 0.3,
        pretrained: bool = False,
        image_pretrained_path: str = "",
        mask_pretrained_path: str = "",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_backbone_name = image_backbone
        self.mask_backbone_name = mask_backbone
        self.num_classes = num_classes
        self.image_branch = create_backbone(
            image_backbone,
            field="image_backbone",
            in_chans=3,
            pretrained=pretrained or bool(image_pretrained_path),
            weights_path=image_pretrained_path,
            drop_path_rate=drop_path_rate,  # stochastic depth on the image branch only
        )
        self.mask_branch = create_backbone(
            mask_backbone,
            field="mask_backbone",
            in_chans=1,
            pretrained=pretrained or bool(mask_pretrained_path),
            weights_path=mask_pretrained_path,
        )
        self.feature_dim = _pooled_width(self.image_branch) + _pooled_width(self.mask_branch)
        # Reference head: BN on the fused features (the two branches have different scales).
        self.head = nn.Sequential(
            nn.BatchNorm1d(self.feature_dim),
            nn.Dropout(dropout),
            nn.Linear(self.feature_dim, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, num_classes),
        )

    def forward_features(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), mask (B, 1, H, W) -> fused features (B, F_img + F_mask)."""
        image_features = self.image_branch(image)  # (B, F_img)
        mask_features = self.mask_branch(mask)  # (B, F_mask)
        return torch.cat([image_features, mask_features], dim=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), mask (B, 1, H, W) -> logits (B, num_classes)."""
        return self.head(self.forward_features(image, mask))

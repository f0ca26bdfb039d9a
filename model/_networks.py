"""build_model: the trial's network for its input layout (data.InputSpec.layout): pictures ->
DualBranchNet, tile bags -> TileNet. Exercise: `pytest tests/model/test_net.py tests/model/test_tiles.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from histosweep.data import input_target
from histosweep.model._config import TrainConfig
from histosweep.model._net import DualBranchNet
from histosweep.model._tile_net import TileNet

# layout -> (network class, its extra keyword arguments from the config)
NETWORKS: dict[str, tuple[type[DualBranchNet], Callable[[TrainConfig], dict]]] = {
    "pictures": (DualBranchNet, lambda cfg: {}),
    "bags": (TileNet, lambda cfg: {"tile_pool": cfg.tile_pool}),
}


def build_model(
    cfg: TrainConfig, *, num_classes: int = 4, pretrained: bool | None = None
) -> DualBranchNet:
    """The trial's network. pretrained=None follows the config: a branch loads weights when
    cfg.pretrained is set or its *_pretrained_path is given (the path wins over the hub).
    pretrained=False loads nothing (checkpoint rebuilds); True forces timm's weights.
    """
    if pretrained is False:
        image_path = mask_path = ""
    else:
        image_path, mask_path = cfg.image_pretrained_path, cfg.mask_pretrained_path
    kind, extra = NETWORKS[input_target(cfg).layout]
    return kind(
        cfg.image_backbone,
        cfg.mask_backbone,
        num_classes=num_classes,
        head_hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        pretrained=bool(cfg.pretrained if pretrained is None else pretrained),
        image_pretrained_path=image_path,
        mask_pretrained_path=mask_path,
        drop_path_rate=cfg.drop_path_rate,
        **extra(cfg),
    )

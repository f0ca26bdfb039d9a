"""The model inputs a search space can pick (every combination of the pixel-changing keys), so
`prepare --space`, `check` and the demo can build or verify their caches before any worker runs.

Exercise: `histosweep prepare DATA --space space.toml`.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

# The TrainConfig fields that change the cached pixels, per input mode.
PIXEL_FIELDS = {
    "whole": ("resolution", "resize_mode"),
    "mask_crop": ("resolution", "resize_mode", "crop_margin"),
    "tiles": ("tile_size", "tile_scale", "tiles_per_image", "tile_min_mask"),
}


def space_input_targets(space) -> list | None:
    """Every data.input_target the space can pick; None when one of their keys is a range."""
    from histosweep.data import input_target

    modes = space.values("input_mode")
    if modes is None:
        return None
    targets = []
    for mode in modes:
        names = PIXEL_FIELDS[str(mode)]
        choices = [space.values(name) for name in names]
        if any(c is None for c in choices):
            return None
        for combo in itertools.product(*choices):
            values = dict(zip(names, combo, strict=True))
            targets.append(input_target(SimpleNamespace(input_mode=mode, **values)))
    return list(dict.fromkeys(targets))

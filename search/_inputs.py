"""The model inputs a search space can pick (every combination of each input mode's pixel fields,
data.InputSpec.fields), so `prepare --space`, `check` and the demo can build or verify their
caches before any worker runs.

Exercise: `histosweep prepare DATA --space space.toml`.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace


def space_input_targets(space) -> list | None:
    """Every data.input_target the space can pick; None when one of their keys is a range."""
    from histosweep.data import input_spec_class, input_target

    modes = space.values("input_mode")
    if modes is None:
        return None
    targets = []
    for mode in modes:
        names = input_spec_class(str(mode)).fields
        choices = [space.values(name) for name in names]
        if any(c is None for c in choices):
            return None
        for combo in itertools.product(*choices):
            values = dict(zip(names, combo, strict=True))
            targets.append(input_target(SimpleNamespace(input_mode=mode, **values)))
    return list(dict.fromkeys(targets))


def ranged_pixel_keys(space) -> list[str]:
    """The keys that change cached pixels (each input mode's InputSpec.fields) given as ranges:
    every trial would draw another value and build another cache."""
    from histosweep.data import input_spec_class

    modes = space.values("input_mode") or []
    names = dict.fromkeys(n for mode in modes for n in input_spec_class(str(mode)).fields)
    return [n for n in names if n in space.params and space.values(n) is None]

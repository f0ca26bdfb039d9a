"""ModelError: the one exception `model` raises for people (what, which backbone/file/key, what to do).

Exercise: `python -c "from model import check_backbone; check_backbone('convnext_tiy', field='image_backbone')"`.
"""

from __future__ import annotations

from histosweep.exceptions import HistosweepError


class ModelError(HistosweepError):
    """A model, checkpoint or training problem, phrased as one line with the fix."""

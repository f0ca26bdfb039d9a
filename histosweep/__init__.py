"""histosweep: hyperparameter search for dual-branch histology subtype classifiers.

One import root: `histosweep.storage`, `.data`, `.model`, `.artifacts`, `.search`, `.fleet`,
`.bundle` and the CLI in `histosweep.cli`. This module stays import-light (no torch): `histosweep --help` imports it.
"""

from histosweep.constants import CLASSES, NUM_CLASSES
from histosweep.exceptions import HistosweepError, UserError

__version__ = "0.2.0"

__all__ = ["CLASSES", "NUM_CLASSES", "HistosweepError", "UserError", "__version__"]

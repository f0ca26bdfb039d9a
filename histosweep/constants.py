"""Names defined once: environment variables and their defaults, the class list, resize modes.

Every package reads these from here; nothing below the CLI imports from `histosweep.cli`.
"""

from __future__ import annotations

# Environment variables (hatch keeps them in one `config/constants.py`; so do we).
ENV_STORAGE = "HISTOSWEEP_STORAGE"
ENV_ARTIFACTS = "HISTOSWEEP_ARTIFACTS"
ENV_CACHE = "HISTOSWEEP_CACHE"
ENV_DEBUG = "HISTOSWEEP_DEBUG"
DEFAULT_STORAGE = "sqlite:///histosweep.db"
DEFAULT_ARTIFACTS = "./artifacts"

# The challenge's classes, in label-id order (the submission writes them as text).
CLASSES: tuple[str, ...] = ("Luminal A", "Luminal B", "HER2(+)", "Triple negative")
NUM_CLASSES = len(CLASSES)

# `histosweep demo` works in this folder unless --workdir says otherwise.
DEMO_WORKDIR = "histosweep-demo"

# export-best selects its ensemble from this many top trials unless --candidates says otherwise.
DEFAULT_CANDIDATES = 20

# The lockbox (stratified holdout) fraction `create` uses unless --holdout says otherwise. NOTE: 0 —
# every image in the folds; export-best's BBC-CV is the honest estimate. bench/selection_seeds.py
# decided it: more training images tested higher than a lockbox on every seed (docs/performance.md).
DEFAULT_HOLDOUT = 0.0

# How an image becomes a square of `resolution` px.
RESIZE_MODES: tuple[str, ...] = ("stretch", "pad", "reflect")

# What the network sees of an image: the resized picture, the mask's bounding box, or tiles.
INPUT_MODES: tuple[str, ...] = ("whole", "mask_crop", "tiles")
# How a tiles image pools its tiles' features (model.TilePool).
TILE_POOLS: tuple[str, ...] = ("mean", "max", "attention")

# Largest image (width x height) that prepare, the cache and predict decode. Equal to PIL's own
# hard limit (2 x Image.MAX_IMAGE_PIXELS, where it raises DecompressionBombError), so one rule
# holds: up to this many pixels an image is read without PIL's bomb warning; above it, it is
# refused with one line naming the file. ~179 MP is e.g. 13,377 x 13,377; the challenge's
# largest images are ~6 MP.
MAX_IMAGE_PIXELS = 178_956_970

# The optimizers a trial can pick (timm.optim.create_optimizer_v2 names); Lion is the reference's.
OPTIMIZERS: tuple[str, ...] = ("lion", "adamw")

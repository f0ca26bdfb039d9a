"""Dataset discovery + validation, audit, splits, per-resolution uint8 cache, model inputs
(open_inputs: whole pictures, mask crops, native-resolution tile bags), batch augmentation, synth.

Callers import from here, never from the private modules. The torch-based names (BatchAugmenter,
to_model_inputs, rand_bbox) load lazily, so `import data` (and the decode pool) stays torch-free.
Exercise: `histosweep synth /tmp/s && histosweep prepare /tmp/s`.
"""

from histosweep.data._audit import AuditReport, audit_dataset
from histosweep.data._cache import (
    CachedArrays,
    build_cache,
    cache_present,
    default_cache_dir,
    open_cache,
)
from histosweep.data._dataset import CLASSES, DataError, Dataset, Sample, load_dataset
from histosweep.data._decode import RESIZE_MODES, decode_and_resize
from histosweep.data._embed_cache import (
    EmbeddingArrays,
    EmbeddingCache,
    embedding_dir,
    embeddings_present,
    open_embeddings,
    write_embeddings,
)
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._inputs import (
    INPUT_MODES,
    TileArrays,
    allocate_inputs,
    build_inputs,
    fallback_summary,
    input_key,
    input_manifest,
    input_present,
    input_target,
    open_inputs,
    open_target,
    store_input,
)
from histosweep.data._pool import decode_all
from histosweep.data._split import Split, make_split
from histosweep.data._synth import synthesize
from histosweep.data._tiles import FALLBACKS as INPUT_FALLBACKS
from histosweep.data._tiles import CropSpec, TileSpec

_LAZY = {
    "BatchAugmenter",
    "CutMixInfo",
    "to_model_inputs",
    "rand_bbox",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
}

__all__ = [
    "CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_FALLBACKS",
    "INPUT_MODES",
    "RESIZE_MODES",
    "AuditReport",
    "BatchAugmenter",
    "CachedArrays",
    "CropSpec",
    "CutMixInfo",
    "DataError",
    "EmbeddingArrays",
    "EmbeddingCache",
    "Dataset",
    "Sample",
    "Split",
    "TileArrays",
    "TileSpec",
    "allocate_inputs",
    "audit_dataset",
    "build_cache",
    "build_inputs",
    "cache_present",
    "dataset_fingerprint",
    "decode_all",
    "decode_and_resize",
    "embedding_dir",
    "embeddings_present",
    "default_cache_dir",
    "fallback_summary",
    "input_key",
    "input_manifest",
    "input_present",
    "input_target",
    "load_dataset",
    "make_split",
    "open_cache",
    "open_embeddings",
    "open_inputs",
    "open_target",
    "rand_bbox",
    "store_input",
    "synthesize",
    "to_model_inputs",
    "write_embeddings",
]


def __getattr__(name: str):
    if name in _LAZY:
        from histosweep.data import _augment

        return getattr(_augment, name)
    raise AttributeError(f"module 'histosweep.data' has no attribute {name!r}")

"""Dataset discovery + validation, audit, splits, per-resolution uint8 cache, model inputs
(open_inputs: one registered InputSpec per input mode: whole pictures, mask crops, native-resolution
tile bags; register_input adds one), batch augmentation, synth.

Callers import from here, never from the private modules. The torch-based names (BatchAugmenter,
to_model_inputs, rand_bbox) load lazily, so `import data` (and the decode pool) stays torch-free.
Exercise: `histosweep synth /tmp/s && histosweep prepare /tmp/s`.
"""

from histosweep.constants import INPUT_MODES
from histosweep.data._arrays import CachedArrays, TileArrays
from histosweep.data._audit import AuditReport, audit_dataset
from histosweep.data._cache import default_cache_dir
from histosweep.data._dataset import (
    CLASSES,
    DataError,
    Dataset,
    Sample,
    load_dataset,
    problems_line,
)
from histosweep.data._decode import RESIZE_MODES, decode_and_resize, resize_pair
from histosweep.data._embed_cache import (
    EmbeddingArrays,
    EmbeddingCache,
    embedding_build_lock,
    embedding_dir,
    embeddings_present,
    open_embeddings,
    write_embeddings,
)
from histosweep.data._fingerprint import dataset_fingerprint
from histosweep.data._inputs import (
    allocate_inputs,
    build_cache,
    build_inputs,
    cache_present,
    fallback_summary,
    input_key,
    input_manifest,
    input_present,
    input_target,
    open_cache,
    open_inputs,
    open_target,
    store_input,
)
from histosweep.data._modes import CropSpec, TileSpec, WholeSpec
from histosweep.data._pool import decode_all
from histosweep.data._spec import (
    InputSpec,
    PictureSpec,
    input_checks,
    input_modes,
    input_spec_class,
    register_input,
    unregister_input,
)
from histosweep.data._split import Split, make_split
from histosweep.data._synth import synthesize
from histosweep.data._tiles import FALLBACK_MASK, FALLBACK_WHOLE
from histosweep.data._tiles import FALLBACKS as INPUT_FALLBACKS

_LAZY = {
    "BatchAugmenter",
    "CutMixInfo",
    "to_model_inputs",
    "unregister_input",
    "rand_bbox",
    "register_input",
    "resize_pair",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
}

__all__ = [
    "CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FALLBACK_MASK",
    "FALLBACK_WHOLE",
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
    "InputSpec",
    "PictureSpec",
    "Sample",
    "Split",
    "TileArrays",
    "TileSpec",
    "WholeSpec",
    "allocate_inputs",
    "audit_dataset",
    "build_cache",
    "build_inputs",
    "cache_present",
    "dataset_fingerprint",
    "decode_all",
    "decode_and_resize",
    "embedding_build_lock",
    "embedding_dir",
    "embeddings_present",
    "default_cache_dir",
    "fallback_summary",
    "input_checks",
    "input_key",
    "input_manifest",
    "input_modes",
    "input_present",
    "input_spec_class",
    "input_target",
    "load_dataset",
    "problems_line",
    "make_split",
    "open_cache",
    "open_embeddings",
    "open_inputs",
    "open_target",
    "rand_bbox",
    "register_input",
    "resize_pair",
    "store_input",
    "synthesize",
    "to_model_inputs",
    "unregister_input",
    "write_embeddings",
]


def __getattr__(name: str):
    if name in _LAZY:
        from histosweep.data import _augment

        return getattr(_augment, name)
    raise AttributeError(f"module 'histosweep.data' has no attribute {name!r}")

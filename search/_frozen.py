"""Frozen-feature trials in a worker: the embedding cache each (backbone, weights, input) needs,
computed on demand once per machine and shared by every trial that asks for it.

Exercise: `histosweep worker STUDY --gpus cpu` on a study whose space sets train_mode = "frozen".
"""

from __future__ import annotations

import numpy as np


def frozen_cache_for(rt, cfg):
    """(data.EmbeddingCache, cache row of each study sample) for cfg's backbone and input."""
    from histosweep.model import input_key_for

    key = ("embed", cfg.image_backbone, cfg.pretrained, cfg.image_pretrained_path,
           input_key_for(cfg))
    if key not in rt._caches:
        from histosweep.model import ensure_embeddings

        emb = ensure_embeddings(rt.dataset(), cfg, device=rt.device, progress=rt.progress)
        row_of = {sid: i for i, sid in enumerate(emb.sample_ids)}
        rows = np.asarray([row_of[sid] for sid in rt.settings.sample_ids], dtype=np.int64)
        rt._caches[key] = (emb, rows)
    return rt._caches[key]


def fold_trainer(cfg):
    """The fold trainer for cfg.train_mode (both share train_fold's contract)."""
    from histosweep.model import train_fold, train_frozen_fold

    return train_frozen_fold if cfg.train_mode == "frozen" else train_fold

"""Dual-branch network, backbone registry, checkpoint I/O, fold trainer, TrainConfig, macro-F1.

Callers import from here, never from the private modules. The torch-based names load lazily, so
`from histosweep.model import TrainConfig` (space files, status, the worker's parent) stays
torch-free. Exercise: `pytest tests/model` and `python bench/train_step.py`.
"""

from __future__ import annotations

import importlib

from histosweep.model._config import (
    ConfigError,
    TrainConfig,
    field_defaults,
    field_names,
    field_types,
)
from histosweep.model._errors import ModelError
from histosweep.model._metrics import macro_f1, macro_f1_from_confusion

# name -> private module that defines it (imported on first use: these need torch/timm)
_LAZY = {
    "IMAGE_BACKBONES": "_backbones",
    "MASK_BACKBONES": "_backbones",
    "check_backbone": "_backbones",
    "ARCHITECTURE_FIELDS": "_checkpoint",
    "load_checkpoint": "_checkpoint",
    "read_checkpoint_config": "_checkpoint",
    "read_checkpoint_metadata": "_checkpoint",
    "save_checkpoint": "_checkpoint",
    "class_weights": "_loss",
    "soft_cross_entropy": "_loss",
    "backbone_parameters": "_memory",
    "run_train_step": "_memory",
    "staged_bytes": "_memory",
    "train_step_peak_bytes": "_memory",
    "TILE_POOLS": "_mil",
    "TilePool": "_mil",
    "DualBranchNet": "_net",
    "TileNet": "_tile_net",
    "predict_bag_probs": "_tile_predict",
    "build_model": "_networks",
    "pick_device": "_predict",
    "predict_probs": "_predict",
    "Embedder": "_embed",
    "build_embedder": "_embed",
    "embed_views": "_embed",
    "ensure_embeddings": "_embed",
    "input_key_for": "_embed",
    "state_sha256": "_embed",
    "FrozenHead": "_frozen",
    "head_probs": "_frozen",
    "train_frozen_fold": "_frozen",
    "FOUNDATION_MODELS": "_hub",
    "BackboneSpec": "_hub",
    "backbone_spec": "_hub",
    "HubProbe": "_weights",
    "WeightsStatus": "_weights",
    "weights_status": "_weights",
    "EpochMetrics": "_trainer",
    "FoldResult": "_fold",
    "train_fold": "_fold",
}

__all__ = [
    "ConfigError",
    "ModelError",
    "TrainConfig",
    "field_defaults",
    "field_names",
    "field_types",
    "macro_f1",
    "macro_f1_from_confusion",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"histosweep.model.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'histosweep.model' has no attribute {name!r}")

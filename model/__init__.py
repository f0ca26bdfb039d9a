"""Dual-branch network, backbone registry, checkpoint I/O, fold trainer, TrainConfig.

Exercise: `pytest tests/model` and `python bench/train_step.py`.
"""

from model._backbones import IMAGE_BACKBONES, MASK_BACKBONES, check_backbone
from model._checkpoint import (
    ARCHITECTURE_FIELDS,
    load_checkpoint,
    read_checkpoint_config,
    read_checkpoint_metadata,
    save_checkpoint,
)
from model._config import ConfigError, TrainConfig, field_names, field_types
from model._errors import ModelError
from model._loss import class_weights, soft_cross_entropy
from model._net import DualBranchNet, build_model
from model._predict import pick_device, predict_probs
from model._trainer import EpochMetrics, FoldResult, train_fold

__all__ = [
    "ARCHITECTURE_FIELDS",
    "IMAGE_BACKBONES",
    "MASK_BACKBONES",
    "ConfigError",
    "DualBranchNet",
    "EpochMetrics",
    "FoldResult",
    "ModelError",
    "TrainConfig",
    "build_model",
    "check_backbone",
    "class_weights",
    "field_names",
    "field_types",
    "load_checkpoint",
    "pick_device",
    "predict_probs",
    "read_checkpoint_config",
    "read_checkpoint_metadata",
    "save_checkpoint",
    "soft_cross_entropy",
    "train_fold",
]

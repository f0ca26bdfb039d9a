"""Dual-branch network, backbone registry, checkpoint I/O, fold trainer, TrainConfig."""

from model._config import ConfigError, TrainConfig, field_names, field_types

__all__ = ["ConfigError", "TrainConfig", "field_names", "field_types"]

"""What `--trials-per-gpu auto` measures: one real train step of a config (run here on the
CPU; the CUDA peak itself needs a GPU), the staged rows, and backbone sizes from the meta device."""

from __future__ import annotations

import math

import pytest
import torch

from histosweep.model import (
    ModelError,
    TrainConfig,
    backbone_parameters,
    run_train_step,
    staged_bytes,
    train_step_peak_bytes,
)


def test_run_train_step_runs_on_cpu():
    cfg = TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t", resolution=32,
                      batch_size=4, head_hidden=16, pretrained=False)
    loss = run_train_step(cfg, torch.device("cpu"))  # raises on any shape/dtype/optimizer problem
    assert math.isfinite(loss)


def test_peak_is_measured_on_cuda_only():
    with pytest.raises(ModelError, match="CUDA"):
        train_step_peak_bytes(TrainConfig(pretrained=False), torch.device("cpu"))


def test_staged_bytes_follow_the_row_source_limit():
    assert staged_bytes(100, 64) == 100 * 64 * 64 * 4
    assert staged_bytes(100_000, 384) == 0  # > 2 GiB: RowSource streams from the memmap instead


def test_backbone_parameters_rank_backbones():
    assert 0 < backbone_parameters("resnet10t") < backbone_parameters("resnet18")
    with pytest.raises(ModelError, match="--trials-per-gpu N"):
        backbone_parameters("hf-hub:someone/some-model")

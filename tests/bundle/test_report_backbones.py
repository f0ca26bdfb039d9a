"""The report's member table names the backbones a member really used: a frozen member only its
image backbone (it has no mask branch). Exercise: `python -m pytest -q tests/bundle/test_report_backbones.py`."""

from __future__ import annotations

from histosweep.bundle._report import _member_table


def _member(trial: int, **config) -> dict:
    config = {"image_backbone": "vit_tiny_patch16_224", "mask_backbone": "resnet18",
              "resolution": 32, "resize_mode": "stretch", **config}
    return {"trial": trial, "weight": 0.5, "oof_f1": 0.4, "config": config, "folds": []}


def test_frozen_members_show_only_the_image_backbone() -> None:
    table = _member_table([_member(1, train_mode="frozen"), _member(2, train_mode="finetune")])
    frozen, finetuned = table.split("<tr>")[2:]
    assert "vit_tiny_patch16_224 (frozen)" in frozen and "resnet18" not in frozen
    assert "vit_tiny_patch16_224 + resnet18" in finetuned

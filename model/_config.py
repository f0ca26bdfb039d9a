"""TrainConfig: the single typed truth for one trial's settings.

The search space suggests into it, the fold trainer reads it, the manifest writes it.
Exercise: `python -c "from model import TrainConfig; print(TrainConfig())"`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from histosweep.constants import OPTIMIZERS, RESIZE_MODES
from histosweep.exceptions import HistosweepError

KEEP_CHOICES = ("best", "last")
TRAIN_MODES = ("finetune", "frozen")
FROZEN_HEADS = ("linear", "mlp")  # linear: LN -> Dropout -> Linear; mlp adds Linear(head_hidden)+ReLU


class ConfigError(HistosweepError, ValueError):
    """A TrainConfig value that cannot work (one line, names the field)."""


@dataclass(frozen=True)
class TrainConfig:
    # --- input -------------------------------------------------------------------------
    resolution: int = 384  # square side in px; the reference recipe's best trade-off
    resize_mode: str = "stretch"  # stretch | pad (letterbox) | reflect (reflect-pad to square)
    # whole: the picture resized to `resolution`; mask_crop: the tumour mask's bounding box
    # (+ crop_margin) resized to `resolution`; tiles: native-resolution tiles (below) pooled per image.
    # Any mode registered with data.register_input (data.InputSpec) is valid.
    input_mode: str = "whole"
    crop_margin: float = 0.1  # mask_crop: box grown by this fraction of its sides on each side
    # tiles: up to tiles_per_image tiles of tile_size px cut at tile_scale x native resolution,
    # ranked by tumour-mask coverage (>= tile_min_mask); an empty mask ranks by Otsu tissue.
    tile_size: int = 256  # why: ~a ConvNeXt's native 224 with room for nuclei at 1x scale
    tile_scale: float = 1.0  # 1 = native pixels; 0.5 = half (twice the field of view per tile)
    tiles_per_image: int = 16  # bag at evaluation (the cached tiles per image)
    tile_min_mask: float = 0.5  # share of a tile's pixels in the tumour mask to rank it
    tile_bag: int = 8  # tiles drawn per image per training step (fresh each epoch); 0 = all
    tile_pool: str = "attention"  # mean | max | attention (gated attention MIL, Ilse et al. 2018)
    # --- model -------------------------------------------------------------------------
    image_backbone: str = "convnext_tiny"  # any timm name; Small overfit in the reference
    mask_backbone: str = "resnet18"  # any timm name, built with in_chans=1
    pretrained: bool = False  # timm's own loading (hub or local HF cache)
    image_pretrained_path: str = ""  # local weights file for the image branch (overrides hub)
    mask_pretrained_path: str = ""  # local weights file for the mask branch
    head_hidden: int = 256  # Linear(hidden) in BN -> Dropout -> Linear -> ReLU -> Dropout -> Linear
    dropout: float = 0.3
    # Stochastic depth of the image backbone (timm drop_path_rate); 0 = off, as the reference.
    drop_path_rate: float = 0.0
    # --- optimisation ------------------------------------------------------------------
    optimizer: str = "lion"  # lion (the reference) | adamw; built by timm's optimizer factory
    epochs: int = 30
    batch_size: int = 16  # effective batch = micro-batch * accumulation
    accumulation: int = 1  # gradient accumulation steps
    lr: float = 1e-4  # Lion wants ~3-10x smaller lr than AdamW
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    t0: int = 10  # CosineAnnealingWarmRestarts T_0, in epochs (stepped per iteration)
    t_mult: int = 1  # CosineAnnealingWarmRestarts T_mult
    # EMA of the weights (timm ModelEmaV3), updated after every optimizer step; 0 = off. When on,
    # validation, the kept weights and the checkpoint are the EMA's. The decay warms up (timm's
    # 1 - (1 + step)^-2/3) to at most this value: a fold is only hundreds of steps.
    ema_decay: float = 0.0
    # --- augmentation ------------------------------------------------------------------
    color_jitter_prob: float = 0.8  # reference: ColorJitter with p=0.8
    cutmix_prob: float = 0.5  # chance a batch gets CutMix
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) for the pasted area
    # --- runtime -----------------------------------------------------------------------
    keep: str = "best"  # which epoch's weights a fold returns: best (val F1) | last
    # Re-estimate BatchNorm running stats on this many (un-augmented) training images before
    # each validation; 0 = off. why: at Lion's larger lrs the running stats lag the weights and
    # eval-mode F1 collapses (synthetic 64 px: val F1 0.28 -> 0.61 with it). why 32: on paired
    # folds (bench/bn_recal.py) 32 images scored as 256 did on a labelled test set, at a fifth of
    # the cost (256 was ~18 % of a small fold's wall time, 32 is ~3.5 %).
    bn_recalibration_images: int = 32
    compile: bool = False  # torch.compile on CUDA
    # --- frozen features (train_mode = frozen) ------------------------------------------
    # finetune: the dual-branch network end to end. frozen: image_backbone embeds every image
    # once into the cache (`histosweep embed`); a trial trains only a head on the embeddings
    # (lr, weight_decay, dropout, head_hidden, epochs, optimizer apply; augmentation does not).
    train_mode: str = "finetune"
    frozen_head: str = "linear"
    # why: the mask branch costs a backbone; its tumour coverage (fraction of mask pixels per
    # view) carries much of its signal and is free, so it rides along as one extra input
    frozen_mask_stats: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.resolution >= 32, "resolution must be >= 32"),
            (self.resize_mode in RESIZE_MODES, f"resize_mode must be one of {RESIZE_MODES}"),
            *_input_checks(self),
            (self.keep in KEEP_CHOICES, f"keep must be one of {KEEP_CHOICES}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs two samples)"),
            (self.accumulation >= 1, "accumulation must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.drop_path_rate < 1, "drop_path_rate must be in [0, 1)"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1) (0 = off)"),
            (self.t0 >= 1 and self.t_mult >= 1, "t0 and t_mult must be >= 1"),
            (0 <= self.color_jitter_prob <= 1, "color_jitter_prob must be in [0, 1]"),
            (0 <= self.cutmix_prob <= 1, "cutmix_prob must be in [0, 1]"),
            (self.cutmix_alpha > 0, "cutmix_alpha must be > 0"),
            (self.head_hidden >= 1, "head_hidden must be >= 1"),
            (self.bn_recalibration_images >= 0, "bn_recalibration_images must be >= 0"),
            (self.train_mode in TRAIN_MODES, f"train_mode must be one of {TRAIN_MODES}"),
            (self.frozen_head in FROZEN_HEADS, f"frozen_head must be one of {FROZEN_HEADS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid TrainConfig: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _input_checks(cfg: TrainConfig) -> list[tuple[bool, str]]:
    """input_mode is a registered mode; every mode checks its own fields (data.InputSpec.checks)."""
    # NOTE: imported here, not at the top: `from histosweep.model import TrainConfig` stays
    # free of PIL and the data package until a config is built.
    from histosweep.data import input_checks

    return input_checks(cfg)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def field_defaults() -> dict[str, Any]:
    """Every field's default, read off the class: no TrainConfig is built (nothing validated)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def field_types() -> dict[str, type]:
    """Python type of every field (int, float, str, bool), for space-file validation."""
    return {name: type(value) for name, value in field_defaults().items()}

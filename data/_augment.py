"""Whole-batch augmentation on the training device: dihedral flips/rotations, colour jitter, CutMix.

uint8 batches in, ImageNet-normalised float batches out; no per-sample Python loops over pixels.
Exercise: `python bench/input_pipeline.py` (and every training fold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane, so it stays linear.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# NOTE: CPU colour work in chunks of ~512K values (2 MB as float, one 384 px picture): the
# temporaries stay in cache, and malloc reuses them instead of mmapping fresh pages each time.
_CPU_CHUNK = 1 << 19


def rand_bbox(
    height: int, width: int, lam: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box covering ~(1 - lam) of the picture, centre uniform (timm mixup.py)."""
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def to_model_inputs(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval path: (B, H, W, 3) uint8, (B, H, W) uint8 -> (B, 3, H, W) normalised, (B, 1, H, W) float."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    planes = images.permute(0, 3, 1, 2).contiguous().float()  # (B, 3, H, W)
    return planes.div_(255.0).sub_(mean).div_(std), masks.unsqueeze(1).float()


@dataclass(frozen=True)
class CutMixInfo:
    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    lam: float  # share of each picture left unpasted = weight of its own label
    perm: torch.Tensor  # (B,) source row of the pasted box


class BatchAugmenter:
    """Random dihedral transform + colour jitter (prob p) + CutMix (prob q), deterministic per seed."""

    def __init__(
        self,
        *,
        color_jitter_prob: float,
        cutmix_prob: float,
        cutmix_alpha: float,
        num_classes: int = 4,
        seed: int = 0,
        device="cpu",
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.05,
    ) -> None:
        self.color_jitter_prob = color_jitter_prob
        self.cutmix_prob = cutmix_prob
        self.cutmix_alpha = cutmix_alpha
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.jitter = (brightness, contrast, saturation, hue)
        # NOTE: all draws come from CPU generators, so a seed gives the same batches on any device.
        self.generator = torch.Generator().manual_seed(seed)
        self._beta_rng = np.random.default_rng(seed)
        self.last_cutmix: CutMixInfo | None = None
        self.last_choice: torch.Tensor | None = None  # (B,) dihedral element per sample

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, H, W, 3) u8, (B, H, W) u8, (B,) i64 -> (B, 3, H, W) f32, (B, 1, H, W) f32, (B, C) f32."""
        # NOTE: planar (B, C, H, W) uint8 from the first copy on: 2-D plane rotations and the
        # (3, 3) @ (3, HW) colour matmul are ~2x cheaper than on interleaved RGB pixels.
        device = self.device  # inputs normally live there already: then .to() is a no-op
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)
        planes = images.permute(0, 3, 1, 2)  # (B, 3, H, W) view
        planes, mask_planes = self._dihedral(planes, masks.unsqueeze(1))  # fresh contiguous copies
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()  # (B, C)
        planes, mask_planes, targets = self._cutmix(planes, mask_planes, targets)
        return self._colour(planes), mask_planes.float(), targets

    def _dihedral(
        self, planes: torch.Tensor, mask_planes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample one of the 8 flips/rotations (4 when not square), same for image and mask.

        (B, 3, H, W) and (B, 1, H, W) uint8 (any strides) -> contiguous copies, caller's order.
        """
        batch, _, height, width = mask_planes.shape
        n_elements = 8 if height == width else 4
        choice = torch.randint(n_elements, (batch,), generator=self.generator)  # (B,)
        if height != width:
            choice = choice * 2  # even choices only: rotations by 0 / 180 degrees keep the shape
        self.last_choice = choice
        planes_out = torch.empty(planes.shape, dtype=planes.dtype, device=planes.device)
        masks_out = torch.empty(mask_planes.shape, dtype=mask_planes.dtype, device=planes.device)
        # NOTE: one strided whole-picture copy per sample (no pixel loop) is a single pass that also
        # makes the layout planar; grouping by choice with gathers/index_put costs 3 passes on CPU.
        for row, element in enumerate(choice.tolist()):
            planes_out[row].copy_(_dihedral_element(planes[row], element))  # (3, H, W)
            masks_out[row].copy_(_dihedral_element(mask_planes[row], element))  # (1, H, W)
        return planes_out, masks_out

    def _cutmix(self, planes, mask_planes, targets):
        """With prob cutmix_prob: ONE box from a permuted batch into images AND masks; area-weighted targets."""
        self.last_cutmix = None
        if (
            self.cutmix_prob <= 0
            or float(torch.rand(1, generator=self.generator)) >= self.cutmix_prob
        ):
            return planes, mask_planes, targets
        batch, _, height, width = mask_planes.shape
        lam = float(self._beta_rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        perm = torch.randperm(batch, generator=self.generator)  # (B,) source row per sample
        y0, y1, x0, x1 = rand_bbox(height, width, lam, self.generator)
        perm_dev = perm.to(planes.device)
        # NOTE: index_select copies the source first (and is ~10x faster than advanced indexing on CPU)
        planes[..., y0:y1, x0:x1] = planes[..., y0:y1, x0:x1].index_select(0, perm_dev)
        mask_planes[..., y0:y1, x0:x1] = mask_planes[..., y0:y1, x0:x1].index_select(0, perm_dev)
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)  # the area actually pasted
        targets = lam * targets + (1.0 - lam) * targets.index_select(0, perm_dev)
        self.last_cutmix = CutMixInfo((y0, y1, x0, x1), lam, perm)
        return planes, mask_planes, targets

    def _colour(self, planes: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> jittered, ImageNet-normalised float (B, 3, H, W), contiguous.

        y = (clamp(A x / 255 + t, 0, 1) - mean) / std, folded into one (3, 3) @ (3, HW) baddbmm per
        sample and a clamp in normalised space.
        """
        batch, _, height, width = planes.shape
        device = planes.device
        # NOTE: the draws stay on the CPU and the grey mean on the device: reading it back would
        # wait for the previous training step on a GPU
        matrix, pull = self._jitter_params(batch)  # (B, 3, 3), (B,)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        matrix = (matrix / (255.0 * std[None, :, None])).to(device)  # output rows scaled by 1/std
        offset = pull.to(device) * _grey_mean(planes)  # (B,) contrast pull towards the mean grey
        offset = ((offset[:, None] - mean.to(device)) / std.to(device))[:, :, None]  # (B, 3, 1)
        low, high = (-mean / std).tolist(), ((1 - mean) / std).tolist()  # normalised 0 and 1
        out = torch.empty((batch, 3, height * width), dtype=torch.float32, device=device)
        step = batch if device.type != "cpu" else max(1, _CPU_CHUNK // (height * width * 3))
        for first in range(0, batch, step):  # CPU: chunks small enough for malloc to reuse memory
            last = min(batch, first + step)
            x = planes[first:last].reshape(last - first, 3, height * width).float()  # (n, 3, HW)
            y = out[first:last]
            torch.baddbmm(offset[first:last], matrix[first:last], x, out=y)  # (n, 3, HW)
            for channel in range(3):
                y[:, channel].clamp_(low[channel], high[channel])
        return out.view(batch, 3, height, width)

    def _jitter_params(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample colour matrix A (B, 3, 3) and contrast pull p (B,) on [0, 1] RGB: the offset
        is t = p * mean grey in every channel; identity (A = I, p = 0) when skipped."""
        g = self.generator
        bri, con, sat, hue = self.jitter
        apply = torch.rand(batch, generator=g) < self.color_jitter_prob  # (B,)

        def uniform(spread: float) -> torch.Tensor:  # (B,) factors in [1 - spread, 1 + spread]
            return 1.0 + spread * (2 * torch.rand(batch, generator=g) - 1)

        b, c, s = uniform(bri), uniform(con), uniform(sat)  # (B,)
        theta = 2 * math.pi * hue * (2 * torch.rand(batch, generator=g) - 1)  # (B,)
        b, c, s, theta = (
            torch.where(apply, v, torch.full_like(v, d))
            for v, d in ((b, 1), (c, 1), (s, 1), (theta, 0))
        )
        grey = torch.tensor(_GREY)
        eye = torch.eye(3)
        saturate = (
            s[:, None, None] * eye + (1 - s)[:, None, None] * grey[None, None, :]
        )  # (B, 3, 3)
        rotate = _hue_rotation(theta)  # (B, 3, 3)
        matrix = (c * b)[:, None, None] * rotate @ saturate
        return matrix, (1 - c) * b  # (B, 3, 3), (B,)


def _dihedral_element(x: torch.Tensor, element: int) -> torch.Tensor:
    """Element of the dihedral group on the last two dims: element // 4 = h-flip, element % 4 = rot90s."""
    if element >= 4:
        x = x.flip(-1)
    return torch.rot90(x, element % 4, dims=(-2, -1)) if element % 4 else x


def _grey_mean(planes: torch.Tensor) -> torch.Tensor:
    """(B,) mean luma in [0, 1] of (B, 3, H, W) uint8, from a 4x-strided view (no full pass)."""
    channel_means = planes[:, :, ::4, ::4].float().mean(dim=(2, 3))  # (B, 3)
    return (channel_means @ torch.tensor(_GREY, device=planes.device)) / 255.0


def _hue_rotation(theta: torch.Tensor) -> torch.Tensor:
    """(B,) angles -> (B, 3, 3) RGB matrices rotating chroma in YIQ space."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(theta.shape[0], 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ

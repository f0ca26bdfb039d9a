"""BatchAugmenter / to_model_inputs / rand_bbox: geometry shared by image and mask, CutMix, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosweep.data import IMAGENET_MEAN, IMAGENET_STD, BatchAugmenter, rand_bbox, to_model_inputs


def _batch(batch=8, size=16, seed=0):
    """Grey images whose mask is exactly (pixel > 127): any geometry must keep that relation."""
    g = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (batch, size, size), generator=g, dtype=torch.uint8)
    images = grey[..., None].expand(batch, size, size, 3).contiguous()  # (B, H, W, 3)
    masks = (grey > 127).to(torch.uint8)  # (B, H, W)
    labels = torch.arange(batch) % 4
    return images, masks, labels


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return torch.round((x * std + mean) * 255)  # (B, 3, H, W) back to 0..255


def _plain(**kwargs):
    return BatchAugmenter(color_jitter_prob=0.0, cutmix_prob=0.0, cutmix_alpha=1.0, **kwargs)


def test_shapes_dtypes_and_soft_targets():
    images, masks, labels = _batch()
    x, m, y = BatchAugmenter(color_jitter_prob=0.8, cutmix_prob=0.5, cutmix_alpha=1.0)(
        images, masks, labels
    )
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    assert m.shape == (8, 1, 16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert y.shape == (8, 4) and torch.allclose(y.sum(1), torch.ones(8))


def test_geometry_is_identical_on_image_and_mask():
    images, masks, labels = _batch(batch=32)
    augment = _plain(seed=3)
    x, m, _ = augment(images, masks, labels)
    pixels = _unnormalise(x)[:, 0]  # (B, H, W)
    assert torch.equal((pixels > 127).float(), m[:, 0])
    assert len(augment.last_choice.unique()) > 4  # many different flips/rotations were drawn
    for b, element in enumerate(augment.last_choice.tolist()):
        expected = images[b, ..., 0]
        expected = expected.flip(-1) if element >= 4 else expected
        expected = torch.rot90(expected, element % 4, dims=(0, 1))
        assert torch.equal(pixels[b], expected.float())


def test_inputs_are_not_modified():
    images, masks, labels = _batch()
    before = images.clone(), masks.clone()
    BatchAugmenter(color_jitter_prob=1.0, cutmix_prob=1.0, cutmix_alpha=1.0)(images, masks, labels)
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])


def test_non_square_batches_only_flip_or_turn_half_way():
    images = torch.randint(0, 256, (16, 8, 12, 3), dtype=torch.uint8)
    masks = (images[..., 0] > 127).to(torch.uint8)
    augment = _plain()
    x, m, _ = augment(images, masks, torch.zeros(16, dtype=torch.int64))
    assert x.shape == (16, 3, 8, 12) and m.shape == (16, 1, 8, 12)
    assert set(augment.last_choice.tolist()) <= {0, 2, 4, 6}


def test_cutmix_pastes_one_box_into_image_and_mask():
    batch, size = 6, 32
    values = torch.arange(batch, dtype=torch.uint8) * 40  # sample b is flat grey 40*b
    images = values.view(batch, 1, 1, 1).expand(batch, size, size, 3).contiguous()
    masks = (
        (torch.arange(batch) % 2)
        .to(torch.uint8)
        .view(batch, 1, 1)
        .expand(batch, size, size)
        .contiguous()
    )
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    augment = BatchAugmenter(color_jitter_prob=0.0, cutmix_prob=1.0, cutmix_alpha=1.0, seed=5)
    x, m, y = augment(images, masks, labels)
    info = augment.last_cutmix
    y0, y1, x0, x1 = info.box
    assert (y1 - y0) * (x1 - x0) > 0
    pixels = _unnormalise(x)[:, 0]
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    for b in range(batch):
        source = int(info.perm[b])
        assert (pixels[b][inside] == float(values[source])).all()
        assert (pixels[b][~inside] == float(values[b])).all()
        assert (m[b, 0][inside] == float(source % 2)).all() and (
            m[b, 0][~inside] == float(b % 2)
        ).all()
    lam = 1 - (y1 - y0) * (x1 - x0) / size**2
    assert info.lam == pytest.approx(lam)
    expected = lam * torch.eye(4)[labels] + (1 - lam) * torch.eye(4)[labels[info.perm]]
    assert torch.allclose(y, expected) and torch.allclose(y.sum(1), torch.ones(batch))


def test_no_cutmix_when_probability_is_zero():
    images, masks, labels = _batch()
    augment = _plain()
    _, _, y = augment(images, masks, labels)
    assert augment.last_cutmix is None and torch.equal(y, torch.eye(4)[labels])


def test_colour_jitter_changes_colours_only():
    images = torch.randint(30, 220, (8, 16, 16, 3), dtype=torch.uint8)
    masks = torch.ones(8, 16, 16, dtype=torch.uint8)
    labels = torch.zeros(8, dtype=torch.int64)
    plain, _, _ = _plain(seed=1)(images, masks, labels)
    jittered, m, _ = BatchAugmenter(
        color_jitter_prob=1.0, cutmix_prob=0.0, cutmix_alpha=1.0, seed=1
    )(images, masks, labels)
    assert (m == 1).all()
    assert (jittered - plain).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every sample recoloured
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert (jittered >= low.view(1, 3, 1, 1) - 1e-5).all() and (
        jittered <= high.view(1, 3, 1, 1) + 1e-5
    ).all()


def test_identity_jitter_equals_to_model_inputs():
    images = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    masks = torch.randint(0, 2, (4, 8, 8), dtype=torch.uint8)
    augment = _plain()
    x, _, _ = augment(images, masks, torch.zeros(4, dtype=torch.int64))
    reference, mask_ref = to_model_inputs(images, masks)
    for b, element in enumerate(augment.last_choice.tolist()):
        expected = reference[b].flip(-1) if element >= 4 else reference[b]
        expected = torch.rot90(expected, element % 4, dims=(-2, -1))
        assert torch.allclose(x[b], expected, atol=1e-5)
    assert mask_ref.shape == (4, 1, 8, 8)


def test_to_model_inputs_normalises():
    images = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    x, m = to_model_inputs(images, torch.ones(2, 4, 4, dtype=torch.uint8))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert x.shape == (2, 3, 4, 4) and torch.allclose(x[0, :, 0, 0], expected)
    assert m.dtype == torch.float32 and (m == 1).all()


def test_deterministic_for_a_seed():
    images, masks, labels = _batch(batch=16)

    def make(seed):
        return BatchAugmenter(color_jitter_prob=0.8, cutmix_prob=0.7, cutmix_alpha=1.0, seed=seed)

    a, b, c = make(0), make(0), make(1)
    for _ in range(3):
        out_a, out_b, out_c = (
            a(images, masks, labels),
            b(images, masks, labels),
            c(images, masks, labels),
        )
        assert all(torch.equal(p, q) for p, q in zip(out_a, out_b, strict=True))
    assert not torch.equal(out_a[0], out_c[0])


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
def test_rand_bbox_stays_inside(lam):
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        y0, y1, x0, x1 = rand_bbox(40, 60, lam, g)
        assert 0 <= y0 <= y1 <= 40 and 0 <= x0 <= x1 <= 60
        assert (y1 - y0) * (x1 - x0) <= round((1 - lam) * 40 * 60) + 1


def test_rand_bbox_area_follows_lam():
    g = torch.Generator().manual_seed(0)
    areas = [
        np.prod(np.diff(np.array(rand_bbox(100, 100, 0.75, g)).reshape(2, 2))) for _ in range(200)
    ]
    assert 0.1 < np.mean(areas) / 100**2 < 0.26  # 0.25 when centred; clipped at the borders

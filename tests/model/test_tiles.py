"""The tile model: pooled bags ignore padding, seeded bags, CutMix inside one image, a tile fold
that trains, predicts like its kept weights and halves its micro-batch on OOM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosweep.model import ModelError, TileNet, TrainConfig, predict_bag_probs, train_fold
from histosweep.model._tile_bags import cutmix_within_bags, eval_bags, train_bags

TINY_TILES = TrainConfig(
    input_mode="tiles",
    tile_size=32,
    tiles_per_image=4,
    tile_min_mask=0.3,
    tile_bag=2,
    image_backbone="convnext_atto",
    mask_backbone="resnet10t",
    head_hidden=16,
    epochs=2,
    batch_size=4,
    lr=1e-3,
    t0=2,
    bn_recalibration_images=8,
)


def _net(pool: str) -> TileNet:
    torch.manual_seed(0)
    return TileNet("convnext_atto", "resnet10t", head_hidden=16, tile_pool=pool).eval()


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_padding_tiles_never_change_the_prediction_and_gradients_flow(pool):
    net = _net(pool)
    images, masks = torch.randn(2, 3, 3, 32, 32), torch.ones(2, 3, 1, 32, 32)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    with torch.no_grad():
        before = net(images, masks, valid)
        images[~valid] = torch.randn(3, 3, 32, 32) * 5  # garbage in the padding
        after = net(images, masks, valid)
    assert before.shape == (2, 4) and torch.isfinite(before).all()
    torch.testing.assert_close(before, after)
    net.train()
    net(images, masks, valid).sum().backward()
    assert net.image_branch.stem[0].weight.grad.abs().sum() > 0


def test_train_bags_are_seeded_fresh_each_epoch_and_inside_each_image():
    counts = np.array([1, 3, 6, 6, 6, 6])
    picks, valid = train_bags(counts, 4, seed=7, epoch=0)
    again, _ = train_bags(counts, 4, seed=7, epoch=0)
    other, _ = train_bags(counts, 4, seed=7, epoch=1)
    np.testing.assert_array_equal(picks, again)  # a retried epoch repeats its bags
    assert not np.array_equal(picks, other)
    assert valid.sum(1).tolist() == [1, 3, 4, 4, 4, 4]
    for row, k in enumerate(counts):
        chosen = picks[row][valid[row]]
        assert (chosen < k).all() and len(set(chosen.tolist())) == len(chosen)
    eval_picks, eval_valid = eval_bags(counts, 6)
    assert eval_valid.sum(1).tolist() == counts.tolist() and (eval_picks[:, 0] == 0).all()


def test_cutmix_pastes_only_from_tiles_of_the_same_image():
    planes = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 4, 3, 16, 16).clone()  # image id
    planes[:, :, 0] += torch.arange(4.0).view(1, 4, 1, 1) / 10  # tile id in channel 0
    masks = planes[:, :, :1].clone()
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    assert cutmix_within_bags(planes, masks, valid, prob=1.0, alpha=1.0, generator=generator)
    for image in range(3):
        assert (planes[image].floor() == image).all()  # nothing from another image (label)
    assert planes[0, 0, 0].unique().numel() == 2  # tile 0 of image 0 got a box of a sibling
    torch.testing.assert_close(masks, planes[:, :, :1])  # masks pasted with the same box


@pytest.fixture(scope="module")
def tile_setup(synth_root, tmp_path_factory):
    from histosweep.data import load_dataset, open_inputs

    ds = load_dataset(synth_root)
    ds.samples = ds.samples[:24]
    cache = open_inputs(ds, TINY_TILES, cache_dir=tmp_path_factory.mktemp("tiles"), workers=1,
                        progress=False)
    labels = ds.labels()[:24]
    rng = np.random.default_rng(0)
    rows = [rng.permutation(np.flatnonzero(labels == c)) for c in range(4)]
    split = {
        "train_idx": np.concatenate([r[:3] for r in rows]),
        "val_idx": np.concatenate([r[3:4] for r in rows if len(r) > 3]),
        "holdout_idx": np.concatenate([r[4:5] for r in rows if len(r) > 4]),
    }
    return cache, labels, split


def test_tile_fold_trains_and_its_weights_predict_its_validation_probs(tile_setup):
    cache, labels, split = tile_setup
    result = train_fold(TINY_TILES, cache, labels, **split, device="cpu", progress=False)
    assert len(result.epochs) == 2 and all(np.isfinite(m.train_loss) for m in result.epochs)
    assert result.val_probs.shape == (len(split["val_idx"]), 4)
    assert result.holdout_probs.shape == (len(split["holdout_idx"]), 4)
    net = result.model()
    assert isinstance(net, TileNet)
    rows = split["val_idx"]
    probs = predict_bag_probs(net, cache.images[rows], cache.masks[rows], cache.counts[rows])
    np.testing.assert_allclose(probs, result.val_probs, atol=1e-5)
    tta = predict_bag_probs(net, cache.images[rows], cache.masks[rows], cache.counts[rows], tta=True)
    assert tta.shape == probs.shape and np.allclose(tta.sum(1), 1.0)
    assert not np.allclose(tta, probs)  # 8 turned views of every tile, averaged


def test_tile_fold_refuses_a_cache_of_another_tiling(tile_setup):
    cache, labels, split = tile_setup
    with pytest.raises(ModelError, match="open_inputs"):
        train_fold(TINY_TILES.replace(tile_size=48), cache, labels, **split, progress=False)
    with pytest.raises(ModelError, match="tiles"):
        train_fold(TINY_TILES.replace(input_mode="whole"), cache, labels, **split, progress=False)


def test_oom_halves_the_micro_batch_and_counts_tiles(tile_setup, monkeypatch):
    cache, labels, split = tile_setup
    original, calls = TileNet.forward, {"n": 0}

    def forward(self, image, mask, valid=None):
        if self.training and image.shape[0] > 2:
            calls["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (simulated)")
        return original(self, image, mask, valid)

    monkeypatch.setattr(TileNet, "forward", forward)
    result = train_fold(TINY_TILES.replace(epochs=1), cache, labels, **split, progress=False)
    event = result.oom_events[0]
    assert calls["n"] == 1 and event["micro_batch_after"] == 2
    assert (event["tiles_before"], event["tiles_after"]) == (8, 4)  # 4 then 2 images x bag 2


def test_mask_crop_fold_trains_on_its_own_cache_only(synth_root, tmp_path):
    from histosweep.data import load_dataset, open_inputs

    ds = load_dataset(synth_root)
    ds.samples = ds.samples[:24]
    labels = ds.labels()[:24]
    cfg = TINY_TILES.replace(input_mode="mask_crop", resolution=32, epochs=1)
    crop = open_inputs(ds, cfg, cache_dir=tmp_path, workers=1, progress=False)
    whole = open_inputs(ds, cfg.replace(input_mode="whole"), cache_dir=tmp_path, workers=1,
                        progress=False)
    split = {"train_idx": np.arange(16), "val_idx": np.arange(16, 20), "holdout_idx": np.arange(0)}
    result = train_fold(cfg, crop, labels, **split, progress=False)
    assert result.val_probs.shape == (4, 4) and np.isfinite(result.val_probs).all()
    assert not isinstance(result.model(), TileNet)
    with pytest.raises(ModelError, match="mask_crop"):
        train_fold(cfg, whole, labels, **split, progress=False)

"""The frozen-feature embedder and its cache: whole images (4-D) and tile bags (5-D) give
(N, K, D) fp16 + counts, padding stays zero, the cache is keyed by the weights and written
whole, and the head ignores padded tiles. Tiny ViT (timm test_vit), random init, 32 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histosweep.model import TrainConfig

CFG = TrainConfig(train_mode="frozen", image_backbone="test_vit", resolution=32)


@pytest.fixture(scope="module")
def embedder():
    from histosweep.model import build_embedder

    return build_embedder(CFG, device="cpu")


def _views(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8), rng.integers(0, 2, shape, dtype=np.uint8)


def test_whole_images_are_bags_of_one(embedder):
    from histosweep.model import embed_views

    images, masks = _views((5, 32, 32))
    out = embed_views(embedder, images, masks, batch_size=2, progress=False)
    assert out.features.shape == (5, 1, 64) and out.features.dtype == np.float16
    assert out.counts.tolist() == [1] * 5
    assert np.isfinite(out.features).all() and np.abs(out.features).sum() > 0
    np.testing.assert_allclose(out.coverage[:, 0], masks.mean(axis=(1, 2)), atol=1e-3)


def test_tile_bags_embed_valid_tiles_only_and_match_whole(embedder):
    from histosweep.model import embed_views

    tiles, tile_masks = _views((3, 4, 32, 32), seed=1)
    counts = np.array([1, 4, 2])
    out = embed_views(embedder, tiles, tile_masks, counts, batch_size=3, progress=False)
    assert out.features.shape == (3, 4, 64) and out.counts.tolist() == [1, 4, 2]
    valid = np.arange(4)[None] < counts[:, None]
    assert (np.abs(out.features).sum(-1) > 0)[valid].all()
    assert (out.features[~valid] == 0).all() and (out.coverage[~valid] == 0).all()
    # a tile embeds as the same picture given as a whole image (batching does not matter)
    single = embed_views(embedder, tiles[1], tile_masks[1], batch_size=1, progress=False)
    np.testing.assert_allclose(single.features[:, 0].astype(np.float32),
                               out.features[1].astype(np.float32), atol=2e-3)


def test_bad_tile_counts_are_refused(embedder):
    from histosweep.model import ModelError, embed_views

    tiles, tile_masks = _views((2, 3, 32, 32))
    with pytest.raises(ModelError, match="tile counts"):
        embed_views(embedder, tiles, tile_masks, np.array([0, 3]), progress=False)


def test_cache_is_keyed_by_weights_and_reused(embedder, synth_root, tmp_path):
    from histosweep.data import load_dataset
    from histosweep.model import ensure_embeddings

    ds = load_dataset(synth_root, labeled=True)
    first = ensure_embeddings(ds, CFG, cache_dir=tmp_path, progress=False, embedder=embedder)
    assert first.features.shape == (len(ds.samples), 1, 64)
    assert first.identity["weights_sha256"] == embedder.weights_sha256
    assert embedder.weights_sha256[:16] in str(first.path) and first.path.name == "32-stretch"
    mtime = (first.path / "features.npy").stat().st_mtime_ns
    again = ensure_embeddings(ds, CFG, cache_dir=tmp_path, progress=False, embedder=embedder)
    assert (again.path / "features.npy").stat().st_mtime_ns == mtime  # reused, not recomputed
    assert not list(first.path.parent.glob(".*.tmp"))  # no temp folder left behind
    with torch.no_grad():  # other weights -> another entry
        next(embedder.model.parameters()).add_(1.0)
    from histosweep.model import state_sha256

    embedder.weights_sha256 = state_sha256(embedder.model)
    other = ensure_embeddings(ds, CFG, cache_dir=tmp_path, progress=False, embedder=embedder)
    assert other.path != first.path and not np.array_equal(other.features, first.features)


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_head_ignores_padding_and_learns(pool, head):
    from histosweep.model import FrozenHead

    cfg = CFG.replace(tile_pool=pool, frozen_head=head, head_hidden=16, dropout=0.0)
    net = FrozenHead(8, cfg).eval()
    x = torch.randn(3, 4, 8)
    counts = torch.tensor([1, 4, 2])
    coverage = torch.rand(3, 4)
    logits = net(x, counts, coverage)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    x2, cov2 = x.clone(), coverage.clone()
    x2[0, 1:], x2[2, 2:], cov2[0, 1:] = 99.0, -99.0, 0.5  # change only padding
    torch.testing.assert_close(net(x2, counts, cov2), logits)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.net.parameters())


def test_frozen_fold_learns_separable_embeddings():
    from histosweep.data import EmbeddingArrays
    from histosweep.model import train_frozen_fold

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    centres = rng.normal(size=(4, 16)) * 3
    features = (centres[labels] + rng.normal(size=(48, 16)))[:, None].astype(np.float16)
    emb = EmbeddingArrays(features, np.ones(48, np.int32), np.full((48, 1), 0.3, np.float16))
    order = rng.permutation(48)
    cfg = CFG.replace(optimizer="adamw", lr=1e-2, epochs=5, batch_size=8)
    seen = []
    result = train_frozen_fold(cfg, emb, labels, train_idx=order[:32], val_idx=order[32:40],
                               holdout_idx=order[40:], device="cpu",
                               on_epoch=lambda m: seen.append(m.val_f1) or False)
    assert len(seen) == 5 and result.best_val_f1 > 0.9
    assert result.val_probs.shape == (8, 4) and result.holdout_probs.shape == (8, 4)
    stopped = train_frozen_fold(cfg, emb, labels, train_idx=order[:32], val_idx=order[32:40],
                                holdout_idx=order[40:], device="cpu", on_epoch=lambda m: True)
    assert stopped.stopped and len(stopped.epochs) == 1 and stopped.holdout_probs.shape == (0, 4)


@pytest.mark.parametrize("field,value", [("train_mode", "linear_probe"), ("frozen_head", "deep"),
                                         ("tile_pool", "sum")])
def test_frozen_fields_are_checked_in_one_line(field, value):
    from histosweep.model import ConfigError

    with pytest.raises(ConfigError, match=f"^invalid TrainConfig: {field} must be one of"):
        TrainConfig(**{field: value})


def test_embed_command_embeds_each_tile_and_refuses_a_bad_tiling(synth_root, tmp_path, capsys):
    """`histosweep embed --input-mode tiles`: one fp16 embedding per cached tile, keyed by the
    tiling; a tiling TrainConfig refuses is one line, exit 1, nothing cached."""
    import json

    from histosweep.cli import main

    tiles = ["--input-mode", "tiles", "--tile-size", "32", "--tiles-per-image", "4",
             "--tile-min-mask", "0.3"]
    base = ["embed", str(synth_root), "--backbone", "test_vit", "--cache", str(tmp_path / "c"),
            "--device", "cpu"]
    assert main([*base, *tiles, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["input"].startswith("tiles-32-") and doc["shape"][1:] == [4, 64]
    assert doc["images"] < doc["views"] <= 4 * doc["images"]  # bags of real tiles, no padding
    assert main([*base, "--input-mode", "tiles", "--tile-size", "8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tile_size" in err[0]
    assert not list((tmp_path / "c").rglob("tiles-8-*"))

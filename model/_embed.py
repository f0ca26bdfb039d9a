"""The frozen-feature embedder: a timm backbone (any name, `hf-hub:` included) run once over
every image or tile, fp16 embeddings into the per-machine cache.

Takes (N, R, R, 3) whole images (one view each) or (N, K, T, T, 3) tile bags with counts.
Exercise: `histosweep embed DATA --backbone NAME` or `pytest tests/model/test_embed.py`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from histosweep.data import input_target, open_inputs
from histosweep.model._backbones import create_backbone
from histosweep.model._config import TrainConfig
from histosweep.model._errors import ModelError
from histosweep.model._hub import BackboneSpec, backbone_spec
from histosweep.model._predict import autocast, pick_device

log = logging.getLogger("histosweep")
RANDOM_INIT_SEED = 0  # why: pretrained=false embeds with a reproducible random init (tests, bench)


@dataclass
class Embedder:
    """A frozen backbone in eval mode plus what it needs to read uint8 views."""

    name: str
    model: torch.nn.Module
    spec: BackboneSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_sha256: str  # of the loaded state dict: the cache key and the bundle's check
    dim: int
    device: torch.device

    def identity(self, input_key: str) -> dict:
        return {"backbone": self.name, "weights_sha256": self.weights_sha256, "dim": self.dim,
                "input": input_key, "embed_size": self.spec.input_size or 0,
                "embed_pool": self.spec.embed_pool}


def build_embedder(cfg: TrainConfig, *, device=None) -> Embedder:
    """cfg.image_backbone with the weights cfg names (hub cache, or image_pretrained_path)."""
    device = pick_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = create_backbone(
            cfg.image_backbone, field="image_backbone", in_chans=3,
            pretrained=cfg.pretrained or bool(cfg.image_pretrained_path),
            weights_path=cfg.image_pretrained_path,
        )
    model = model.eval().requires_grad_(False)
    spec = backbone_spec(cfg.image_backbone)
    mean, std = _normalisation(model, spec)
    digest = state_sha256(model)
    model = model.to(device)
    dim = int(_forward(model, spec, torch.zeros(1, 3, *_probe_size(model, spec), device=device)).shape[1])
    return Embedder(cfg.image_backbone, model, spec, mean, std, digest, dim, device)


def _normalisation(model: torch.nn.Module, spec: BackboneSpec) -> tuple[tuple, tuple]:
    """The table's mean/std, else timm's resolve_data_config for the model."""
    if spec.mean is not None and spec.std is not None:
        return tuple(spec.mean), tuple(spec.std)
    from timm.data import resolve_data_config

    config = resolve_data_config(model=model)
    return tuple(config["mean"]), tuple(config["std"])


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (sorted names, dtypes, shapes, bytes): the weights' identity."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _fixed_size(model: torch.nn.Module) -> int | None:
    """The side a ViT without dynamic_img_size insists on; None for anything else."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or getattr(model, "dynamic_img_size", False):
        return None
    size = getattr(patch_embed, "img_size", None)
    return int(size[0]) if size else None


def _probe_size(model, spec: BackboneSpec) -> tuple[int, int]:
    side = spec.input_size or _fixed_size(model) or 224
    return side, side


def _forward(model: torch.nn.Module, spec: BackboneSpec, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) normalised -> (B, D) embeddings."""
    if spec.embed_pool == "cls_mean_patch":
        tokens = model.forward_features(x)  # (B, prefix + patches, D)
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=1)
    return model(x)  # timm's pooled features (num_classes=0)


def embed_views(embedder: Embedder, images: np.ndarray, masks: np.ndarray,
                counts: np.ndarray | None = None, *, batch_size: int = 64,
                progress: bool = True, desc: str = "embed"):
    """(N, R, R, 3) or (N, K, T, T, 3) uint8 + masks -> data.EmbeddingArrays (N, K, D) fp16."""
    from histosweep.data import EmbeddingArrays

    images, masks, counts = _as_bags(images, masks, counts)
    n, k = images.shape[:2]
    features = np.zeros((n, k, embedder.dim), np.float16)
    coverage = np.zeros((n, k), np.float16)
    views = [(i, j) for i in range(n) for j in range(int(counts[i]))]  # valid views only
    bar = tqdm(total=len(views), desc=desc, unit="img", disable=not progress, leave=False)
    for start in range(0, len(views), batch_size):
        chunk = views[start:start + batch_size]
        rows, cols = np.array([v[0] for v in chunk]), np.array([v[1] for v in chunk])
        features[rows, cols] = _embed_batch(embedder, images[rows, cols])  # (b, D)
        coverage[rows, cols] = (masks[rows, cols] > 0).mean(axis=(1, 2))
        bar.update(len(chunk))
    bar.close()
    return EmbeddingArrays(features, counts.astype(np.int32), coverage)


def _as_bags(images, masks, counts):
    """Whole images become bags of one view; tile bags need counts in [1, K]."""
    if images.ndim == 4:  # (N, R, R, 3): one view per image
        return images[:, None], masks[:, None], np.ones(len(images), np.int32)
    if images.ndim != 5 or masks.ndim != 4 or counts is None:
        raise ModelError(f"embed wants (N, R, R, 3) images or (N, K, T, T, 3) tiles with counts; "
                         f"got images {images.shape}, masks {masks.shape}")
    counts = np.asarray(counts)
    if counts.shape != (len(images),) or counts.min() < 1 or counts.max() > images.shape[1]:
        raise ModelError(f"tile counts must be {len(images)} values in [1, {images.shape[1]}]")
    return images, masks, counts


@torch.inference_mode()
def _embed_batch(embedder: Embedder, views: np.ndarray) -> np.ndarray:
    """(b, S, S, 3) uint8 -> (b, D) fp16."""
    x = torch.from_numpy(np.ascontiguousarray(views)).to(embedder.device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (b, 3, S, S)
    side = embedder.spec.input_size or _fixed_size(embedder.model)
    if side and x.shape[-1] != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(embedder.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(embedder.std, device=x.device).view(1, 3, 1, 1)
    with autocast(embedder.device):
        out = _forward(embedder.model, embedder.spec, (x - mean) / std)
    return out.float().cpu().numpy().astype(np.float16)


def input_key_for(cfg: TrainConfig) -> str:
    """The input part of the cache key: the pixel cache's own key (data.InputSpec.key), e.g.
    "224-stretch", "crop-224-stretch-m0.1" or the tiling "tiles-256-s1.0-k16-m0.5"."""
    return input_target(cfg).key


def _input_arrays(ds, cfg: TrainConfig, *, cache_dir, progress: bool):
    """(images, masks, counts or None, sample_ids) the embedder reads for cfg's input mode:
    (N, R, R, 3)/(N, R, R) for pictures (counts None); a tiles cache gives
    (N, K, T, T, 3)/(N, K, T, T) and counts (N,), which embed_views takes as they are."""
    cache = open_inputs(ds, cfg, cache_dir=cache_dir, progress=progress)
    return cache.images, cache.masks, cache.counts, cache.sample_ids


def ensure_embeddings(ds, cfg: TrainConfig, *, cache_dir=None, device=None, batch_size: int = 64,
                      progress: bool = True, embedder: Embedder | None = None):
    """The embedding cache of `ds` for cfg's backbone and input; computed once when missing."""
    from histosweep.data import (
        embedding_build_lock,
        embedding_dir,
        embeddings_present,
        open_embeddings,
    )

    embedder = embedder or build_embedder(cfg, device=device)
    key = input_key_for(cfg)
    target = embedding_dir(ds, backbone=embedder.name, weights_sha256=embedder.weights_sha256,
                           input_key=key, cache_dir=cache_dir)
    if not embeddings_present(target):
        # NOTE: one build per machine: other slots wait here, then open what this one wrote
        with embedding_build_lock(target):
            if not embeddings_present(target):
                _compute(ds, cfg, embedder, target, cache_dir=cache_dir, batch_size=batch_size,
                         progress=progress)
    return open_embeddings(target, sample_ids=ds.sample_ids())


def _compute(ds, cfg: TrainConfig, embedder: Embedder, target, *, cache_dir, batch_size: int,
             progress: bool) -> None:
    """Embed every image (or tile) of cfg's input and write the entry at `target`."""
    from histosweep.data import write_embeddings

    key = input_key_for(cfg)
    images, masks, counts, sample_ids = _input_arrays(ds, cfg, cache_dir=cache_dir, progress=progress)
    started = time.perf_counter()
    arrays = embed_views(embedder, images, masks, counts, batch_size=batch_size,
                         progress=progress, desc=f"embed {embedder.name} {key}")
    log.info("embedded %d images with %s in %.1f s", len(sample_ids), embedder.name,
             time.perf_counter() - started)
    write_embeddings(target, arrays, sample_ids=sample_ids, identity=embedder.identity(key))

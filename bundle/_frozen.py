"""Predict with frozen-feature members: embed the test images once with the member's backbone
(the weights must hash as in training), then average its fold heads' softmax.

Exercise: `histosweep predict BUNDLE --images TEST --out CSV` on a frozen-trial bundle.
"""

from __future__ import annotations

import numpy as np

from histosweep.exceptions import UserError

# (backbone, pretrained, weights path, input) -> (the images array embedded, its embeddings):
# members sharing a backbone embed the test images once per predict
_EMBEDDED: dict[tuple, tuple[np.ndarray, object]] = {}


def frozen_member_probs(member, images: np.ndarray, masks: np.ndarray,
                        counts: np.ndarray | None = None, *, batch_size: int, device,
                        progress: bool) -> np.ndarray:
    """Equal mean of the member's fold heads on the test embeddings: (N, C) float64."""
    import torch

    from histosweep.model import ModelError, head_probs, load_checkpoint, pick_device

    target = pick_device(device)
    emb = _embeddings(member, images, masks, counts, batch_size=batch_size, device=target,
                      progress=progress)
    rows = np.arange(len(images))
    fold_probs = []
    for fold in member.folds:
        try:
            head, _ = load_checkpoint(fold.path, expect=member.config, device=target)
        except ModelError as exc:
            raise UserError(f"trial {member.trial} fold {fold.fold} of the bundle: {exc}") from None
        with torch.inference_mode():
            fold_probs.append(head_probs(head, emb, rows, target))  # (N, C)
    return np.mean(np.stack(fold_probs).astype(np.float64), axis=0)


def _embeddings(member, images, masks, counts, *, batch_size, device, progress):
    from histosweep.model import ModelError, build_embedder, embed_views, input_key_for

    cfg = member.config
    key = (cfg.image_backbone, cfg.pretrained, cfg.image_pretrained_path, input_key_for(cfg))
    cached = _EMBEDDED.get(key)
    if cached is not None and cached[0] is images:
        return cached[1]
    try:
        embedder = build_embedder(cfg, device=device)
    except ModelError as exc:
        raise UserError(f"trial {member.trial} of the bundle: {exc}") from None
    _check_weights(member, embedder)
    emb = embed_views(embedder, images, masks, counts, batch_size=batch_size, progress=progress,
                      desc=f"embed {cfg.image_backbone}")
    _EMBEDDED.clear()  # keep one test set's embeddings, not every call's
    _EMBEDDED[key] = (images, emb)
    return emb


def _check_weights(member, embedder) -> None:
    """The backbone here must be the one the heads were trained on (weights sha256)."""
    expected = (member.embedding or {}).get("weights_sha256")
    if expected and expected != embedder.weights_sha256:
        raise UserError(
            f"trial {member.trial}: backbone {embedder.name} here has weights sha256 "
            f"{embedder.weights_sha256[:16]}…, the bundle's heads were trained on {expected[:16]}…; "
            "stage the same weights (hub cache or image_pretrained_path) the study used"
        )


def check_frozen_weights(members) -> None:
    """Every frozen member's backbone weights at hand (model.weights_status, as `check` and the
    workers ask), before predict decodes a single image."""
    from histosweep.model import weights_status

    for member in members:
        cfg = member.config
        if cfg.train_mode != "frozen" or not cfg.pretrained:
            continue
        paths = [cfg.image_pretrained_path] if cfg.image_pretrained_path else ()
        status = weights_status(cfg.image_backbone, paths=paths)
        if not status.ok:
            raise UserError(f"trial {member.trial} of the bundle: {status.detail}")

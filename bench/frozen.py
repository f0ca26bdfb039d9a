"""A frozen-feature trial vs a fine-tuning trial of the same backbone at equal folds and epochs,
plus the one-time embedding rate (img/s): how much cheaper a train_mode = frozen trial is.

Run: `python bench/frozen.py --backbone vit_tiny_patch16_224 --resolution 224` (CPU, a few
minutes); on a GPU e.g. `--backbone vit_large_patch16_224 --resolution 224 --n-train 512`.
Random init (nothing downloaded). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_tiny_patch16_224", help="image backbone (timm)")
    parser.add_argument("--mask-backbone", default="resnet10t", help="fine-tuning's mask branch")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--n-train", type=int, default=48, help="synthetic training images")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="both trainers")
    parser.add_argument("--embed-batch", type=int, default=32, help="images per embedding forward")
    parser.add_argument("--frozen-head", default="mlp", choices=("linear", "mlp"))
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def _trial_seconds(train, cfg, cache, labels, split, device) -> tuple[float, float]:
    """(wall seconds of every fold of one trial, its mean best val F1), like a worker runs it."""
    import numpy as np

    started, f1s = time.perf_counter(), []
    for train_idx, val_idx in split.folds:
        result = train(cfg, cache, labels, train_idx=np.asarray(train_idx),
                       val_idx=np.asarray(val_idx), holdout_idx=np.asarray(split.holdout),
                       device=device, progress=False)
        f1s.append(result.best_val_f1)
    return time.perf_counter() - started, float(np.mean(f1s))


def _embed_seconds(ds, cfg, cache_dir, device, batch: int):
    """(embedding cache, seconds to build the embedder, seconds to embed every image)."""
    from histosweep.model import build_embedder, ensure_embeddings

    _sync(device)
    started = time.perf_counter()
    embedder = build_embedder(cfg, device=device)
    built = time.perf_counter()
    emb = ensure_embeddings(ds, cfg, cache_dir=cache_dir, batch_size=batch, progress=False,
                            embedder=embedder)
    _sync(device)
    return emb, built - started, time.perf_counter() - built


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import torch

    from histosweep.data import load_dataset, make_split, open_cache, synthesize
    from histosweep.model import TrainConfig, pick_device, train_fold, train_frozen_fold

    device = pick_device(args.device)
    base = TrainConfig(image_backbone=args.backbone, mask_backbone=args.mask_backbone,
                       resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size,
                       bn_recalibration_images=0, head_hidden=64)
    frozen_cfg = base.replace(train_mode="frozen", frozen_head=args.frozen_head, optimizer="adamw",
                              lr=3e-3)
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-") as tmp:
        root = synthesize(Path(tmp) / "synth", n_train=args.n_train, n_test=2, seed=0,
                          short_side=max(96, args.resolution))
        ds = load_dataset(root)
        labels = ds.labels()
        split = make_split(labels, _groups(len(labels)), folds=args.folds, holdout=0.2, seed=0)
        cache = open_cache(ds, args.resolution, "stretch", cache_dir=Path(tmp) / "cache",
                           progress=False)
        emb, build_s, embed_s = _embed_seconds(ds, frozen_cfg, Path(tmp) / "cache", device,
                                               args.embed_batch)
        frozen_s, frozen_f1 = _trial_seconds(train_frozen_fold, frozen_cfg, emb, labels, split,
                                             device)
        finetune_s, finetune_f1 = _trial_seconds(train_fold, base, cache, labels, split, device)
    result = {
        **{k: v for k, v in vars(args).items() if k not in ("json", "device")},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "embed_dim": int(emb.features.shape[2]),
        "embed_img_s": round(len(labels) / embed_s, 2),
        "embedder_build_s": round(build_s, 3),
        "embed_s": round(embed_s, 3),
        "frozen_trial_s": round(frozen_s, 3),
        "finetune_trial_s": round(finetune_s, 3),
        "speedup": round(finetune_s / frozen_s, 1),
        # the embedding is paid once per (backbone, weights, input) and machine, not per trial
        "speedup_first_trial_with_embedding": round(finetune_s / (frozen_s + build_s + embed_s), 2),
        "frozen_val_f1": round(frozen_f1, 4),
        "finetune_val_f1": round(finetune_f1, 4),
    }
    if not args.json:
        _print(result)
    print(json.dumps(result))
    return result


def _groups(n: int):
    import numpy as np

    return np.arange(n)  # synthetic data: no duplicate groups


def _print(r: dict) -> None:
    print(f"device                 {r['device']} ({r['torch_threads']} torch threads)")
    print(f"backbone               {r['backbone']} at {r['resolution']} px, {r['n_train']} images, "
          f"{r['folds']} folds x {r['epochs']} epochs")
    print(f"embedding              {r['embed_img_s']:.1f} img/s ({r['embed_s']:.1f} s once, "
          f"{r['embed_dim']}-d fp16; backbone built in {r['embedder_build_s']:.1f} s)")
    print(f"frozen trial           {r['frozen_trial_s']:.2f} s")
    print(f"fine-tuning trial      {r['finetune_trial_s']:.2f} s")
    print(f"frozen is cheaper by   {r['speedup']:.0f}x per trial "
          f"({r['speedup_first_trial_with_embedding']:.1f}x for a first trial that also embeds)")


if __name__ == "__main__":
    main()

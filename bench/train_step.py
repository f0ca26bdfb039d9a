"""Training throughput of the fold trainer's step: model-only (tensors already on the device)
vs end-to-end (cache rows -> device -> BatchAugmenter -> step), in images/s.

Run: `python bench/train_step.py --image-backbone convnext_atto --mask-backbone resnet10t
--resolution 64` (CPU, ~1 min); on a GPU add e.g. `--resolution 384 --batch-size 32 --compile`.
The last line is JSON (model_only_img_s, end_to_end_img_s, ratio, device + the arguments).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-backbone", default="convnext_atto")
    parser.add_argument("--mask-backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the fastest counts (noise)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    parser.add_argument("--n-train", type=int, default=48, help="synthetic samples in the cache")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, steps: int, device) -> float:
    """Seconds for `steps` calls of step()."""
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - started


def _fastest(steps_by_mode: dict, args, device) -> dict[str, float]:
    """Best seconds per mode over args.rounds alternating rounds (like timeit's min)."""
    for step in steps_by_mode.values():
        for _ in range(args.warmup):
            step()
    best = {mode: float("inf") for mode in steps_by_mode}
    for _ in range(args.rounds):
        for mode, step in steps_by_mode.items():
            best[mode] = min(best[mode], _timed(step, args.steps, device))
    return best


def _fold_run(args, cache, labels, device):
    import numpy as np

    from histosweep.model import TrainConfig
    from histosweep.model._trainer import _FoldRun

    cfg = TrainConfig(
        image_backbone=args.image_backbone,
        mask_backbone=args.mask_backbone,
        resolution=args.resolution,
        batch_size=args.batch_size,
        compile=args.compile,
    )
    rows = np.arange(len(labels))
    splits = {"train_idx": rows, "val_idx": rows[:2], "holdout_idx": rows[:0]}
    return _FoldRun(cfg, cache, labels, splits, device, progress=False, desc="bench", num_classes=4)


def _model_only_step(run, batch: int, resolution: int):
    """A step of the same network/optimizer/loss on tensors that already live on the device."""
    import torch

    from histosweep.model._loss import soft_cross_entropy
    from histosweep.model._predict import autocast

    device = run.device
    images = torch.randn(batch, 3, resolution, resolution, device=device)  # (B, 3, R, R)
    masks = (torch.rand(batch, 1, resolution, resolution, device=device) > 0.5).float()
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.contiguous(memory_format=torch.channels_last)
    targets = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 4, 4).float()

    def step() -> None:
        run.optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = run.train_model(images, masks)  # (B, 4)
        soft_cross_entropy(logits, targets, weight=run.weights, label_smoothing=0.1).backward()
        run.optimizer.step()

    return step


def _end_to_end_step(run, batch: int, seed: int = 0):
    import numpy as np

    from histosweep.data import BatchAugmenter

    augmenter = BatchAugmenter(
        color_jitter_prob=0.8, cutmix_prob=0.5, cutmix_alpha=1.0, seed=seed, device=run.device
    )
    rng = np.random.default_rng(seed)

    def step() -> None:
        rows = np.sort(rng.choice(run.train_idx, size=batch, replace=False))
        run.train_step(rows, augmenter)

    return step


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import torch

    from histosweep.data import load_dataset, open_cache, synthesize
    from histosweep.model import pick_device

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-") as tmp:
        root = synthesize(
            Path(tmp) / "synth",
            n_train=args.n_train,
            n_test=2,
            seed=0,
            short_side=max(96, args.resolution),
        )
        ds = load_dataset(root)
        cache = open_cache(
            ds, args.resolution, "stretch", cache_dir=Path(tmp) / "cache", progress=False
        )
        torch.manual_seed(0)
        run = _fold_run(args, cache, ds.labels(), device)
        run.model.train()
        if args.batch_size > len(run.train_idx):
            raise SystemExit(f"--batch-size {args.batch_size} > --n-train {args.n_train}")
        steps_by_mode = {
            "model_only": _model_only_step(run, args.batch_size, args.resolution),
            "end_to_end": _end_to_end_step(run, args.batch_size),
        }
        best = _fastest(steps_by_mode, args, device)
        model_s, e2e_s = best["model_only"], best["end_to_end"]
    images = args.steps * args.batch_size
    result = {
        **{k: v for k, v in vars(args).items() if k not in ("json", "device")},
        "model_only_img_s": round(images / model_s, 2),
        "end_to_end_img_s": round(images / e2e_s, 2),
        "ratio": round(model_s / e2e_s, 3),  # end-to-end / model-only throughput
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "staged_on_gpu": run.source.staged,
    }
    if not args.json:
        print(f"device            {result['device']}")
        print(f"model-only        {result['model_only_img_s']:.1f} img/s")
        print(f"end-to-end        {result['end_to_end_img_s']:.1f} img/s")
        print(f"end-to-end/model  {result['ratio']:.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

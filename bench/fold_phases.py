"""Where one fold's wall time goes: model build, training epochs, the OOM snapshot, BatchNorm
recalibration, validation, keeping the best weights, holdout prediction, and the upload
(checkpoint, probabilities, learning-curve picture) that a worker does after each fold.

Run: `python bench/fold_phases.py` (CPU, tiny models, ~1 min); on a GPU e.g.
`python bench/fold_phases.py --image-backbone convnext_tiny --mask-backbone resnet18
--resolution 224 --n-train 600 --epochs 4 --batch-size 32 --device cuda`.
Each phase is timed with the device synchronised before and after, so the shares are wall time.
The last line is JSON: seconds per phase (summed over epochs), their share, and the arguments.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-backbone", default="convnext_atto")
    parser.add_argument("--mask-backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=120, help="synthetic samples (train+val+holdout)")
    parser.add_argument("--folds", type=int, default=2, help="folds timed in a row (the first warms up)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


class Timer:
    """Wraps callables so each call's wall time (device synchronised) adds to a named phase."""

    def __init__(self, device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.sync()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[phase] += time.perf_counter() - started

        setattr(owner, name, timed)


def _instrument(timer: Timer) -> None:
    import histosweep.model._trainer as trainer
    import histosweep.search._artifacts as artifacts
    import histosweep.search._plots as plots
    from histosweep import model
    from histosweep.model._fold_state import FoldState

    timer.wrap(trainer._FoldRun, "__init__", "build (model, optimizer, stage rows)")
    timer.wrap(trainer._FoldRun, "train_epoch", "train epochs")
    timer.wrap(FoldState, "capture", "OOM snapshot (FoldState.capture)")
    timer.wrap(trainer._FoldRun, "recalibrate_bn", "BatchNorm recalibration")
    timer.wrap(trainer._FoldRun, "validate", "validation")
    timer.wrap(trainer._Chosen, "offer", "keep best weights (offer)")
    timer.wrap(trainer._FoldRun, "holdout_probs", "holdout prediction")
    timer.wrap(model, "save_checkpoint", "upload: save checkpoint")
    timer.wrap(plots, "learning_curves_png", "upload: learning-curve png")
    timer.wrap(artifacts, "upload_file", "upload: copy to artifact store")
    # NOTE: upload_fold imports save_checkpoint/learning_curves_png when called: patched above


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import numpy as np
    import optuna
    import torch

    from histosweep.data import load_dataset, open_cache, synthesize
    from histosweep.model import TrainConfig, pick_device, train_fold
    from histosweep.storage import open_artifact_store

    device = pick_device(args.device)
    timer = Timer(device)
    with tempfile.TemporaryDirectory(prefix="histosweep-phases-") as tmp:
        tmp = Path(tmp)
        root = synthesize(tmp / "synth", n_train=args.n_train, n_test=2, seed=0,
                          short_side=max(96, args.resolution))
        ds = load_dataset(root)
        cache = open_cache(ds, args.resolution, "stretch", cache_dir=tmp / "cache", progress=False)
        labels = ds.labels()
        cfg = TrainConfig(image_backbone=args.image_backbone, mask_backbone=args.mask_backbone,
                          resolution=args.resolution, batch_size=args.batch_size, epochs=args.epochs,
                          t0=args.epochs, pretrained=False)
        rows = np.arange(len(labels))
        n_val, n_hold = len(rows) // 3, len(rows) // 5
        splits = {"train_idx": rows[n_val + n_hold:], "val_idx": rows[:n_val],
                  "holdout_idx": rows[n_val:n_val + n_hold]}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=f"sqlite:///{tmp / 's.db'}", direction="maximize")
        store = open_artifact_store(str(tmp / "artifacts"))
        _instrument(timer)
        import histosweep.search._artifacts as artifacts

        walls = []
        for fold in range(args.folds):
            if fold == args.folds - 1:
                timer.seconds.clear()  # the last fold counts: earlier ones warm up (cuDNN, allocator)
            trial = study.ask()
            timer.sync()
            started = time.perf_counter()
            result = train_fold(cfg, cache, labels, **splits, device=device, progress=False)
            artifacts.upload_fold(store, trial, fold, result, cfg, splits["val_idx"], splits["holdout_idx"])
            timer.sync()
            walls.append(time.perf_counter() - started)
            study.tell(trial, 0.0)
    wall = walls[-1]
    seconds = dict(timer.seconds)  # no phase is nested in another
    seconds["other (unaccounted)"] = wall - sum(seconds.values())
    train_images = len(splits["train_idx"]) * args.epochs
    result = {
        **{k: v for k, v in vars(args).items() if k not in ("json",)},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "fold_wall_s": round(wall, 3),
        "train_img_s": round(train_images / max(seconds.get("train epochs", 0.0), 1e-9), 1),
        "phases_s": {k: round(v, 3) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
        "phases_share": {k: round(v / wall, 3) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
    }
    if not args.json:
        print(f"device {result['device']}: one fold, {args.epochs} epochs, {len(splits['train_idx'])} "
              f"train images, {wall:.2f} s")
        for phase, secs in result["phases_s"].items():
            print(f"  {phase:40s} {secs:8.3f} s  {result['phases_share'][phase]:6.1%}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

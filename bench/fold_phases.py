"""Where one fold's wall time goes: model build, training epochs, the OOM snapshot, BatchNorm
recalibration, validation, keeping the best weights, holdout prediction, and the upload
(checkpoint, probabilities, learning-curve picture) that a worker does after each fold.

Run: `python bench/fold_phases.py` (CPU, convnext_atto + resnet10t, 64 px, 300 images, 4 epochs,
~1 min); on a GPU e.g. `python bench/fold_phases.py --image-backbone convnext_tiny
--mask-backbone resnet18 --resolution 224 --n-train 600 --epochs 4 --batch-size 32 --device cuda`.
The split is a study's: a 20 % holdout, then one of `--cv-folds` folds of the rest validates.
Folds run back to back as in a worker: uploads go to the worker's background uploader (or, with
`--sync-upload`, inline as before issue 18), so a fold's critical path is from its start to the
next fold's start; the last fold's uploads are waited for at the end (a trial's end), reported
apart. Each phase is timed with the device synchronised before and after, so shares are wall
time. The last line is JSON: seconds per phase of the last fold, shares, the share of the fold
outside training epochs (`outside_training_share`, target <= 0.10), `first_fold_build_s` (a
fresh build in a warm process: only a trial's first fold pays it, later folds copy that network,
model/_initial.py; the timed last fold shows the copy), and the arguments.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-backbone", default="convnext_atto")
    parser.add_argument("--mask-backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=300, help="synthetic samples (train+val+holdout)")
    parser.add_argument("--cv-folds", type=int, default=5, help="the study's K: 1/K of the non-holdout validates")
    parser.add_argument("--bn-recalibration-images", type=int, default=None,
                        help="TrainConfig.bn_recalibration_images (default: the config's)")
    parser.add_argument("--folds", type=int, default=3, help="folds timed in a row (the last counts)")
    parser.add_argument("--sync-upload", action="store_true", help="upload inline (the old path)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


BUILD = "build (model, optimizer, stage rows)"


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
            background = threading.current_thread() is not threading.main_thread()
            self.sync()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                key = f"background: {phase}" if background else phase
                self.seconds[key] += time.perf_counter() - started

        setattr(owner, name, timed)


def _instrument(timer: Timer) -> None:
    import histosweep.model._trainer as trainer
    import histosweep.trial_files._fold as artifacts
    import histosweep.trial_files._plots as plots
    from histosweep import model
    from histosweep.model._fold_state import FoldState

    timer.wrap(trainer._FoldRun, "__init__", BUILD)
    timer.wrap(trainer._FoldRun, "train_epoch", "train epochs")
    timer.wrap(FoldState, "capture", "OOM snapshot (FoldState.capture)")
    timer.wrap(trainer._FoldRun, "recalibrate_bn", "BatchNorm recalibration")
    timer.wrap(trainer._FoldRun, "validate", "validation")
    timer.wrap(trainer._Chosen, "offer", "keep best weights (offer)")
    timer.wrap(trainer._FoldRun, "holdout_probs", "holdout prediction")
    timer.wrap(artifacts, "upload_fold", "upload (checkpoint, probs, metrics, png)")
    del model, plots


def _splits(n: int, cv_folds: int) -> dict:
    """A study's shape: the first 20 % hold out, 1/K of the rest validates, the rest trains."""
    import numpy as np

    rows = np.random.default_rng(0).permutation(n)
    n_hold = n // 5
    n_val = (n - n_hold) // cv_folds
    return {"holdout_idx": np.sort(rows[:n_hold]), "val_idx": np.sort(rows[n_hold:n_hold + n_val]),
            "train_idx": np.sort(rows[n_hold + n_val:])}


def _run_folds(args, timer: Timer, cfg, cache, labels, splits, device, tmp: Path) -> tuple[float, float, float]:
    """Train args.folds folds back to back as a worker does -> (last fold's critical-path wall
    time, the final wait for uploads, a fresh build's seconds: only a trial's first fold
    builds the network, model/_initial.py)."""
    import optuna

    import histosweep.trial_files._fold as artifacts
    from histosweep.model import train_fold
    from histosweep.search._uploader import Uploader
    from histosweep.storage import open_artifact_store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp / 's.db'}", direction="maximize")
    store = open_artifact_store(str(tmp / "artifacts"))
    uploads = Uploader()
    trial = study.ask()
    wall = 0.0
    for fold in range(args.folds):
        if fold == args.folds - 1:
            # NOTE: no wait here: the previous fold's upload overlaps this one, as in a worker
            timer.seconds.clear()  # the last fold counts: earlier ones warm up (cuDNN, allocator)
        timer.sync()
        started = time.perf_counter()
        result = train_fold(cfg, cache, labels, **splits, device=device, progress=False)
        job = functools.partial(artifacts.upload_fold, store, trial, fold, result, cfg,
                                splits["val_idx"], splits["holdout_idx"])
        if args.sync_upload:
            job()
        else:
            uploads.submit(job)
        timer.sync()
        wall = time.perf_counter() - started
    first_build = _cold_build(timer, cfg, device)  # a new trial's first fold, in a warm process
    started = time.perf_counter()
    uploads.wait()
    final_wait = time.perf_counter() - started
    study.tell(trial, 0.0)
    return wall, final_wait, first_build


def _cold_build(timer: Timer, cfg, device) -> float:
    """Seconds to build the network afresh (no copy to start from), imports and first-call
    costs already paid: what the first fold of every later trial pays on top of a copy."""
    import torch

    from histosweep.data import CLASSES
    from histosweep.model._initial import initial_models

    initial_models.clear()
    timer.sync()
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        initial_models.build(cfg, num_classes=len(CLASSES), device=device)
    timer.sync()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import numpy as np
    import torch

    from histosweep.data import load_dataset, open_cache, synthesize
    from histosweep.model import TrainConfig, pick_device

    device = pick_device(args.device)
    timer = Timer(device)
    with tempfile.TemporaryDirectory(prefix="histosweep-phases-") as tmp:
        tmp = Path(tmp)
        root = synthesize(tmp / "synth", n_train=args.n_train, n_test=2, seed=0,
                          short_side=max(96, args.resolution))
        ds = load_dataset(root)
        cache = open_cache(ds, args.resolution, "stretch", cache_dir=tmp / "cache", progress=False)
        labels = ds.labels()
        extra = {} if args.bn_recalibration_images is None else {
            "bn_recalibration_images": args.bn_recalibration_images}
        cfg = TrainConfig(image_backbone=args.image_backbone, mask_backbone=args.mask_backbone,
                          resolution=args.resolution, batch_size=args.batch_size, epochs=args.epochs,
                          t0=args.epochs, pretrained=False, **extra)
        splits = _splits(len(labels), args.cv_folds)
        _instrument(timer)
        wall, final_wait, first_build = _run_folds(args, timer, cfg, cache, labels, splits, device, tmp)
    seconds = {k: v for k, v in timer.seconds.items() if not k.startswith("background")}
    background = {k: v for k, v in timer.seconds.items() if k.startswith("background")}
    seconds["other (unaccounted)"] = wall - sum(seconds.values())
    train_images = len(splits["train_idx"]) * args.epochs
    order = sorted(seconds.items(), key=lambda kv: -kv[1])
    result = {
        **{k: v for k, v in vars(args).items() if k not in ("json",)},
        "bn_recalibration_images": cfg.bn_recalibration_images,
        "split": {k: len(v) for k, v in splits.items()},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "fold_wall_s": round(wall, 3),
        "outside_training_share": round(1 - seconds.get("train epochs", 0.0) / wall, 3),
        "train_img_s": round(train_images / max(seconds.get("train epochs", 0.0), 1e-9), 1),
        "phases_s": {k: round(v, 3) for k, v in order},
        "phases_share": {k: round(v / wall, 3) for k, v in order},
        "background_s": {k: round(v, 3) for k, v in background.items()},
        "trial_end_upload_wait_s": round(final_wait, 3),
        "first_fold_build_s": round(first_build, 3),
    }
    del np
    if not args.json:
        _print_table(args, result)
    print(json.dumps(result))
    return result


def _print_table(args, result: dict) -> None:
    print(f"device {result['device']}: one fold, {args.epochs} epochs, {result['split']['train_idx']} "
          f"train images, {result['fold_wall_s']:.2f} s on the critical path, "
          f"{result['outside_training_share']:.1%} outside training epochs")
    for phase, secs in result["phases_s"].items():
        print(f"  {phase:48s} {secs:8.3f} s  {result['phases_share'][phase]:6.1%}")
    print(f"  (a trial's first fold builds the network: {result['first_fold_build_s']:.3f} s "
          "in a warm process; its later folds copy it: the build row)")
    for phase, secs in result["background_s"].items():
        print(f"  {phase:48s} {secs:8.3f} s  (off the critical path)")
    print(f"  {'wait for the last uploads at the trial end':48s} {result['trial_end_upload_wait_s']:8.3f} s")


if __name__ == "__main__":
    main()

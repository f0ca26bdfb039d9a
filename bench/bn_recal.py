"""How many images does BatchNorm recalibration need? The same folds trained with
bn_recalibration_images = 0, 16, 32, 64, 256 (nothing else changes: seeds, rows, lr), scored on
the validation rows that keep=best selects on and on a separate labelled test set that nothing
selects on, with the seconds recalibration cost.

Recalibration only rewrites the running statistics that evaluation reads (training normalises
with batch statistics), so a seed trains the same weights at every size: the comparison is
paired, and `test_f1_vs_largest` is the mean per-seed difference from the largest size.

Run: `python bench/bn_recal.py [--sizes 0 16 32 64 256 --seeds 0 1 2 --lrs 1e-4 5e-4]` (CPU,
convnext_atto + resnet10t, 64 px, Lion, 6 epochs; ~10 min on 2 cores). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 16, 32, 64, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 5e-4])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=240, help="labelled images: 200 train, 40 val")
    parser.add_argument("--n-test", type=int, default=200, help="separate labelled test images")
    parser.add_argument("--signal", type=float, default=1.0, help="synth class signal (< 1 is harder)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import torch
    from fold_phases import Timer  # bench/: the same phase timer

    import histosweep.model._trainer as trainer
    from histosweep.data import load_dataset, open_cache, synthesize
    from histosweep.model import TrainConfig, macro_f1, train_fold

    timer = Timer(torch.device("cpu"))
    timer.wrap(trainer._FoldRun, "recalibrate_bn", "recalibration")
    rows = []
    with tempfile.TemporaryDirectory(prefix="histosweep-bnrecal-") as tmp:
        root = synthesize(Path(tmp) / "synth", n_train=args.n_train + args.n_test, n_test=2,
                          seed=0, short_side=96, signal=args.signal)
        ds = load_dataset(root)
        cache = open_cache(ds, args.resolution, "stretch", cache_dir=Path(tmp) / "cache",
                           progress=False)
        labels = ds.labels()
        order = np.random.default_rng(0).permutation(len(labels))
        n_val = args.n_train // 6
        split = {"train_idx": np.sort(order[n_val:args.n_train]),
                 "val_idx": np.sort(order[:n_val]),
                 "holdout_idx": np.sort(order[args.n_train:])}  # the test set: never selected on
        test_truth = labels[split["holdout_idx"]]
        for lr in args.lrs:
            for seed in args.seeds:
                for size in args.sizes:
                    cfg = TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t",
                                      resolution=args.resolution, batch_size=16, epochs=args.epochs,
                                      t0=args.epochs, lr=lr, head_hidden=64, pretrained=False,
                                      bn_recalibration_images=size, seed=seed)
                    timer.seconds.clear()
                    started = time.perf_counter()
                    result = train_fold(cfg, cache, labels, **split, device="cpu", progress=False)
                    rows.append({"lr": lr, "seed": seed, "size": size,
                                 "val_f1": round(result.best_val_f1, 4),
                                 "test_f1": round(macro_f1(test_truth, result.holdout_probs), 4),
                                 "recal_s": round(timer.seconds["recalibration"], 3),
                                 "fold_s": round(time.perf_counter() - started, 3)})
                    if not args.json:
                        print(json.dumps(rows[-1]), flush=True)
    summary = _summary(rows, args)
    if not args.json:
        _print_table(summary, args)
    out = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "runs": rows,
           "summary": summary}
    print(json.dumps(out))
    return out


def _summary(rows: list[dict], args) -> list[dict]:
    out = []
    for lr in args.lrs:
        largest = {r["seed"]: r["test_f1"] for r in rows
                   if r["lr"] == lr and r["size"] == max(args.sizes)}
        for size in args.sizes:
            sel = [r for r in rows if r["lr"] == lr and r["size"] == size]
            test = np.array([r["test_f1"] for r in sel])
            val = np.array([r["val_f1"] for r in sel])
            paired = np.array([r["test_f1"] - largest[r["seed"]] for r in sel])
            out.append({"lr": lr, "size": size, "val_f1_mean": round(float(val.mean()), 4),
                        "test_f1_mean": round(float(test.mean()), 4),
                        "test_f1_sd": round(float(test.std(ddof=1)) if len(test) > 1 else 0.0, 4),
                        "test_f1_vs_largest": round(float(paired.mean()), 4),
                        "test_f1_vs_largest_min": round(float(paired.min()), 4),
                        "recal_share": round(sum(r["recal_s"] for r in sel)
                                             / sum(r["fold_s"] for r in sel), 3)})
    return out


def _print_table(summary: list[dict], args) -> None:
    print(f"\n{len(args.seeds)} seeds per row; test = {args.n_test} labelled images nothing selects on")
    print("lr        recal imgs  val F1  test F1 (sd)    vs largest (worst seed)  recal share of fold")
    for s in summary:
        print(f"{s['lr']:<9g} {s['size']:>10d}  {s['val_f1_mean']:.3f}   {s['test_f1_mean']:.3f} "
              f"({s['test_f1_sd']:.3f})   {s['test_f1_vs_largest']:+.3f} ({s['test_f1_vs_largest_min']:+.3f})"
              f"          {s['recal_share']:.1%}")


if __name__ == "__main__":
    main()

"""Does looking at native resolution pay? On synthetic data whose class is only in fine nuclear
detail (`synth --signal-kind detail`), the same search (trials, folds, epochs, lr range) with
input_mode = whole at 64 px and input_mode = tiles at native scale; per mode, the exported
bundle's macro-F1 on a separate labelled test set and the wall time.

Run: `python bench/tiles.py [--trials 2 --epochs 6 --n-train 96 --n-test 80]` (CPU). Uses the
real create_study + run_workers + export_best + the bundle's predict path. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

COMMON = """
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 32
epochs = {epochs}
batch_size = 16
t0 = {epochs}
lr = {{ low = 5e-4, high = 3e-3, log = true }}
cutmix_prob = 0.0
color_jitter_prob = 0.5
bn_recalibration_images = 32
"""
MODES = {
    "whole": '[params]\ninput_mode = "whole"\nresolution = {resolution}\nresize_mode = "stretch"\n',
    "tiles": ('[params]\ninput_mode = "tiles"\ntile_size = {tile_size}\ntile_scale = 1.0\n'
              'tiles_per_image = {tiles}\ntile_bag = {bag}\ntile_min_mask = 0.5\n'
              'tile_pool = "attention"\n'),
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per mode")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fold")
    parser.add_argument("--resolution", type=int, default=64, help="whole: picture side in px")
    parser.add_argument("--tile-size", type=int, default=32, help="tiles: tile side in px (1x scale)")
    parser.add_argument("--tiles", type=int, default=8, help="tiles: tiles_per_image (evaluation bag)")
    parser.add_argument("--bag", type=int, default=4, help="tiles: tile_bag (training bag)")
    parser.add_argument("--n-train", type=int, default=96, help="synthetic training images")
    parser.add_argument("--n-test", type=int, default=80, help="separate labelled test images")
    parser.add_argument("--short-side", type=int, default=256, help="native short side in px")
    parser.add_argument("--slots", type=int, default=1, help="CPU worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep data, studies and bundles here")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def make_data(root: Path, args) -> tuple[Path, dict[str, str]]:
    from histosweep.data import synthesize

    data = synthesize(root / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                      short_side=args.short_side, signal_kind="detail")
    return data, json.loads((data / "synth_truth.json").read_text())["test_labels"]


def run_mode(root: Path, data: Path, mode: str, args) -> dict:
    """create -> workers -> export-best -> predict the test folder; F1 and seconds."""
    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.search import CreateOptions, create_study

    url = f"sqlite:///{root / f'{mode}.db'}"
    space = root / f"{mode}.toml"
    space.write_text(MODES[mode].format(resolution=args.resolution, tile_size=args.tile_size,
                                        tiles=args.tiles, bag=args.bag)
                     + COMMON.format(epochs=args.epochs))
    started = time.monotonic()
    create_study(mode, url, CreateOptions(data=data, space_file=space, folds=args.folds,
                                          seed=args.seed, pruner="none", force=True), progress=False)
    code = run_workers(WorkerOptions(
        study=mode, storage=url, artifacts=str(root / "artifacts"), gpus="cpu",
        trials_per_gpu=args.slots, n_trials=args.trials, log_dir=str(root / f"logs-{mode}"),
        progress=False))
    if code != 0:
        raise SystemExit(f"a {mode} worker exited {code}; see {root / f'logs-{mode}'}")
    search_s = time.monotonic() - started
    return {"search_seconds": round(search_s, 1), **_export_and_predict(root, url, mode)}


def _export_and_predict(root: Path, url: str, mode: str) -> dict:
    from histosweep.bundle import ExportOptions, export_best
    from histosweep.bundle._predict import predict_folder

    started = time.monotonic()
    out = root / f"bundle-{mode}"
    summary = export_best(ExportOptions(study=mode, out=out, storage=url,
                                        artifacts=str(root / "artifacts"), overwrite=True,
                                        progress=False))
    predict_folder(out, root / "data" / "TEST", root / f"{mode}.csv", device="cpu", progress=False)
    return {"oof_f1": summary["metrics"]["oof_f1_calibrated"],
            "lockbox_f1": summary["metrics"]["lockbox_f1"],
            "export_predict_seconds": round(time.monotonic() - started, 1),
            "csv": str(root / f"{mode}.csv")}


def test_f1(csv_path: str, truth: dict[str, str]) -> float:
    from histosweep.data import CLASSES
    from histosweep.model import macro_f1

    rows = [line.split(",", 1) for line in Path(csv_path).read_text().splitlines()[1:]]
    y_true = np.array([CLASSES.index(truth[sid]) for sid, _ in rows])
    y_pred = np.eye(len(CLASSES))[[CLASSES.index(label) for _, label in rows]]
    return macro_f1(y_true, y_pred)


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("histosweep").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-tiles-") as tmp:
        root = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        os.environ.setdefault("HISTOSWEEP_CACHE", str(root / "cache"))
        data, truth = make_data(root, args)
        modes = {}
        for mode in MODES:
            modes[mode] = run_mode(root, data, mode, args)
            modes[mode]["test_f1"] = round(test_f1(modes[mode].pop("csv"), truth), 4)
    result = {
        "modes": modes, "trials": args.trials, "folds": args.folds, "epochs": args.epochs,
        "resolution": args.resolution, "tile_size": args.tile_size, "tiles": args.tiles,
        "bag": args.bag, "n_train": args.n_train, "n_test": args.n_test,
        "short_side": args.short_side, "seed": args.seed, "cpus": os.cpu_count(),
    }
    if not args.json:
        for mode, r in modes.items():
            print(f"{mode:<6} test macro-F1 {r['test_f1']:.4f}  OOF {r['oof_f1']:.4f}  lockbox "
                  f"{r['lockbox_f1']:.4f}  search {r['search_seconds']:.0f} s  export+predict "
                  f"{r['export_predict_seconds']:.0f} s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""A campaign on one split: a frozen study (a tiny ViT, random init) and a fine-tuning study
created --like it; the test F1 of each study's own export and of the cross-study export, on a
separate labelled test set nothing selected on, beside each export's BBC-CV estimate; and a
warm-started study against a cold one at equal trial count (best own OOF F1 after N trials).

Run: `python bench/campaign.py` (CPU, ~10-15 min on 2 cores); smoke: `python bench/campaign.py
--n-train 96 --n-test 200 --frozen-trials 4 --finetune-trials 2 --warm-trials 2 --bootstrap 100`.
Uses the real create_study + run_workers + export_best on SQLite in a temp folder. Last line: JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

from _spaces import small_space

# NOTE: random init (nothing downloaded): its features are weak but real; the frozen study's
# trials train heads on them in seconds. vit_tiny embeds at its fixed 224 px side.
FROZEN_SPACE = """
[params]
train_mode = "frozen"
image_backbone = "{backbone}"
pretrained = false
resolution = {resolution}
resize_mode = "stretch"
input_mode = "whole"
frozen_head = ["linear", "mlp"]
frozen_mask_stats = [true, false]
head_hidden = {{ low = 16, high = 256, log = true }}
dropout = {{ low = 0.0, high = 0.5 }}
optimizer = "adamw"
lr = {{ low = 1e-4, high = 3e-2, log = true }}
weight_decay = {{ low = 1e-5, high = 1e-1, log = true }}
label_smoothing = {{ low = 0.0, high = 0.2 }}
epochs = [10, 30]
batch_size = 32
t0 = 30
"""


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frozen-trials", type=int, default=16, help="finished trials, frozen study")
    parser.add_argument("--finetune-trials", type=int, default=8, help="finished trials, fine-tuning study")
    parser.add_argument("--warm-trials", type=int, default=10,
                        help="trials run by the warm-started and by the cold study (frozen space)")
    parser.add_argument("--backbone", default="vit_tiny_patch16_224", help="the frozen study's ViT")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--holdout", type=float, default=0.0, help="the studies' --holdout (0: BBC-CV only)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per fold")
    # why: bench/selection.py's informative setting (at --signal 0.25 and 240 images little is learnt)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--n-train", type=int, default=320, help="synthetic training images")
    parser.add_argument("--n-test", type=int, default=1500, help="separate labelled test images")
    parser.add_argument("--signal", type=float, default=0.5, help="class signal strength in [0, 1]")
    parser.add_argument("--candidates", type=int, default=20, help="export-best --candidates")
    parser.add_argument("--bootstrap", type=int, default=1000, help="export-best --bootstrap (BBC-CV)")
    parser.add_argument("--slots", type=int, default=2, help="CPU worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep data, studies and bundles here")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def make_data(root: Path, args) -> tuple[Path, dict[str, str]]:
    """Training data and its TEST folder; the test labels (synth_truth.json) by sample_index."""
    from histosweep.data import build_cache, load_dataset, synthesize

    data = synthesize(root / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                      short_side=max(64, args.resolution), signal=args.signal)
    build_cache(load_dataset(data, labeled=True), resolutions=[args.resolution], modes=["stretch"],
                progress=False)
    return data, json.loads((data / "synth_truth.json").read_text())["test_labels"]


def create(name: str, url: str, root: Path, space_text: str, **opts) -> dict:
    from histosweep.search import CreateOptions, create_study

    space = root / f"{name}.toml"
    space.write_text(space_text)
    return create_study(name, url, CreateOptions(space_file=space, force=True, **opts), progress=False)


def run(name: str, url: str, root: Path, args, n_trials: int) -> float:
    from histosweep.fleet import WorkerOptions, run_workers

    started = time.monotonic()
    code = run_workers(WorkerOptions(
        study=name, storage=url, artifacts=str(root / "artifacts"), gpus="cpu",
        trials_per_gpu=args.slots, n_trials=n_trials, log_dir=str(root / "logs"), progress=False))
    if code != 0:
        raise SystemExit(f"a worker of {name} exited {code}; see {root / 'logs'}")
    return round(time.monotonic() - started, 1)


def searches(root: Path, data: Path, args) -> tuple[str, dict]:
    """The frozen study, the fine-tuning study --like it; their search seconds."""
    url = f"sqlite:///{root / 'study.db'}"
    frozen = FROZEN_SPACE.format(backbone=args.backbone, resolution=args.resolution)
    create("frozen", url, root, frozen, data=data, folds=args.folds, holdout=args.holdout,
           seed=args.seed, enqueue_reference=True)
    seconds = {"frozen": run("frozen", url, root, args, args.frozen_trials)}
    create("finetune", url, root, small_space(resolution=args.resolution, epochs=args.epochs),
           like="frozen", enqueue_reference=True)
    seconds["finetune"] = run("finetune", url, root, args, args.finetune_trials)
    return url, seconds


def test_f1(submission: Path, truth: dict[str, str]) -> float:
    from histosweep.data import CLASSES
    from histosweep.model import macro_f1

    with open(submission, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["sample_index"] for r in rows) == sorted(truth), "submission rows != test set"
    return macro_f1([CLASSES.index(truth[r["sample_index"]]) for r in rows],
                    [CLASSES.index(r["label"]) for r in rows])


def export(names: tuple[str, ...], url: str, root: Path, data: Path, args, truth) -> dict:
    """export-best NAMES --test: the submission's test F1 beside the BBC-CV estimate."""
    from histosweep.bundle import ExportOptions, export_best

    out = root / ("bundle-" + "+".join(names))
    started = time.monotonic()
    s = export_best(ExportOptions(study=names[0], more_studies=names[1:], out=out, storage=url,
                                  artifacts=str(root / "artifacts"), candidates=args.candidates,
                                  test=data / "TEST", overwrite=True, progress=False,
                                  bootstrap=args.bootstrap, device="cpu"))
    bbc = s["metrics"]["bbc"]
    return {
        "studies": list(names), "members": s["members"], "oof_f1": s["metrics"]["oof_f1_calibrated"],
        "bbc": bbc["ensemble"], "bbc_single_best": bbc["single_best"], "pool": bbc["pool"],
        "search_gain": bbc["search_gain"], "reference": [bbc["reference_study"], bbc["reference_trial"]],
        "test_f1": test_f1(out / "submission.csv", truth), "seconds": round(time.monotonic() - started, 1),
    }


def warm_vs_cold(url: str, root: Path, args) -> dict:
    """Two studies on the frozen study's split and space, N trials each: one warm-started from
    the frozen study (its trials as TPE history), one cold; each one's best own OOF F1."""
    from histosweep.search import is_imported, open_study

    frozen = FROZEN_SPACE.format(backbone=args.backbone, resolution=args.resolution)
    out = {"n": args.warm_trials}
    for name, warm in (("cold", ()), ("warm", ("frozen",))):
        summary = create(name, url, root, frozen, like="frozen", warm_start=warm,
                         enqueue_reference=False)
        seconds = run(name, url, root, args, args.warm_trials)
        own = [t for t in open_study(name, url).get_trials(deepcopy=False)
               if not is_imported(t) and t.value is not None]
        out[name] = {"imported": (summary.get("imported") or {}).get("complete", 0),
                     "best_oof_f1": max(t.value for t in own) if own else None,
                     "own_finished": len([t for t in open_study(name, url).get_trials(deepcopy=False)
                                          if not is_imported(t) and t.state.is_finished()]),
                     "seconds": seconds}
    history = [t.value for t in open_study("frozen", url).get_trials(deepcopy=False) if t.value is not None]
    out["frozen_best_oof_f1"] = max(history) if history else None
    return out


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("histosweep").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-campaign-") as tmp:
        root = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HISTOSWEEP_CACHE", str(root / "cache"))
        started = time.monotonic()
        data, truth = make_data(root, args)
        url, seconds = searches(root, data, args)
        exports = {"+".join(n): export(n, url, root, data, args, truth)
                   for n in (("frozen",), ("finetune",), ("finetune", "frozen"))}
        warm = warm_vs_cold(url, root, args)
        total = round(time.monotonic() - started, 1)
    pooled = exports["finetune+frozen"]
    result = {
        "exports": exports, "warm_vs_cold": warm, "search_seconds": seconds, "total_seconds": total,
        "pooled_test_at_least_each": all(pooled["test_f1"] >= e["test_f1"] for e in exports.values()),
        "bbc_ci_contains_test": {k: bool(e["bbc"]["ci95"][0] <= e["test_f1"] <= e["bbc"]["ci95"][1])
                                 for k, e in exports.items()},
        "warm_best_at_least_cold": (None if None in (warm["warm"]["best_oof_f1"], warm["cold"]["best_oof_f1"])
                                    else warm["warm"]["best_oof_f1"] >= warm["cold"]["best_oof_f1"]),
        "n_train": args.n_train, "n_test": len(truth), "signal": args.signal, "folds": args.folds,
        "holdout": args.holdout, "epochs": args.epochs, "resolution": args.resolution,
        "backbone": args.backbone, "frozen_trials": args.frozen_trials,
        "finetune_trials": args.finetune_trials, "bootstrap": args.bootstrap, "seed": args.seed,
        "cpus": os.cpu_count(),
    }
    if not args.json:
        _print(result)
    print(json.dumps(result))
    return result


def _ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _print(r: dict) -> None:
    s = r["search_seconds"]
    print(f"frozen study: {r['frozen_trials']} trials in {s['frozen']:.0f} s ({r['backbone']}, random "
          f"init); fine-tuning study --like it: {r['finetune_trials']} trials in {s['finetune']:.0f} s")
    print(f"{'export':<16} {'pool':>4} {'OOF F1':>7} {'BBC-CV':>7} {'95% interval':>18} {'test F1':>8}  members")
    for name, e in r["exports"].items():
        members = ", ".join(f"{m['study']}#{m['trial']} x{m['weight']:.2f}" for m in e["members"])
        print(f"{name:<16} {e['pool']:>4} {e['oof_f1']:7.4f} {e['bbc']['mean']:7.4f} "
              f"{_ci(e['bbc']['ci95']):>18} {e['test_f1']:8.4f}  {members}")
    print(f"(test F1 on {r['n_test']} images nothing selected on; pooled export at least each: "
          f"{r['pooled_test_at_least_each']}; BBC-CV interval holds test F1: {r['bbc_ci_contains_test']})")
    w = r["warm_vs_cold"]
    print(f"warm start vs cold, {w['n']} trials each on the frozen space (frozen study's best "
          f"{w['frozen_best_oof_f1']:.4f}): warm (imported {w['warm']['imported']}) best OOF F1 "
          f"{w['warm']['best_oof_f1']:.4f}, cold {w['cold']['best_oof_f1']:.4f}")
    print(f"total {r['total_seconds']:.0f} s on {r['cpus']} CPUs")


if __name__ == "__main__":
    main()

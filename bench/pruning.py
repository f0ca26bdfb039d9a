"""Epochs the study's pruner saves, and what it costs in best out-of-fold F1: the same budget of
trials on synthetic data with tiny CPU models, once with the pruner and once with `none`.

Run: `python bench/pruning.py [--trials 20] [--pruner percentile]` (CPU, ~10 min on 2 cores). Uses the
real create_study + run_workers (Objective, TrialLoop) on SQLite in a temp dir. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _spaces import small_space


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="finished trials per search")
    parser.add_argument("--pruner", default="percentile", help="the pruned search's --pruner")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fold")
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--n-train", type=int, default=160, help="synthetic training images")
    parser.add_argument("--seed", type=int, default=0, help="split and sampler seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steady on a shared, busy machine)")
    parser.add_argument("--try-pruner", default=None,
                        choices=("percentile33", "percentile25", "sha3", "median-default"),
                        help="the pruned search uses this pruner instead of make_pruner's "
                             "(to test a proposal for make_pruner; see the replay table)")
    parser.add_argument("--as-is", action="store_true",
                        help="workers' sampler as run_slot makes it, unpatched (seeded from "
                             "the study seed, the worker's host and slot and the trial count)")
    parser.add_argument("--workdir", default=None, help="keep data, studies and logs here")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def patch_workers(seed: int | None, try_pruner: str | None = None) -> None:
    """Seed the workers' sampler (both searches then draw the same first configs: only pruning
    differs) and, with --try-pruner, swap make_pruner's pruner for a candidate. run_slot looks
    both factories up in search._study when it starts, so patching the module is enough."""
    # NOTE: the worker module's own names: run_slot calls make_pruner/make_sampler from there
    import histosweep.fleet._supervisor as study_mod

    if getattr(study_mod.make_pruner, "_bench_patched", False):
        return
    real_pruner, real_sampler = study_mod.make_pruner, study_mod.make_sampler

    def make_pruner(settings, epochs: int, **kwargs):
        if try_pruner and settings.pruner != "none":
            return candidate_pruners(settings.folds * epochs, epochs)[try_pruner]()
        return real_pruner(settings, epochs, **kwargs)

    make_pruner._bench_patched = True
    make_pruner.real = real_pruner  # candidate_pruners builds make_pruner's own from this
    study_mod.make_pruner = make_pruner
    if seed is not None:
        study_mod.make_sampler = lambda name="tpe", **_kw: real_sampler(name, seed=seed)


def make_data(root: Path, n_train: int, resolution: int) -> Path:
    from histosweep.data import build_cache, load_dataset, synthesize

    data = synthesize(root / "data", n_train=n_train, n_test=4, seed=0, short_side=max(64, resolution))
    build_cache(load_dataset(data, labeled=True), resolutions=[resolution], modes=["stretch"], progress=False)
    return data


def run_search(name: str, pruner: str, args, root: Path, data: Path, space: Path) -> dict:
    """create_study + run_workers (one in-process CPU worker) until args.trials finished."""
    import optuna

    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.fleet._status import study_status
    from histosweep.search._study import CreateOptions, create_study
    from histosweep.storage import open_storage

    url = f"sqlite:///{root / 'studies.db'}"
    create_study(name, url, CreateOptions(data=data, space_file=space, folds=args.folds, seed=args.seed,
                                          pruner=pruner, force=True), progress=False)
    started = time.monotonic()
    code = run_workers(WorkerOptions(study=name, storage=url, artifacts=str(root / "artifacts"), gpus="cpu",
                                     n_trials=args.trials, heartbeat=30, log_dir=str(root / "logs"),
                                     progress=False))
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"worker for {name} exited {code}; see {root / 'logs'}")
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    status = study_status(study)
    return {
        "pruner": pruner, "trials": status["trials"], "epochs_run": status["epochs"]["finished_trials_run"],
        "epochs_full": status["epochs"]["finished_trials_full"], "best_oof_f1": round(study.best_value, 4),
        "best_trial": study.best_trial.number, "seconds": round(seconds, 1),
    }


def candidate_pruners(steps: int, epochs: int) -> dict:
    """Pruner settings to compare (key -> factory); steps = folds * epochs reports per trial."""
    from types import SimpleNamespace

    import optuna.pruners as P

    import histosweep.search._study as study_mod

    make_pruner = getattr(study_mod.make_pruner, "real", study_mod.make_pruner)  # unpatched

    def ours(name: str):  # make_pruner's own, reading the study at every report
        settings = SimpleNamespace(pruner=name, folds=steps // epochs)
        return lambda: make_pruner(settings, epochs, snapshot_s=0)

    return {
        "median": ours("median"),
        "median-default": lambda: P.MedianPruner(),  # Optuna's default: no warm-up
        # NOTE: PercentilePruner(p) keeps the top p% (maximize): below 50 is stricter than median
        "percentile33": lambda: P.PercentilePruner(33.0, n_startup_trials=2, n_warmup_steps=1),
        "percentile25": ours("percentile"),  # the default
        "sha3": lambda: P.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        "hyperband": ours("hyperband"),
        "wilcoxon": ours("wilcoxon"),
    }


def replay(curves: list[tuple[dict[int, float], float]], make, steps: int) -> dict:
    """Feed the unpruned trials' per-epoch F1, in order, to a pruner: epochs it would run and the
    best out-of-fold F1 among the trials it lets finish (same configs: TPE divergence not modelled)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", pruner=make())
        run, best = 0, float("-inf")
        for values, holdout in curves:
            trial = study.ask()
            pruned = False
            for step in range(steps):
                trial.report(values[step], step)
                run += 1
                if trial.should_prune():
                    pruned = True
                    break
            study.tell(trial, None if pruned else holdout,
                       state=optuna.trial.TrialState.PRUNED if pruned else None)
            best = best if pruned else max(best, holdout)
    return {"epochs_run": run, "best_oof_f1": round(best, 4)}


def replay_all(url: str, name: str, steps: int, epochs: int) -> dict:
    import optuna

    from histosweep.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    curves = [(t.intermediate_values, t.value) for t in trials if len(t.intermediate_values) >= steps]
    full = len(curves) * steps
    out = {}
    for label, make in candidate_pruners(steps, epochs).items():
        r = replay(curves, make, steps)
        r["epochs_saved_share"] = round(1 - r["epochs_run"] / full, 4) if full else 0.0
        out[label] = r
    return out


def compare(pruned: dict, unpruned: dict) -> dict:
    saved = 1.0 - pruned["epochs_run"] / unpruned["epochs_run"] if unpruned["epochs_run"] else 0.0
    gap = unpruned["best_oof_f1"] - pruned["best_oof_f1"]
    return {"epochs_saved_share": round(saved, 4), "best_f1_gap": round(gap, 4),
            "target_met": saved >= 0.40 and gap <= 0.02}


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("histosweep").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    patch_workers(None if args.as_is else args.seed, args.try_pruner)
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-pruning-") as tmp:
        root = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        os.environ.setdefault("HISTOSWEEP_CACHE", str(root / "cache"))
        data = make_data(root, args.n_train, args.resolution)
        space = root / "space.toml"
        space.write_text(small_space(resolution=args.resolution, epochs=args.epochs))
        pruned = run_search(f"pruned-{args.try_pruner or args.pruner}", args.pruner, args, root, data, space)
        pruned["pruner"] = args.try_pruner or args.pruner
        unpruned = run_search("unpruned", "none", args, root, data, space)
        replayed = replay_all(f"sqlite:///{root / 'studies.db'}", "unpruned",
                              args.folds * args.epochs, args.epochs)
    result = {**compare(pruned, unpruned), "pruned": pruned, "unpruned": unpruned, "replay": replayed,
              "trials": args.trials, "folds": args.folds, "epochs": args.epochs,
              "resolution": args.resolution, "n_train": args.n_train, "seed": args.seed,
              "try_pruner": args.try_pruner, "seeded_sampler": not args.as_is,
              "cpus": os.cpu_count()}
    if not args.json:
        for r in (pruned, unpruned):
            print(f"{r['pruner']:<8} epochs run {r['epochs_run']:>4} of {r['epochs_full']:>4}  "
                  f"pruned {r['trials']['PRUNED']:>2}/{args.trials}  best out-of-fold F1 {r['best_oof_f1']:.4f}  "
                  f"{r['seconds']:.0f} s")
        print("replay of the unpruned search's curves (same configs, in order):")
        for label, r in replayed.items():
            print(f"  {label:<15} saves {r['epochs_saved_share']:6.1%}  best out-of-fold F1 {r['best_oof_f1']:.4f}")
        print(f"epochs saved {result['epochs_saved_share']:.1%}  best-F1 gap {result['best_f1_gap']:+.4f}  "
              f"target (>=40% saved, gap <= 0.02) {'met' if result['target_met'] else 'NOT met'}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

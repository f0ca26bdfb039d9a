"""Is the number we show one the user can trust? A search on synthetic data with a weak class
signal, then, per complete trial, its out-of-fold (selection), lockbox (holdout) and test F1,
where the test set is a separate labelled set that nothing selected on; and the same for the
exported ensemble and the single best trial.

Run: `python bench/selection.py [--trials 16] [--pruner percentile] [--timeout S]` (CPU, ~10 min
on 2 cores). Uses the real create_study + run_workers + export_best on SQLite in a temp folder.
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _spaces import small_space


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="finished trials (complete + pruned)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop the search after S seconds instead (equal wall time per pruner)")
    parser.add_argument("--pruner", default="percentile", help="the study's --pruner")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--holdout", type=float, default=0.2, help="the study's --holdout (0: no lockbox)")
    parser.add_argument("--search-only", action="store_true",
                        help="stop after the search (with --workdir: a later run reuses it)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fold")
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--n-train", type=int, default=240, help="synthetic training images")
    parser.add_argument("--n-test", type=int, default=1500, help="separate labelled test images")
    parser.add_argument("--signal", type=float, default=0.25, help="class signal strength in [0, 1]")
    parser.add_argument("--candidates", type=int, default=20, help="export-best --candidates")
    parser.add_argument("--bootstrap", type=int, default=1000, help="export-best --bootstrap (BBC-CV)")
    parser.add_argument("--slots", type=int, default=2, help="CPU worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep data, study and bundle here")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def make_data(root: Path, args) -> tuple[Path, list[str]]:
    """Training data, and its TEST folder (n_test images) with labels from synth_truth.json."""
    from histosweep.data import CLASSES, build_cache, load_dataset, synthesize

    short = max(64, args.resolution)
    data = synthesize(root / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                      short_side=short, signal=args.signal)
    build_cache(load_dataset(data, labeled=True), resolutions=[args.resolution], modes=["stretch"],
                progress=False)
    truth = json.loads((data / "synth_truth.json").read_text())["test_labels"]
    return data, [CLASSES.index(truth[k]) for k in sorted(truth)]


def run_search(root: Path, data: Path, args) -> tuple[str, float]:
    from histosweep.fleet import WorkerOptions, run_workers
    from histosweep.search import CreateOptions, create_study

    url = f"sqlite:///{root / 'study.db'}"
    space = root / "space.toml"
    space.write_text(small_space(resolution=args.resolution, epochs=args.epochs,
                                  extra="label_smoothing = { low = 0.0, high = 0.2 }\n"))
    create_study("selection", url, CreateOptions(data=data, space_file=space, folds=args.folds,
                                                 holdout=args.holdout, seed=args.seed,
                                                 pruner=args.pruner, force=True,
                                                 enqueue_reference=True),
                 progress=False)
    started = time.monotonic()
    code = run_workers(WorkerOptions(
        study="selection", storage=url, artifacts=str(root / "artifacts"), gpus="cpu",
        trials_per_gpu=args.slots, n_trials=None if args.timeout else args.trials,
        timeout=args.timeout, log_dir=str(root / "logs"), progress=False))
    if code != 0:
        raise SystemExit(f"a worker exited {code}; see {root / 'logs'}")
    return url, time.monotonic() - started


def _reuse(root: Path):
    doc = json.loads((root / "search.json").read_text())
    return Path(doc["data"]), doc["y_test"], doc["url"], doc["seconds"]


def test_arrays(data: Path, resolution: int):
    from histosweep.bundle import decode_samples
    from histosweep.data import load_dataset

    samples = sorted(load_dataset(data / "TEST", labeled=False).samples, key=lambda s: s.sample_index)
    return decode_samples(samples, [(resolution, "stretch")], progress=False)


def trial_rows(url: str, root: Path, arrays, y_test) -> list[dict]:
    """Per complete trial: OOF F1 (its value), lockbox F1 (stored holdout probs), test F1."""
    import optuna

    from histosweep.bundle._predict import BundleFold, BundleMember, member_probs
    from histosweep.model import TrainConfig, macro_f1
    from histosweep.search import load_settings, open_study
    from histosweep.storage import open_artifact_store
    from histosweep.trial_files._fold import fetch_checkpoint, fetch_probs

    study = open_study("selection", url)
    settings = load_settings(study)
    y_hold = settings.label_array()[settings.split_obj().holdout]
    store = open_artifact_store(str(root / "artifacts"))
    rows = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        cfg = TrainConfig.from_dict(t.user_attrs["config"])
        records = [t.user_attrs[f"fold_{k}"] for k in range(settings.folds)]
        hold = np.mean([fetch_probs(store, r, what="bench")["holdout_probs"] for r in records], axis=0)
        folds = []
        for k, r in enumerate(records):
            path = root / "checkpoints" / f"t{t.number}_f{k}.safetensors"
            path.parent.mkdir(exist_ok=True)
            folds.append(BundleFold(k, fetch_checkpoint(store, r, path, what="bench")))
        member = BundleMember(t.number, cfg, 1.0, folds)
        test = member_probs(member, *arrays[member.target], device="cpu", progress=False)
        rows.append({"trial": t.number, "oof_f1": t.value,
                     "lockbox_f1": macro_f1(y_hold, hold) if y_hold.size else None,
                     "test_f1": macro_f1(y_test, test), "test_probs": test})
    return rows


def export_rows(url: str, root: Path, args, y_test, rows) -> dict:
    """export-best once per ensemble method on the same study: each one's test F1, lockbox and
    BBC-CV (ensemble, single best, reference, search gain)."""
    from histosweep.bundle import ExportOptions, export_best, load_bundle
    from histosweep.bundle._ensemble import decide, ensemble_probs
    from histosweep.bundle._selection import METHODS
    from histosweep.model import macro_f1

    by_trial = {r["trial"]: r for r in rows}
    methods, m = {}, None
    for method in METHODS:
        out = root / f"bundle-{method}"
        summary = export_best(ExportOptions(study="selection", out=out, storage=url,
                                            artifacts=str(root / "artifacts"),
                                            candidates=args.candidates, overwrite=True,
                                            progress=False, ensemble=method,
                                            bootstrap=args.bootstrap))
        bundle = load_bundle(out)
        # NOTE: the members' test probabilities were computed above from the same fold
        # checkpoints (deterministic on the CPU), so the bundle's ensemble is their weighted mean
        probs = ensemble_probs([by_trial[x.trial]["test_probs"] for x in bundle.members],
                               [x.weight for x in bundle.members])
        m = summary["metrics"]
        methods[method] = {
            "members": summary["members"], "oof_f1": m["oof_f1_calibrated"],
            "lockbox_f1": m["lockbox_f1"], "lockbox_ci95": m["lockbox_f1_ci95"],
            "bbc": m["bbc"]["ensemble"], "bbc_search_gain": m["bbc"]["search_gain"],
            "test_f1": macro_f1(y_test, decide(probs, bundle.offsets)),
            "test_f1_uncalibrated": macro_f1(y_test, probs),
        }
    best = by_trial[m["single_best"]["trial"]]
    ref_n = m["bbc"]["reference_trial"]
    ref = by_trial.get(ref_n)
    return {
        "methods": methods,
        "single_best": {"trial": best["trial"], "oof_f1": best["oof_f1"],
                        "lockbox_f1": m["single_best"]["lockbox_f1"],
                        "lockbox_ci95": m["single_best"]["lockbox_f1_ci95"],
                        "bbc": m["bbc"]["single_best"], "test_f1": best["test_f1"]},
        "reference": None if ref is None else {
            "trial": ref_n, "oof_f1": ref["oof_f1"], "bbc": m["bbc"]["reference"],
            "test_f1": ref["test_f1"]},
    }


def covers(ci, value) -> bool | None:
    return None if ci is None else bool(ci[0] <= value <= ci[1])


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    return None if len(a) < 3 else round(float(spearmanr(a, b).statistic), 4)


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("histosweep").setLevel(logging.WARNING)
    from histosweep.fleet import study_status

    with tempfile.TemporaryDirectory(prefix="histosweep-bench-selection-") as tmp:
        root = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HISTOSWEEP_CACHE", str(root / "cache"))
        done = root / "search.json"  # a finished search in --workdir is reused
        if done.is_file():
            data, y_test, url, seconds = _reuse(root)
        else:
            data, y_test = make_data(root, args)
            url, seconds = run_search(root, data, args)
            done.write_text(json.dumps({"data": str(data), "y_test": y_test, "url": url,
                                        "seconds": seconds}))
        if args.search_only:
            return {"search_seconds": seconds}
        arrays = test_arrays(data, args.resolution)
        rows = trial_rows(url, root, arrays, np.asarray(y_test))
        exported = export_rows(url, root, args, np.asarray(y_test), rows)
        from histosweep.search import open_study

        status = study_status(open_study("selection", url))
    counts = status["trials"]
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    from histosweep.bundle._selection import DEFAULT_METHOD

    ens, single = exported["methods"][DEFAULT_METHOD], exported["single_best"]
    result = {
        "pruner": args.pruner, "search_seconds": round(seconds, 1), "trials": counts,
        "complete_share": round(counts.get("COMPLETE", 0) / finished, 4) if finished else 0.0,
        "epochs_saved_share": status["epochs"]["saved_share"],
        "spearman_oof_test": spearman([r["oof_f1"] for r in rows], [r["test_f1"] for r in rows]),
        "spearman_lockbox_test": (None if args.holdout == 0 else spearman(
            [r["lockbox_f1"] for r in rows], [r["test_f1"] for r in rows])),
        "ensemble": ens, "default_method": DEFAULT_METHOD, "methods": exported["methods"],
        "single_best": single, "reference": exported["reference"], "members": ens["members"],
        "ensemble_test_at_least_single": ens["test_f1"] >= single["test_f1"],
        "lockbox_ci_contains_test": {
            "ensemble": covers(ens["lockbox_ci95"], ens["test_f1"]),
            "single_best": covers(single["lockbox_ci95"], single["test_f1"])},
        "bbc_ci_contains_test": {
            "ensemble": covers(ens["bbc"]["ci95"], ens["test_f1"]),
            "single_best": covers(single["bbc"]["ci95"], single["test_f1"]),
            **{f"ensemble_{k}": covers(v["bbc"]["ci95"], v["test_f1"])
               for k, v in exported["methods"].items()}},
        "holdout": args.holdout, "bootstrap": args.bootstrap,
        "per_trial": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()
                       if k != "test_probs"} for r in rows],
        "n_train": args.n_train, "n_test": len(y_test), "signal": args.signal, "folds": args.folds,
        "epochs": args.epochs, "resolution": args.resolution, "seed": args.seed, "cpus": os.cpu_count(),
    }
    if not args.json:
        _print(result)
    print(json.dumps(result))
    if args.workdir:  # bench/selection_seeds.py reads it back
        (Path(args.workdir) / "result.json").write_text(json.dumps(result))
    return result


def _ci(ci) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _f(x) -> str:
    return "   n/a" if x is None else f"{x:.4f}"


def _print(r: dict) -> None:
    print(f"pruner {r['pruner']}, holdout {r['holdout']}, seed {r['seed']}: {r['trials']} in "
          f"{r['search_seconds']:.0f} s, {r['complete_share']:.0%} complete, "
          f"{r['epochs_saved_share']:.0%} of epochs saved")
    print(f"{'trial':>5} {'OOF F1':>7} {'lockbox':>8} {'test F1':>8}")
    for t in sorted(r["per_trial"], key=lambda t: -t["oof_f1"]):
        print(f"{t['trial']:>5} {t['oof_f1']:7.4f} {_f(t['lockbox_f1']):>8} {t['test_f1']:8.4f}")
    print(f"Spearman with test F1: OOF {r['spearman_oof_test']}, lockbox {r['spearman_lockbox_test']}")
    rows = [(f"ensemble {k}", v) for k, v in r["methods"].items()]
    rows += [(f"single best {r['single_best']['trial']}", r["single_best"])]
    if r["reference"]:
        rows += [(f"reference {r['reference']['trial']}", r["reference"])]
    for name, e in rows:
        print(f"{name:<18} OOF {e['oof_f1']:.4f}  lockbox {_f(e.get('lockbox_f1'))} "
              f"{_ci(e.get('lockbox_ci95'))}  BBC-CV {e['bbc']['mean']:.4f} {_ci(e['bbc']['ci95'])}  "
              f"test {e['test_f1']:.4f}  (n_test {r['n_test']})")
    for k, v in r["methods"].items():
        g = v["bbc_search_gain"]
        if g and r["reference"]:
            print(f"search gain ({k}): BBC-CV {g['mean']:+.4f} [{g['ci95'][0]:+.4f}, "
                  f"{g['ci95'][1]:+.4f}], test {v['test_f1'] - r['reference']['test_f1']:+.4f}")
    print("members: " + ", ".join(f"trial {m['trial']} x{m['weight']:.2f}" for m in r["members"]))


if __name__ == "__main__":
    main()

"""Does BBC-CV tell the truth? bench/selection.py over several data seeds, with and without a
lockbox, each with a separate labelled test set nothing selects on; every ensemble method
exported from ONE search per seed and holdout.

Run: `python bench/selection_seeds.py --workroot /tmp/bbc-bench [--seeds 0 1 2]
[--holdouts 0.2 0] [--trials 10 --epochs 3 --n-test 1500 --signal 0.25 --pruner percentile]`; a workdir that holds a finished
search (`search.json`) is reused, so the searches can run first (`bench/selection.py
--search-only --workdir ...`). Prints every figure, misses included. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import selection


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workroot", required=True, help="one workdir per seed/holdout under it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--holdouts", type=float, nargs="+", default=[0.2, 0.0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=1500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--signal", type=float, default=0.25, help="class signal strength in [0, 1]")
    parser.add_argument("--pruner", default="percentile", help="the study's --pruner")
    return parser.parse_args(argv)


def _workdir(root: Path, holdout: float, seed: int) -> Path:
    return root / f"h{holdout:g}_s{seed}"


def main(argv=None) -> dict:
    args = _args(argv)
    root = Path(args.workroot)
    runs = {}
    for holdout in args.holdouts:
        for seed in args.seeds:
            done = _workdir(root, holdout, seed) / "result.json"  # an earlier analysis
            if done.is_file():
                runs[(holdout, seed)] = json.loads(done.read_text())
                selection._print(runs[(holdout, seed)])
                continue
            runs[(holdout, seed)] = selection.main([
                "--trials", str(args.trials), "--epochs", str(args.epochs), "--n-test",
                str(args.n_test), "--seed", str(seed), "--holdout", str(holdout), "--bootstrap",
                str(args.bootstrap), "--signal", str(args.signal), "--pruner", args.pruner,
                "--workdir", str(_workdir(root, holdout, seed))])
    summary = summarise(runs, args)
    _print(summary)
    print(json.dumps(summary))
    return summary


def _width(ci) -> float:
    return ci[1] - ci[0]


def summarise(runs: dict, args) -> dict:
    out: dict = {"seeds": args.seeds, "holdouts": args.holdouts}
    lock = [h for h in args.holdouts if h > 0]
    for h in lock:  # BBC-CV against the lockbox, both against the test set
        pairs = [(runs[(h, s)][who], who, s) for s in args.seeds for who in ("ensemble", "single_best")]
        out[f"holdout_{h:g}"] = {
            "bbc_covers": [[s, who, bool(e["bbc"]["ci95"][0] <= e["test_f1"] <= e["bbc"]["ci95"][1])]
                           for e, who, s in pairs],
            "lockbox_covers": [[s, who, bool(e["lockbox_ci95"][0] <= e["test_f1"] <= e["lockbox_ci95"][1])]
                               for e, who, s in pairs],
            "bbc_mean_width": float(np.mean([_width(e["bbc"]["ci95"]) for e, _, _ in pairs])),
            "lockbox_mean_width": float(np.mean([_width(e["lockbox_ci95"]) for e, _, _ in pairs])),
            "bbc_mean_abs_error": float(np.mean([abs(e["bbc"]["mean"] - e["test_f1"]) for e, _, _ in pairs])),
            "lockbox_mean_abs_error": float(np.mean([abs(e["lockbox_f1"] - e["test_f1"]) for e, _, _ in pairs])),
            "rows": [{"seed": s, "who": who, "test_f1": e["test_f1"], "bbc": e["bbc"],
                      "lockbox_f1": e["lockbox_f1"], "lockbox_ci95": e["lockbox_ci95"]}
                     for e, who, s in pairs],
        }
    if 0.0 in args.holdouts:  # no lockbox: the ensemble trained on every image
        out["holdout_0"] = [{
            "seed": s, "test_f1": runs[(0.0, s)]["ensemble"]["test_f1"],
            "bbc": runs[(0.0, s)]["ensemble"]["bbc"],
            "bbc_covers": bool(runs[(0.0, s)]["ensemble"]["bbc"]["ci95"][0]
                               <= runs[(0.0, s)]["ensemble"]["test_f1"]
                               <= runs[(0.0, s)]["ensemble"]["bbc"]["ci95"][1]),
            **{f"test_f1_holdout_{h:g}": runs[(h, s)]["ensemble"]["test_f1"] for h in lock},
        } for s in args.seeds]
    methods = {}
    for method in runs[next(iter(runs))]["methods"]:
        per = {f"{h:g}": [runs[(h, s)]["methods"][method]["test_f1"] - runs[(h, s)]["single_best"]["test_f1"]
                          for s in args.seeds] for h in args.holdouts}
        methods[method] = {
            "minus_single_best": per,
            "mean_minus_single_best": {h: float(np.mean(v)) for h, v in per.items()},
            "mean_test_f1": {f"{h:g}": float(np.mean([runs[(h, s)]["methods"][method]["test_f1"]
                                                      for s in args.seeds])) for h in args.holdouts},
            "bbc_covers": sum(bool(r["methods"][method]["bbc"]["ci95"][0] <= r["methods"][method]["test_f1"]
                                   <= r["methods"][method]["bbc"]["ci95"][1]) for r in runs.values()),
        }
    out["methods"] = methods
    out["best_method_by_mean_test_f1"] = max(
        methods, key=lambda k: np.mean([v for vs in methods[k]["minus_single_best"].values() for v in vs]))
    out["search_gain"] = [{
        "holdout": h, "seed": s, "method": r["default_method"],
        "bbc": r["methods"][r["default_method"]]["bbc_search_gain"],
        "test": (r["ensemble"]["test_f1"] - r["reference"]["test_f1"]) if r["reference"] else None,
    } for (h, s), r in runs.items()]
    return out


def _print(s: dict) -> None:
    print("\n=== summary over seeds", s["seeds"])
    for h in [h for h in s["holdouts"] if h > 0]:
        x = s[f"holdout_{h:g}"]
        print(f"--holdout {h:g}:")
        for r in x["rows"]:
            b = r["bbc"]
            print(f"  seed {r['seed']} {r['who']:<11} test {r['test_f1']:.4f}  BBC-CV {b['mean']:.4f} "
                  f"[{b['ci95'][0]:.4f}, {b['ci95'][1]:.4f}]  lockbox {r['lockbox_f1']:.4f} "
                  f"[{r['lockbox_ci95'][0]:.4f}, {r['lockbox_ci95'][1]:.4f}]")
        print(f"  BBC-CV interval covers test F1: {sum(c[2] for c in x['bbc_covers'])} of "
              f"{len(x['bbc_covers'])}; lockbox interval: {sum(c[2] for c in x['lockbox_covers'])} of "
              f"{len(x['lockbox_covers'])}")
        print(f"  mean interval width: BBC-CV {x['bbc_mean_width']:.4f}, lockbox {x['lockbox_mean_width']:.4f}")
        print(f"  mean |estimate - test F1|: BBC-CV {x['bbc_mean_abs_error']:.4f}, lockbox "
              f"{x['lockbox_mean_abs_error']:.4f}")
    for r in s.get("holdout_0", []):
        others = ", ".join(f"{k.replace('test_f1_', '')} run {v:.4f}" for k, v in r.items()
                           if k.startswith("test_f1_holdout"))
        print(f"--holdout 0 seed {r['seed']}: ensemble test {r['test_f1']:.4f} ({others}); BBC-CV "
              f"{r['bbc']['mean']:.4f} [{r['bbc']['ci95'][0]:.4f}, {r['bbc']['ci95'][1]:.4f}] "
              f"covers: {r['bbc_covers']}")
    for k, m in s["methods"].items():
        per = "; ".join(f"holdout {h}: {', '.join(f'{v:+.4f}' for v in vs)} (mean "
                        f"{m['mean_minus_single_best'][h]:+.4f}, mean test {m['mean_test_f1'][h]:.4f})"
                        for h, vs in m["minus_single_best"].items())
        print(f"ensemble {k} minus single best, test F1: {per}; BBC-CV covers {m['bbc_covers']} runs")
    print(f"best method by mean test F1: {s['best_method_by_mean_test_f1']}")
    for g in s["search_gain"]:
        if g["bbc"]:
            print(f"search gain holdout {g['holdout']:g} seed {g['seed']}: BBC-CV {g['bbc']['mean']:+.4f} "
                  f"[{g['bbc']['ci95'][0]:+.4f}, {g['bbc']['ci95'][1]:+.4f}], test {g['test']:+.4f}")


if __name__ == "__main__":
    main()

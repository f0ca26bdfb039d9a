"""How long BBC-CV takes at real size: 20 candidates x 1,100 out-of-fold rows x 1,000 resamples,
the whole selection (ranking, ensemble method, decision offsets and their check) in each.

Run: `python bench/bootstrap_speed.py [--methods greedy bagged cmaes] [--resamples 1000]`
(CPU; numpy's threads as the machine gives them). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def planted(candidates: int, rows: int, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    logits = rng.normal(size=(candidates, rows, classes))
    logits[:, np.arange(rows), labels] += rng.uniform(0.2, 0.8, candidates)[:, None]
    probs = np.exp(logits)
    return probs / probs.sum(-1, keepdims=True), labels


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["greedy", "bagged", "cmaes"])
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1100)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    from histosweep.bundle._bootstrap import BBCOptions, bbc_cv

    probs, labels = planted(args.candidates, args.rows)
    result = {"candidates": args.candidates, "rows": args.rows, "resamples": args.resamples,
              "cpus": os.cpu_count(), "seconds": {}}
    for method in args.methods:
        started = time.perf_counter()
        est = bbc_cv(probs, labels, BBCOptions(resamples=args.resamples, method=method), reference=0)
        result["seconds"][method] = round(time.perf_counter() - started, 1)
        print(f"{method:<7} {result['seconds'][method]:7.1f} s  ensemble {est['ensemble']['mean']:.4f} "
              f"{est['ensemble']['ci95']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

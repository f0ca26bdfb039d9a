"""A worker process for the concurrency test: the real TrialLoop (gate, heartbeats, retries) on
the real study storage, with a trivial objective in place of training. Started with spawn."""

from __future__ import annotations

import logging
import os
import sys

import optuna


def trivial_objective(trial: optuna.Trial) -> float:
    """Two params, three reported steps; every 7th trial is pruned so both states are counted."""
    x = trial.suggest_float("x", -1.0, 1.0)
    k = trial.suggest_categorical("k", [1, 2, 3])
    for step in range(3):
        trial.report(x * k + step, step)
    if trial.number % 7 == 3:
        raise optuna.TrialPruned("pruned by the test objective")
    return x * k


def worker_main(study_name: str, url: str, label: str, n_trials: int, log_path: str) -> None:
    """Everything this process prints (logging, warnings, tracebacks) goes to `log_path`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[{label}] %(levelname)s %(message)s"))
    logging.getLogger("histosweep").addHandler(handler)
    logging.getLogger("histosweep").setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from histosweep.fleet import TrialLoop, WorkerOptions
    from histosweep.storage import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat=60))
    opts = WorkerOptions(study=study_name, storage=url, artifacts=None, n_trials=n_trials,
                         heartbeat=60, progress=False)
    code = TrialLoop(study, trivial_objective, opts, label).run()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)

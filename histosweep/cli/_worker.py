"""`histosweep worker STUDY --gpus cpu|all|0,1,3`: run trials until the study is done."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from histosweep.cli._common import UserError, artifacts_arg, storage_arg

OPTIONS = ("storage", "artifacts")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--gpus", default="cpu", help="cpu, all, or GPU ids like 0,1,3 (default cpu)")
    parser.add_argument("--trials-per-gpu", default="1",
                        help="worker processes per GPU (small models), or auto: as many as the GPU's "
                             "free memory holds at the space's largest config (1 on the CPU)")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="stop when the study holds N finished trials (complete + pruned), over all workers")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after S seconds")
    parser.add_argument("--heartbeat", type=int, default=60,
                        help="heartbeat seconds; a trial silent for twice that is failed and retried (default 60)")
    parser.add_argument("--data", default=None, help="dataset folder, when it moved since create")
    parser.add_argument("--log-dir", default="histosweep-logs", help="one log file per worker process here")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars: one log line per epoch instead (always so with "
                             "several slots, whose bars would overwrite each other)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="text (default) or json: JSON lines (ts, level, slot, msg, trial, "
                             "fold, epoch) on stderr and in the log files, for log shippers")
    for hidden in ("--_slot", "--_gpu", "--_threads"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)


def _check(args) -> None:
    """Refuse a run that would do nothing, before any study or GPU work."""
    if args.n_trials is not None and args.n_trials < 1:
        raise UserError(f"--n-trials {args.n_trials}: give a number of finished trials >= 1 "
                        "(or leave it out to run until stopped)")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout:g}: give a number of seconds > 0 "
                        "(or leave it out to run until stopped)")
    if args.heartbeat < 1:  # 0 would silently turn off the retry of a dead worker's trial
        raise UserError(f"--heartbeat {args.heartbeat}: give a number of seconds >= 1 (a trial "
                        "silent for twice that is failed and retried)")
    _check_log_dir(args.log_dir)


def _check_log_dir(text: str) -> None:
    """--log-dir must be a folder, or creatable: its nearest existing part a writable folder."""
    from histosweep.storage import nearest_existing, not_a_folder

    path = Path(text)
    if why := not_a_folder(path):
        raise UserError(f"--log-dir {text}: {why}; pass a folder path for the worker log files")
    existing = nearest_existing(path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--log-dir {text}: cannot write in {existing}; "
                        "pass a folder you can write to")


def run(args) -> int:
    _check(args)  # before the search package (optuna, torch) is imported
    from histosweep.fleet import WorkerOptions, parse_trials_per_gpu, run_slot, run_workers

    opts = WorkerOptions(
        study=args.study, storage=storage_arg(args), artifacts=artifacts_arg(args), gpus=args.gpus,
        trials_per_gpu=parse_trials_per_gpu(args.trials_per_gpu), n_trials=args.n_trials, timeout=args.timeout,
        heartbeat=args.heartbeat, data=args.data, log_dir=args.log_dir, progress=not args.no_progress,
        log_format=args.log_format,
    )
    if args._slot:  # a child started by run_workers
        threads = int(args._threads) if args._threads else None
        # the parent set CUDA_VISIBLE_DEVICES to this slot's GPU: it is cuda:0 here
        device = "cpu" if args._gpu == "cpu" else "cuda"
        return run_slot(opts, label=args._slot, device=device, threads=threads)
    return run_workers(opts)

"""`histosweep demo [--workdir DIR]`: the whole path on the CPU with SQLite and synthetic data.

Synthesise, prepare, create, two CPU workers, export-best + submission CSV, then a summary with
the dashboard command. A rerun keeps DIR's data and replaces its study and bundle.
"""

from __future__ import annotations

from pathlib import Path

from histosweep.cli._common import print_json
from histosweep.constants import DEMO_WORKDIR as DEFAULT_WORKDIR

OPTIONS = ("json",)  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR,
                        help=f"folder for data, study, artifacts and bundle (default ./{DEFAULT_WORKDIR}); "
                             "a rerun replaces the study and bundle in it")
    parser.add_argument("--trials", type=int, default=10, help="finished trials to run (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="CPU worker processes in parallel (default 2)")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")


def run(args) -> int:
    import optuna

    from histosweep._demo import DemoOptions, format_summary, run_demo

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the demo's own lines say what happens

    opts = DemoOptions(workdir=Path(args.workdir), trials=args.trials, workers=args.workers,
                       folds=args.folds, progress=not args.no_progress)
    summary = run_demo(opts)
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))
    return 0

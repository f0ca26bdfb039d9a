"""`histosweep trials STUDY [--state S] [--format table|json|csv]`: one row per trial."""

from __future__ import annotations

import sys

from histosweep.cli._common import print_json, storage_arg

FORMATS = ("table", "json", "csv")


OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--state", default=None,
                        help="only trials in this state: complete, pruned, fail, running, waiting")
    parser.add_argument("--format", default="table", help="table (default), json or csv")


def run(args) -> int:
    from histosweep.search._errors import UserError
    from histosweep.search._listing import format_trials_table, list_trials, write_trials_csv
    from histosweep.search._study import open_study

    fmt = "json" if args.json else args.format
    if fmt not in FORMATS:
        raise UserError(f"--format {args.format!r}: choose one of {', '.join(FORMATS)}")
    study = open_study(args.study, storage_arg(args))
    listing = list_trials(study, state=args.state)
    if fmt == "json":
        print_json(listing)
    elif fmt == "csv":
        write_trials_csv(listing, sys.stdout)
    else:
        print(format_trials_table(listing))
    return 0

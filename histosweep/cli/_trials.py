"""`histosweep trials STUDY [--state S] [--format table|json|csv]`: one row per trial."""

from __future__ import annotations

import sys

from histosweep.cli._common import UserError, print_json, storage_arg

FORMATS = ("table", "json", "csv")


OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--state", default=None,
                        help="only trials in this state: complete, pruned, fail, running, waiting")
    # NOTE: default None, so that --json with an explicit --format table|csv can be refused
    parser.add_argument("--format", default=None, help="table (default), json or csv")


def run(args) -> int:
    fmt = _format(args)  # before the storage is opened
    from histosweep.fleet import format_trials_table, list_trials, write_trials_csv
    from histosweep.search import open_study

    study = open_study(args.study, storage_arg(args))
    listing = list_trials(study, state=args.state)
    if fmt == "json":
        print_json(listing)
    elif fmt == "csv":
        write_trials_csv(listing, sys.stdout)
    else:
        print(format_trials_table(listing))
    return 0


def _format(args) -> str:
    """table, json or csv; --json means json, so --json with another --format is refused."""
    fmt = args.format if args.format is not None else ("json" if args.json else "table")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if args.json and fmt != "json":
        raise UserError(f"--json and --format {fmt} ask for two formats; drop --json or --format {fmt}")
    return fmt

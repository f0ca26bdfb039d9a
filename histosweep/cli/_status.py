"""`histosweep status STUDY`: trials by state, best trial, pruning savings, running trials."""

from __future__ import annotations

from histosweep.cli._common import print_json, storage_arg


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")


def run(args) -> int:
    from histosweep.search._status import format_status, study_status
    from histosweep.search._study import open_study
    from histosweep.storage import redact, resolve_storage_url

    url = storage_arg(args)
    status = study_status(open_study(args.study, url))
    status["storage"] = redact(resolve_storage_url(url))
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
    return 0

"""`histosweep studies`: every study in a storage, with trial counts, best value, direction, and
the studies grouped by split: what `export-best S1 S2 ..` would pool."""

from __future__ import annotations

from histosweep.cli._common import print_json, storage_arg

OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    del parser  # only the common options


def run(args) -> int:
    from histosweep.fleet import format_studies, list_studies, split_groups
    from histosweep.storage import open_storage, redact, resolve_storage_url

    url = storage_arg(args)
    studies = list_studies(open_storage(url, create=False))
    if args.json:
        print_json({"storage": redact(resolve_storage_url(url)), "studies": studies,
                    "splits": split_groups(studies)})
    else:
        print(format_studies(studies))
    return 0

"""`histosweep gc STUDY --keep-top N [--dry-run]`: delete the fold checkpoints of pruned and
failed trials and of complete trials outside the top N; keep running, waiting and resumable
trials' and every probability, metric and picture. Exercise: `histosweep gc demo --keep-top 5 --dry-run`.
"""

from __future__ import annotations

from histosweep.cli._common import artifacts_arg, print_json, storage_arg
from histosweep.constants import DEFAULT_CANDIDATES

OPTIONS = ("storage", "artifacts", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--keep-top", type=int, required=True, metavar="N",
                        help="required: keep the checkpoints of the top N complete trials by value; "
                             "N should be >= the --candidates you export with (export-best's "
                             f"--candidates default is {DEFAULT_CANDIDATES})")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")


def run(args) -> int:
    from histosweep.fleet import check_keep_top, collect_garbage, format_bytes
    from histosweep.search import open_study
    from histosweep.storage import open_artifact_store

    spec = artifacts_arg(args)
    check_keep_top(args.keep_top)  # before opening anything
    study = open_study(args.study, storage_arg(args))
    summary = collect_garbage(study, open_artifact_store(spec, create=False), spec,
                              keep_top=args.keep_top, dry_run=args.dry_run)
    if args.json:
        print_json(summary)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for d in summary["deleted"]:
        print(f"{verb} trial {d['trial']} ({d['state'].lower()}): {len(d['checkpoints'])} "
              f"checkpoint(s), {format_bytes(d['bytes'])}")
    freed = format_bytes(summary["bytes_freed"])
    print(f"{verb} the checkpoints of {len(summary['deleted'])} trial(s) of {args.study!r}, "
          f"{'would free' if args.dry_run else 'freed'} {freed}; kept the top {args.keep_top} "
          f"and {sum(1 for k in summary['kept'] if not k['reason'].startswith('top'))} running, "
          "waiting, resumable or export-leased trial(s)")
    if args.keep_top < DEFAULT_CANDIDATES:
        print(f"note: export-best ranks --candidates {DEFAULT_CANDIDATES} by default and stops if "
              f"it selects a trial gc cleaned; --candidates {args.keep_top} or less never does")
    return 0

"""`histosweep status STUDY [--watch --interval S --count N]`: trials by state, best trial,
pruning savings, running trials (worker, fold, epoch, time left); --watch refreshes it."""

from __future__ import annotations

import sys

from histosweep.cli._common import UserError, artifacts_arg, print_json, storage_arg

OPTIONS = ("storage", "artifacts", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument(
        "--watch", action="store_true",
        help="refresh until Ctrl-C: in place on a terminal, one snapshot per interval otherwise "
        "(with --json: one JSON document per line)",
    )
    parser.add_argument("--interval", type=float, default=None, metavar="S",
                        help="seconds between refreshes with --watch (default 5)")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="with --watch: stop after N refreshes (scripts, tests)")


def _check(args) -> None:
    if not args.watch and (args.interval is not None or args.count is not None):
        raise UserError("--interval and --count only apply with --watch; add --watch")
    if args.interval is not None and not args.interval > 0:
        raise UserError(f"--interval {args.interval:g}: give a number of seconds > 0")
    if args.count is not None and args.count < 1:
        raise UserError(f"--count {args.count}: give a number of refreshes >= 1")


def run(args) -> int:
    from histosweep.fleet import format_status, study_artifact_bytes, study_status, watch_status
    from histosweep.search import open_study
    from histosweep.storage import redact, resolve_storage_url

    _check(args)
    url = storage_arg(args)
    study = open_study(args.study, url)
    storage = redact(resolve_storage_url(url))
    _warn_if_store_missing(artifacts_arg(args))

    def snapshot() -> dict:
        # artifact_bytes: the study's files in its store (a folder or S3)
        return {**study_status(study), "storage": storage,
                "artifact_bytes": study_artifact_bytes(study, artifacts_arg(args))}

    if args.watch:
        try:
            watch_status(snapshot, interval=args.interval or 5.0, count=args.count,
                         as_json=args.json, stream=sys.stdout,
                         redraw=sys.stdout.isatty() and not args.json)
        except KeyboardInterrupt:  # Ctrl-C is how a watch ends: no traceback, exit 0
            print()
        return 0
    if args.json:
        print_json(snapshot())
    else:
        print(format_status(snapshot()))
    return 0


def _warn_if_store_missing(spec: str | None) -> None:
    """A folder store that is not there counts 0 B: say so, rather than look like an empty study
    (a typo in --artifacts, or another machine's folder)."""
    from histosweep.storage import store_folder

    folder = store_folder(spec)
    if folder is not None and not folder.is_dir():
        print(f"warning: artifact folder {folder} does not exist, so the size below counts nothing "
              "(pass --artifacts or $HISTOSWEEP_ARTIFACTS where the workers write)", file=sys.stderr)

"""`histosweep enqueue STUDY --params FILE`: queue a trial with given params (a warm start).

The file (TOML or JSON, {param: value}) is checked against the study's space first.
"""

from __future__ import annotations

from histosweep.cli._common import print_json, storage_arg

OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--params", required=True, metavar="FILE",
                        help="TOML or JSON file of param = value for params the study searches")


def run(args) -> int:
    from histosweep.search import check_params, enqueue, load_settings, open_study, read_params_file

    study = open_study(args.study, storage_arg(args))
    space = load_settings(study).space_obj()
    params = check_params(space, read_params_file(args.params), source=f"params file {args.params}")
    queued = enqueue(study, params, source=str(args.params))
    if args.json:
        print_json({"study": args.study, "params": params, "enqueued": queued})
    elif queued:
        print(f"enqueued in study {args.study!r}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    else:
        print(f"not enqueued: study {args.study!r} already has a trial with these params")
    return 0

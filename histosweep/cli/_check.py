"""`histosweep check STUDY [--gpus cpu|all|0,1]`: preflight before any trial — storage, artifact
store, data fingerprint, caches, pretrained weights, GPUs. One line per problem, exit 1 if any.
"""

from __future__ import annotations

import sys

from histosweep.cli._common import artifacts_arg, print_json, storage_arg

OPTIONS = ("storage", "artifacts", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--gpus", default="cpu", help="cpu, all, or GPU ids like 0,1,3 (default cpu)")
    parser.add_argument("--data", default=None, help="dataset folder, when it moved since create")


def run(args) -> int:
    from histosweep.fleet import CheckOptions, run_checks

    checks = run_checks(CheckOptions(
        study=args.study, storage=storage_arg(args), artifacts=artifacts_arg(args), data=args.data,
        gpus=args.gpus,
    ))
    ok = all(c.ok for c in checks)
    if args.json:
        print_json({"ok": ok, "checks": [c.to_json() for c in checks]})
        return 0 if ok else 1
    for c in checks:
        if c.ok:
            print(f"ok: {c.line()}")
        else:
            print(f"error: {c.line()}", file=sys.stderr)
    return 0 if ok else 1

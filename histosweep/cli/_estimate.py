"""`histosweep estimate STUDY`: export-best's BBC-CV estimate and search gain without writing a
bundle; reads only the stored out-of-fold probabilities (no checkpoint is fetched).
Exercise: `histosweep estimate demo --json`.
"""

from __future__ import annotations

from histosweep.cli._common import artifacts_arg, print_json, storage_arg
from histosweep.cli._export import add_estimate_arguments, print_estimate
from histosweep.constants import DEFAULT_CANDIDATES

OPTIONS = ("storage", "artifacts", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", nargs="+",
                        help="study name; several on one data and split: as export-best S1 S2, pooled")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                       help=f"as export-best: select from the top N trials (default {DEFAULT_CANDIDATES})")
    which.add_argument("--single", action="store_true", help="as export-best --single")
    which.add_argument("--trial", type=int, nargs="+", action="extend", default=[], metavar="N", help="as export-best --trial")
    parser.add_argument("--no-calibrate", action="store_true", help="as export-best --no-calibrate")
    add_estimate_arguments(parser)


def run(args) -> int:
    from histosweep.bundle import EstimateOptions, estimate

    result = estimate(EstimateOptions(
        study=args.study[0], more_studies=tuple(args.study[1:]), storage=storage_arg(args), artifacts=artifacts_arg(args),
        trials=tuple(args.trial), single=args.single, candidates=args.candidates,
        calibrate=not args.no_calibrate, ensemble=args.ensemble, bootstrap=args.bootstrap,
    ))
    if args.json:
        print_json(result)
        return 0
    names = " + ".join(map(repr, result["studies"]))
    print(f"{'studies' if len(result['studies']) > 1 else 'study'} {names}: {result['pool']} "
          f"complete trial(s), {result['rows']} out-of-fold rows")
    print_estimate(result)
    return 0

"""`histosweep create STUDY --data DATA`: store space, data fingerprint and split in a study."""

from __future__ import annotations

import sys
from pathlib import Path

from histosweep.cli._common import print_json, storage_arg
from histosweep.constants import DEFAULT_HOLDOUT
from histosweep.search import pruner_help, sampler_help

OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--data", default=None,
                        help="dataset folder (train_labels.csv + train_data/); with --like only "
                             "where OLD's data moved")
    parser.add_argument("--space", default=None, help="search space TOML (default: the reference recipe's space)")
    # NOTE: default None, so that --like can refuse a split flag it would ignore
    parser.add_argument("--folds", type=int, default=None, help="cross-validation folds (default 5)")
    parser.add_argument("--holdout", type=float, default=None,
                        help=f"stratified holdout (lockbox) fraction, e.g. 0.2 (default {DEFAULT_HOLDOUT:g}: "
                             "every image in the folds, export-best's BBC-CV estimate is the honest "
                             "number)")
    parser.add_argument("--seed", type=int, default=None, help="split and sampler seed (default 0)")
    parser.add_argument("--like", default=None, metavar="OLD",
                        help="use study OLD's data, fingerprint, split (holdout and folds, row for "
                             "row), folds and seed, so out-of-fold rows line up; this study keeps "
                             "its own space, sampler and pruner")
    parser.add_argument("--warm-start", nargs="+", default=(), metavar="OLD",
                        help="import the COMPLETE and PRUNED trials of these studies (same data and "
                             "split only) whose config is a point of this space, as history for "
                             "the sampler and pruner: never trained, exported or counted by "
                             "--n-trials here")
    parser.add_argument("--pruner", default="percentile", help=pruner_help())
    parser.add_argument("--sampler", default="tpe", help=sampler_help())
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--no-reference", action="store_true",
                           help="do not queue the reference recipe's point of the space as a trial "
                                "(by default it is queued, never pruned, and export-best's search "
                                "gain is measured against it)")
    reference.add_argument("--enqueue-reference", action="store_true",
                           help="the default; kept so that old scripts work")
    parser.add_argument("--keep-top", type=int, default=0, metavar="N",
                        help="workers delete fold checkpoints outside the top N trials after each "
                             "trial (histosweep gc); N >= the export-best --candidates; 0 keeps all (default)")
    parser.add_argument("--budget-gpu-hours", type=float, default=None, metavar="H",
                        help="workers take no new trial once the study's trials used H GPU-hours "
                             "(time x devices; a CPU slot counts as one); they finish the ones "
                             "they hold. Change it with `histosweep budget` (default: no budget)")
    parser.add_argument("--keep-flagged", action="store_true", help="keep samples the audit flags")
    existing = parser.add_mutually_exclusive_group()  # accept it, or replace it: not both
    existing.add_argument("--skip-if-exists", action="store_true", help="accept an identical existing study")
    existing.add_argument("--force", action="store_true",
                          help="replace an existing study of this name (deletes its trials)")


def run(args) -> int:
    import optuna

    from histosweep.search import CreateOptions, create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our summary line says it, once
    from histosweep.storage import redact, resolve_storage_url

    opts = CreateOptions(
        data=Path(args.data) if args.data else None,
        space_file=Path(args.space) if args.space else None, **_split_options(args),
        pruner=args.pruner, skip_if_exists=args.skip_if_exists, force=args.force,
        sampler=args.sampler, enqueue_reference=not args.no_reference, keep_top=args.keep_top,
        budget_gpu_hours=args.budget_gpu_hours, like=args.like, warm_start=tuple(args.warm_start),
    )
    url = storage_arg(args)
    summary = create_study(args.study, url, opts, progress=not args.json)
    summary["storage"] = redact(resolve_storage_url(url))
    reference = summary.get("reference")
    for warning in [*(reference["skipped"] if reference else []), *_space_warnings(opts.space_file)]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(summary)
    else:
        print(f"study {summary['study']!r} {summary['action']} in {summary['storage']}: "
              f"{summary['samples']} samples ({summary['excluded']} excluded), "
              f"{summary['folds']} folds, {_holdout_words(summary['holdout'])}, pruner {summary['pruner']}, "
              f"sampler {summary['sampler']}")
        print(f"searching: {', '.join(summary['searched'])}")
        if summary["budget_gpu_hours"] is not None:
            print(f"budget: {summary['budget_gpu_hours']:g} GPU-hours (histosweep budget "
                  f"{summary['study']} shows what is used)")
        if reference:
            print(_reference_line(reference))
        if summary.get("like"):
            print(f"data and split of study {summary['like']!r} (split {summary['split']})")
        if summary.get("imported") is not None:
            print(_imported_line(summary["imported"]))
    return 0


def _holdout_words(samples: int) -> str:
    return f"holdout of {samples} samples" if samples else "no holdout (--holdout 0)"


SPLIT_DEFAULTS = {"folds": 5, "holdout": DEFAULT_HOLDOUT, "seed": 0}


def _split_options(args) -> dict:
    """folds, holdout, seed, keep_flagged: the flags, or with --like none of them (OLD's)."""
    from histosweep.cli._common import UserError

    given = {k: getattr(args, k) for k in SPLIT_DEFAULTS if getattr(args, k) is not None}
    if args.keep_flagged:
        given["keep_flagged"] = True
    if args.like is None:
        return {**SPLIT_DEFAULTS, "keep_flagged": False, **given}
    if given:
        flags = " ".join(f"--{k.replace('_', '-')}" for k in given)
        raise UserError(f"--like {args.like} copies its split (folds, holdout, seed, kept samples); "
                        f"drop {flags}, or leave out --like to make a new split")
    return {}


def _imported_line(record: dict) -> str:
    parts = [f"{s['complete']} complete + {s['pruned']} pruned from {name!r} "
             f"({s['skipped'] - s.get('reimported', 0)} outside this space"
             + (f", {s['reimported']} that {name!r} imported itself: name the study that ran them"
                if s.get("reimported") else "") + ")"
             for name, s in record["from"].items()]
    return (f"warm start: imported {'; '.join(parts)}; history for the sampler and pruner, never "
            "trained, exported or counted by --n-trials here")


def _space_warnings(space_file: Path | None) -> list[str]:
    """What the space lets a trial do that a person would not want without knowing."""
    from histosweep.search import load_space

    space = load_space(space_file)
    if ("frozen" in (space.values("train_mode") or []) and False in (space.values("pretrained") or [])
            and "" in (space.values("image_pretrained_path") or [""])):
        return [f"{space_file or 'the default space'}: train_mode = \"frozen\" with pretrained = false "
                "embeds with a randomly initialised image_backbone; set pretrained = true (or "
                "image_pretrained_path) for features worth a head"]
    return []


def _reference_line(reference: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in reference["params"].items())
    if not reference["params"]:
        return "reference recipe: none of its params is searched here; nothing enqueued"
    if not reference["enqueued"]:
        return f"reference recipe already queued or run: {params}"
    return f"reference recipe enqueued: {params}"

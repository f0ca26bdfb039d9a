"""`histosweep delete-study STUDY [--yes]`: remove a study and its trials from the storage."""

from __future__ import annotations

from histosweep.cli._common import print_json, storage_arg

OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    parser.add_argument("--yes", action="store_true", help="delete even when the study has trials")


def run(args) -> int:
    import optuna

    from histosweep.search import UserError, open_study
    from histosweep.storage import redact, resolve_storage_url, study_storage, trial_counts

    url = storage_arg(args)
    study = open_study(args.study, url, create_hint=False)  # not 'create it': deleting was asked
    counts = trial_counts(study)
    total = sum(counts.values())
    if total and not args.yes:
        by_state = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        raise UserError(
            f"study {args.study!r} has {total} trial{'s' * (total != 1)} ({by_state}); "
            "pass --yes to delete it and its trials"
        )
    optuna.delete_study(study_name=args.study, storage=study_storage(study))
    if args.json:
        print_json({"study": args.study, "deleted": True, "trials": total,
                    "storage": redact(resolve_storage_url(url))})
    else:
        print(f"deleted study {args.study!r} ({total} trials) from {redact(resolve_storage_url(url))}; "
              "its fold artifacts stay in the artifact store")
    return 0

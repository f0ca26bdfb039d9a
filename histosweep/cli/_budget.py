"""`histosweep budget STUDY [--set H | --clear]`: the study's GPU-hour budget, what its trials
used and what is left; --set changes it while workers run (they read it before every trial).
Exercise: `histosweep budget S --set 4 && histosweep budget S --json`.
"""

from __future__ import annotations

from histosweep.cli._common import print_json, storage_arg

OPTIONS = ("storage", "json")  # the common options this command reads (cli._common)


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study name")
    change = parser.add_mutually_exclusive_group()
    change.add_argument("--set", type=float, default=None, metavar="H", dest="hours",
                        help="workers take no new trial once the study's trials used H GPU-hours "
                             "(time x devices; a CPU slot counts as one)")
    change.add_argument("--clear", action="store_true", help="remove the budget")


def run(args) -> int:
    import optuna

    from histosweep.search import (
        budget_line,
        budget_report,
        check_budget_hours,
        open_study,
        set_budget,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.hours is not None:  # a bad value is one line before the storage is opened
        check_budget_hours(args.hours, flag="--set")
    study = open_study(args.study, storage_arg(args))
    action = "shown"
    if args.hours is not None or args.clear:
        set_budget(study, None if args.clear else args.hours)
        action = "cleared" if args.clear else "set"
    report = budget_report(study)
    if args.json:
        print_json({"study": study.study_name, "action": action, **report})
    else:
        print(f"study {study.study_name}: {_verb(action, report)}{budget_line(report)}")
    return 0


def _verb(action: str, report: dict) -> str:
    if action == "set":
        return f"budget set to {report['gpu_hours']:g} GPU-hours; "
    if action == "cleared":
        return "budget cleared; "
    return ""

"""A study's GPU-hour budget: stored with the study (changeable), and what its trials have used
(time x devices; a CPU slot counts as a device), which workers check before taking a trial.

Exercise: `histosweep create S --data DATA --budget-gpu-hours 4 && histosweep budget S`.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from histosweep.search._campaign import is_imported
from histosweep.search._errors import UserError

BUDGET_ATTR = "histosweep_budget_gpu_hours"  # a study user attr: hours, or None (no budget)


def check_budget_hours(hours: float, *, flag: str = "--budget-gpu-hours") -> float:
    """A budget is a finite number of hours > 0."""
    if not (math.isfinite(hours) and hours > 0):
        raise UserError(f"{flag} {hours:g}: give the GPU-hours the study may use, a number > 0 "
                        "(e.g. 4 for four GPUs for an hour; `histosweep budget STUDY --clear` "
                        "removes a budget)")
    return float(hours)


def read_budget(study) -> float | None:
    """The study's budget in GPU-hours; None when it has none."""
    value = study.user_attrs.get(BUDGET_ATTR)
    return None if value is None else float(value)


def set_budget(study, hours: float | None) -> None:
    """Store a budget (None: no budget; Optuna cannot delete a user attr, so it holds None)."""
    study.set_user_attr(BUDGET_ATTR, None if hours is None else check_budget_hours(hours))


def trial_gpu_hours(trial, now: datetime.datetime) -> float:
    """Hours from the trial's start to its end (now while it runs) x its devices (1 per slot)."""
    if trial.datetime_start is None or is_imported(trial):  # another study's history: not run here
        return 0.0
    end = trial.datetime_complete or now  # optuna writes the worker's local time, as now is
    seconds = max(0.0, (end - trial.datetime_start).total_seconds())
    return seconds / 3600 * int(trial.user_attrs.get("devices", 1))


def budget_report(study, *, trials=None) -> dict[str, Any]:
    """{gpu_hours (the budget or None), used, left, per_finished_trial, trials_left, spent}.

    used: finished (complete, pruned, failed) and running trials; per_finished_trial: the mean
    over complete and pruned ones; trials_left: what is left at that rate (None before one ends).
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    now = datetime.datetime.now()
    used = sum(trial_gpu_hours(t, now) for t in trials)
    ended = [trial_gpu_hours(t, now) for t in trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_imported(t)]
    per_trial = sum(ended) / len(ended) if ended else None
    budget = read_budget(study)
    left = None if budget is None else max(0.0, budget - used)
    trials_left = None if left is None or not per_trial else int(left // per_trial)
    return {"gpu_hours": budget, "used": used, "left": left, "per_finished_trial": per_trial,
            "trials_left": trials_left, "spent": budget is not None and used >= budget}


def hours_text(hours: float) -> str:
    """GPU-hours as people read them: 12.5, 0.52, 0.0031."""
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.2f}" if hours >= 0.01 or not hours else f"{hours:.2g}"


def spent_line(report: dict[str, Any]) -> str:
    """What a worker says when it stops for the budget."""
    return (f"the study's budget of {report['gpu_hours']:g} GPU-hours is spent (used "
            f"{hours_text(report['used'])}); stopping")


def budget_line(report: dict[str, Any]) -> str:
    """One line for `status` and `budget`: used / left and the trials left at the current rate."""
    used = hours_text(report["used"])
    if report["gpu_hours"] is None:
        return f"GPU-hours: {used} used, no budget (histosweep budget STUDY --set H)"
    line = f"budget: {used} of {report['gpu_hours']:g} GPU-hours used, {hours_text(report['left'])} left"
    if report["spent"]:
        return line + " (spent: workers take no new trials)"
    if report["trials_left"] is not None:
        line += (f", ~{report['trials_left']} trials at {hours_text(report['per_finished_trial'])} "
                 "per finished trial")
    return line

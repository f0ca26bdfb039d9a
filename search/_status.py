"""Study status: trials by state, best trial, epochs run versus a full search, running trials.

Exercise: `histosweep status STUDY [--json]`.
"""

from __future__ import annotations

from typing import Any

from histosweep.storage import count_trials_by_state, heartbeat_ages


def study_status(study) -> dict[str, Any]:
    from optuna.trial import TrialState

    counts = count_trials_by_state(study._storage, study._study_id)
    trials = study.get_trials(deepcopy=False)
    run = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    full = sum(int(t.user_attrs.get("epochs_planned", 0)) for t in finished)
    run_finished = sum(
        int(t.user_attrs.get("epochs_run", 0)) + int(t.user_attrs.get("epochs_reused", 0))
        for t in finished
    )
    ages = heartbeat_ages(study._storage, study._study_id)
    running = [
        {
            "number": t.number, "host": t.user_attrs.get("host"), "slot": t.user_attrs.get("slot"),
            "device": t.user_attrs.get("device"),
            "heartbeat_age_s": round(ages[t.number], 1) if t.number in ages else None,
            "last_step": t.last_step,
        }
        for t in trials if t.state == TrialState.RUNNING
    ]
    return {
        "study": study.study_name,
        "trials": counts,
        "best": _best(study),
        "epochs": {
            "run": run,
            "finished_trials_run": run_finished,
            "finished_trials_full": full,
            "saved_share": round(1 - run_finished / full, 4) if full else 0.0,
        },
        "running": running,
    }


def _best(study) -> dict[str, Any] | None:
    try:
        best = study.best_trial
    except ValueError:
        return None
    keys = ("oof_f1", "fold_val_f1", "resumed_folds")
    return {
        "number": best.number, "value": best.value, "params": best.params,
        **{k: best.user_attrs[k] for k in keys if k in best.user_attrs},
    }


def format_status(s: dict[str, Any]) -> str:
    t = s["trials"]
    lines = [
        f"study {s['study']}: " + ", ".join(f"{k.lower()} {v}" for k, v in t.items()),
    ]
    e = s["epochs"]
    if e["finished_trials_full"]:
        lines.append(
            f"epochs: {e['finished_trials_run']} of {e['finished_trials_full']} a full search "
            f"would have run ({100 * e['saved_share']:.0f}% saved by pruning); {e['run']} trained in all"
        )
    b = s["best"]
    if b:
        lines.append(f"best: trial {b['number']} out-of-fold macro-F1 {b['value']:.4f}")
        lines += [f"  {k} = {v}" for k, v in sorted(b["params"].items())]
    else:
        lines.append("best: no complete trial yet")
    for r in s["running"]:
        age = "?" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.0f} s"
        lines.append(f"running: trial {r['number']} on {r['host']} {r['slot']} ({r['device']}), "
                     f"step {r['last_step']}, heartbeat {age} ago")
    return "\n".join(lines)

"""Study status: trials by state, best trial, epochs run versus a full search, running trials
with their fold, epoch and time left; `watch_status` refreshes it. Exercise:
`histosweep status STUDY [--json] [--watch --interval S --count N]`.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from histosweep.fleet._db import HEARTBEAT_ATTR, PROXY_ATTR
from histosweep.search import IMPORTS_KEY, budget_line, budget_report
from histosweep.storage import heartbeat_ages, study_id, study_storage, trial_counts
from histosweep.trial_files import ESTIMATE_ATTR, gain_sentence, selection_label

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home + clear: a TTY redraw that long lines cannot skew
VIA_PROXY = "via proxy, no heartbeat"  # the heartbeat cell of a trial run through the gRPC proxy


def study_status(study) -> dict[str, Any]:
    from optuna.trial import TrialState

    counts = trial_counts(study)
    trials = study.get_trials(deepcopy=False)
    run = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    full = sum(int(t.user_attrs.get("epochs_planned", 0)) for t in finished)
    run_finished = sum(
        int(t.user_attrs.get("epochs_run", 0)) + int(t.user_attrs.get("epochs_reused", 0))
        for t in finished
    )
    ages = heartbeat_ages(study_storage(study), study_id(study))
    layout = _layout(study)
    epoch_s = _finished_epoch_seconds(finished)
    running = [
        {
            "number": t.number, "host": t.user_attrs.get("host"), "slot": t.user_attrs.get("slot"),
            "pid": t.user_attrs.get("pid"), "device": t.user_attrs.get("device"),
            **_heartbeat(t, ages),
            "last_step": t.last_step,
            **_progress(t, layout, epoch_s),
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
        "budget": budget_report(study, trials=trials),  # GPU-hours: budget, used, left, trials left
        "estimate": study.user_attrs.get(ESTIMATE_ATTR),  # export-best's / estimate's BBC-CV
        **_estimate_age(study.user_attrs.get(ESTIMATE_ATTR), finished),
        "imported": study.user_attrs.get(IMPORTS_KEY),  # create --warm-start: history, not work
    }


def _estimate_age(est: dict[str, Any] | None, finished) -> dict[str, Any]:
    """When the stored estimate was made (UTC ISO; None when not stored, or stored before its
    time was) and how many trials finished after it: an old figure is not the search's state."""
    at = (est or {}).get("at")
    if at is None:
        return {"estimate_at": None, "trials_finished_since_estimate": None}
    # NOTE: optuna writes datetime_complete in the worker's local time, without a zone
    local = datetime.datetime.fromisoformat(at).astimezone().replace(tzinfo=None)
    since = sum(t.datetime_complete is not None and t.datetime_complete > local for t in finished)
    return {"estimate_at": at, "trials_finished_since_estimate": since}


def _heartbeat(trial, ages: dict[int, float]) -> dict[str, Any]:
    """Seconds since the trial's last heartbeat, its owner's interval, and whether it runs
    through the gRPC proxy (no heartbeat there: never reaped, so no age to judge)."""
    via_proxy = bool(trial.system_attrs.get(PROXY_ATTR))
    age = None if via_proxy or trial.number not in ages else round(ages[trial.number], 1)
    return {"heartbeat_age_s": age, "heartbeat_every_s": trial.system_attrs.get(HEARTBEAT_ATTR),
            "via_proxy": via_proxy}


def best_own_trial(trials):
    """The best COMPLETE trial that is not imported (ties: the lower number); None if none."""
    from histosweep.fleet._gc import rank_complete

    ranked = rank_complete(trials)
    return ranked[0] if ranked else None


def _layout(study) -> tuple[int, int] | None:
    """(folds, most epochs in the space) of a histosweep study; None for any other study."""
    from histosweep.search import SETTINGS_KEY, load_settings

    if SETTINGS_KEY not in study.user_attrs:
        return None
    settings = load_settings(study)
    return settings.folds, settings.space_obj().max_epochs()


def _trial_epochs(trial, fallback: int) -> int:
    config = trial.user_attrs.get("config") or {}
    return int(config.get("epochs") or trial.params.get("epochs") or fallback)


def _finished_epoch_seconds(finished) -> float | None:
    """Mean seconds per epoch over the folds of complete trials (their fold_seconds)."""
    seconds = epochs = 0.0
    for t in finished:
        fold_seconds = t.user_attrs.get("fold_seconds") or []
        if fold_seconds and t.user_attrs.get("config"):
            seconds += sum(fold_seconds)
            epochs += len(fold_seconds) * _trial_epochs(t, 1)
    return seconds / epochs if epochs else None


def _progress(trial, layout, epoch_s: float | None) -> dict[str, Any]:
    """Fold and epoch (0-based) of the last reported step, and an estimate of time left.

    step = fold * E + epoch, E = the space's most epochs (search._objective). Time left is the
    trial's own pace (elapsed / epochs reported) once it has reported, else the complete
    trials' seconds per epoch; it assumes the trial is not pruned.
    """
    elapsed = None
    if trial.datetime_start is not None:  # optuna writes the worker's local time
        elapsed = max(0.0, (datetime.datetime.now() - trial.datetime_start).total_seconds())
    out: dict[str, Any] = {"elapsed_s": None if elapsed is None else round(elapsed, 1),
                           "fold": None, "epoch": None, "folds": None, "epochs": None,
                           "eta_s": None, "eta_from": None}
    if layout is None:
        return out
    folds, max_epochs = layout
    epochs = _trial_epochs(trial, max_epochs)
    out.update(folds=folds, epochs=epochs)
    done = 0
    if trial.last_step is not None:
        fold, epoch = divmod(int(trial.last_step), max_epochs)
        out.update(fold=fold, epoch=epoch)
        done = fold * epochs + epoch + 1
    left = max(0, folds * epochs - done)
    if done and elapsed is not None:
        out.update(eta_s=round(elapsed / done * left, 1), eta_from="trial")
    elif epoch_s is not None:
        spent = elapsed or 0.0
        out.update(eta_s=round(max(0.0, epoch_s * folds * epochs - spent), 1), eta_from="finished")
    return out


def _best(study) -> dict[str, Any] | None:
    """The best trial run here (an imported one is another study's)."""
    from histosweep.search import is_imported

    try:
        best = study.best_trial
    except ValueError:
        return None
    if is_imported(best):
        best = best_own_trial(study.get_trials(deepcopy=False))
        if best is None:
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
    if s.get("imported"):
        lines.append(_imported_line(s["imported"]))
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
    lines += _running_table(s["running"])
    budget = s.get("budget")
    if budget and (budget["gpu_hours"] is not None or budget["used"] > 0):
        lines.append(budget_line(budget))
    if s.get("estimate"):
        lines += _estimate_lines(s["estimate"], s.get("estimate_at"),
                                 s.get("trials_finished_since_estimate"))
    if "artifact_bytes" in s:  # `histosweep status` adds it (the artifact store is a CLI option)
        from histosweep.fleet._gc import format_bytes

        lines.append(f"artifact store: {format_bytes(s['artifact_bytes'])} for this study")
    return "\n".join(lines)


def _imported_line(record: dict[str, Any]) -> str:
    """create --warm-start's imports: in the counts above, but not this study's work."""
    n = record.get("complete", 0) + record.get("pruned", 0)
    return (f"imported: {n} of the finished trials above from {', '.join(record.get('from', {}))} "
            "(history for the sampler; not counted by --n-trials, never exported)")


def _estimate_lines(est: dict[str, Any], at: str | None, since: int | None) -> list[str]:
    ens = est["ensemble"]
    return [f"BBC-CV estimate ({est.get('by')}, {selection_label(est.get('method'))}): {ens['mean']:.4f} "
            f"[{ens['ci95'][0]:.4f}, {ens['ci95'][1]:.4f}], {_made_when(est.get('by'), at, since)}",
            gain_sentence(est.get("search_gain"))]


def _made_when(by: str | None, at: str | None, since: int | None) -> str:
    """'from the export of 2026-12-07 09:12 CET, 3 h ago; 14 trials finished since'."""
    what = "the export" if by == "export-best" else f"the `histosweep {by}` run"
    if at is None:
        return f"from {what} at a time not recorded (histosweep estimate STUDY makes a current one)"
    made = datetime.datetime.fromisoformat(at).astimezone()  # this machine's time zone
    age = (datetime.datetime.now(datetime.timezone.utc) - made).total_seconds()
    line = f"from {what} of {made:%Y-%m-%d %H:%M %Z}, {_ago(age)}"
    return line + (f"; {since} trial(s) finished since" if since else "")


def _ago(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    if minutes < 1:
        return "under a minute ago"
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago" if minutes < 48 * 60 else f"{minutes // (24 * 60)} days ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _of(index: int | None, total: int | None) -> str:
    return "-" if index is None else f"{index + 1}/{total}"


def _worker_name(row: dict[str, Any]) -> str:
    """host:pid/slot (two workers on one host may share a slot label; the pid tells them apart)."""
    pid = f":{row['pid']}" if row.get("pid") is not None else ""
    return f"{row['host']}{pid}/{row['slot']}"


def _running_table(running: list[dict[str, Any]]) -> list[str]:
    """One row per running trial: worker (host:pid/slot), fold, epoch, time left, heartbeat."""
    if not running:
        return ["running: none"]
    header = ("trial", "worker", "device", "fold", "epoch", "elapsed", "left", "heartbeat")
    rows = [header] + [
        (
            str(r["number"]), _worker_name(r), str(r["device"]),
            _of(r.get("fold"), r.get("folds")), _of(r.get("epoch"), r.get("epochs")),
            _duration(r.get("elapsed_s")),
            _duration(r.get("eta_s")) + (" ~" if r.get("eta_from") == "finished" else ""),
            VIA_PROXY if r.get("via_proxy") else _duration(r["heartbeat_age_s"]),
        )
        for r in running
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return [f"running: {len(running)}", *("  " + line for line in table)]


def watch_status(
    snapshot: Callable[[], dict[str, Any]],
    *,
    interval: float,
    count: int | None = None,
    as_json: bool = False,
    stream: TextIO,
    redraw: bool = False,
) -> int:
    """Print `snapshot()` every `interval` s, `count` times (None: until Ctrl-C); returns refreshes.

    redraw (a TTY): clear and draw in place; else one snapshot after another (logs, pipes).
    as_json: one compact JSON document per line per refresh.
    """
    shown = 0
    while count is None or shown < count:
        status = snapshot()
        shown += 1
        stamp = time.strftime("%H:%M:%S")
        if as_json:
            stream.write(json.dumps({**status, "refresh": shown, "time": stamp}, default=str) + "\n")
        else:
            total = f"/{count}" if count else ""
            head = f"refresh {shown}{total} at {stamp}, every {interval:g} s (Ctrl-C ends)"
            stream.write((CLEAR_SCREEN if redraw else "\n" if shown > 1 else "")
                         + head + "\n" + format_status(status) + "\n")
        stream.flush()
        if count is None or shown < count:
            time.sleep(interval)  # the refresh period, not a synchronisation
    return shown

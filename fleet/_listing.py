"""Listings of a storage's studies and of a study's trials, for people (table), scripts (JSON)
and spreadsheets (CSV).

Exercise: `histosweep studies [--json]`; `histosweep trials STUDY [--state S] [--format csv]`.
"""

from __future__ import annotations

import csv
import json
import shlex
from typing import Any, TextIO

from histosweep.search import (
    IMPORTED_ATTR,
    IMPORTS_KEY,
    SETTINGS_KEY,
    StudySettings,
    UserError,
    is_imported,
    load_settings,
    split_key,
)
from histosweep.storage import count_trials_by_state, study_id

TRIAL_STATES = ("complete", "pruned", "fail", "running", "waiting")


def list_studies(storage) -> list[dict[str, Any]]:
    """Every study in `storage`, oldest first: trial counts by state, best value, direction,
    its split (key, data fingerprint, folds, holdout, seed) and its own complete trials."""
    return [_study_row(storage, s) for s in storage.get_all_studies()]


def _study_row(storage, frozen) -> dict[str, Any]:
    directions = [d.name.lower() for d in frozen.directions]
    counts = count_trials_by_state(storage, study_id(frozen))
    imports = frozen.user_attrs.get(IMPORTS_KEY) or {}
    best = None
    if len(directions) == 1:
        try:
            trial = storage.get_best_trial(study_id(frozen))
            if is_imported(trial):  # another study's trial: the best run here instead
                from histosweep.fleet._status import best_own_trial

                trial = best_own_trial(storage.get_all_trials(study_id(frozen), deepcopy=False))
            best = None if trial is None else {"number": trial.number, "value": trial.value}
        except ValueError:  # no complete trial yet
            pass
    return {
        "study": frozen.study_name, "direction": ",".join(directions),
        "sampler": _stored_sampler(frozen.user_attrs.get(SETTINGS_KEY)),
        "trials": counts, "best": best,
        "imported": int(imports.get("complete", 0)) + int(imports.get("pruned", 0)),
        "own_complete": counts["COMPLETE"] - int(imports.get("complete", 0)),
        "split": _split(frozen.user_attrs.get(SETTINGS_KEY)),
    }


def _split(raw: Any) -> dict[str, Any] | None:
    """The split a histosweep study stores, as `studies` shows it; None for other studies."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict):
        return None
    settings = StudySettings.from_json(raw)
    return {"key": split_key(settings), "fingerprint": settings.fingerprint[:12],
            "samples": len(settings.sample_ids), "folds": settings.folds,
            "holdout": settings.holdout, "seed": settings.seed}


def split_groups(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Studies grouped by split (list_studies rows): what `export-best S1 S2 ..` would pool
    (export: that command, None while the split has no complete trial to export)."""
    groups: dict[str, dict[str, Any]] = {}
    for s in studies:
        if s["split"] is None:
            continue
        g = groups.setdefault(s["split"]["key"], {**s["split"], "studies": [], "candidates": 0})
        g["studies"].append({"study": s["study"], "complete": s["own_complete"]})
        g["candidates"] += s["own_complete"]
    for g in groups.values():  # no export line for a split with nothing to export yet
        g["export"] = ("histosweep export-best " + " ".join(shlex.quote(x["study"]) for x in g["studies"])
                       + " --out bundle") if g["candidates"] else None
    return list(groups.values())


def format_groups(groups: list[dict[str, Any]]) -> str:
    """Per split: its studies and the export that pools their complete trials."""
    lines = ["splits (export-best pools the complete trials of the studies on one split; "
             "imported trials are not counted):"]
    for g in groups:
        names = ", ".join(f"{x['study']} ({x['complete']})" for x in g["studies"])
        lines += [f"  split {g['key']}: data {g['fingerprint']}, {g['samples']} samples, "
                  f"{g['folds']} folds, holdout {g['holdout']}, seed {g['seed']}",
                  f"    {names}: {g['candidates']} complete trial(s) to pool",
                  f"    {g['export'] or 'no complete trial yet, nothing to export: run workers first'}"]
    return "\n".join(lines)


def _stored_sampler(raw: Any) -> str | None:
    """The sampler a histosweep study stores (tpe before it was stored); None for others."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw.get("sampler", "tpe") if isinstance(raw, dict) else None


def format_studies(studies: list[dict[str, Any]]) -> str:
    if not studies:
        return "no studies in this storage (create one with: histosweep create STUDY --data DATA)"
    header = ["study", "direction", "sampler", "complete", "pruned", "fail", "running", "waiting",
              "imported", "best", "split"]
    rows = [
        [s["study"], s["direction"], s["sampler"] or "-",
         *(str(s["trials"][k.upper()]) for k in TRIAL_STATES), str(s["imported"]),
         "-" if s["best"] is None else f"{s['best']['value']:.4f} (trial {s['best']['number']})",
         s["split"]["key"] if s.get("split") else "-"]
        for s in studies
    ]
    groups = split_groups(studies)
    return _table(header, rows) + ("\n\n" + format_groups(groups) if groups else "")


def list_trials(study, *, state: str | None = None) -> dict[str, Any]:
    """One record per trial (number order): state, value, the searched params, duration, epochs."""
    from optuna.trial import TrialState

    states = None
    if state is not None:
        if state.lower() not in TRIAL_STATES:
            raise UserError(f"--state {state!r}: choose one of {', '.join(TRIAL_STATES)}")
        states = (TrialState[state.upper()],)
    trials = study.get_trials(deepcopy=False, states=states)
    names = _param_names(study, trials)
    rows = [
        {
            "number": t.number, "state": t.state.name, "value": t.value,
            "pruned_at_step": _pruned_at_step(t),
            "params": {n: _params(t).get(n) for n in names},
            "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 1),
            "epochs_run": t.user_attrs.get("epochs_run"),
            "imported_from": t.user_attrs.get(IMPORTED_ATTR),  # create --warm-start: "OLD#12"
        }
        for t in trials
    ]
    return {"study": study.study_name, "state": state, "params": names, "trials": rows,
            "imported": sum(r["imported_from"] is not None for r in rows)}


def _pruned_at_step(trial) -> int | None:
    """For a pruned trial with a value, the step it last reported: Optuna stores that step's
    intermediate value (one fold's epoch F1 here) as the trial's value, not a final score."""
    from optuna.trial import TrialState

    if trial.state != TrialState.PRUNED or trial.value is None:
        return None
    return trial.last_step


def _params(trial) -> dict[str, Any]:
    """A waiting trial's params are the ones it was enqueued with."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def _param_names(study, trials) -> list[str]:
    """The study's searched params (space order); for a study histosweep did not create, the
    params its trials used."""
    try:
        return load_settings(study).space_obj().searched()
    except UserError:
        return sorted({n for t in trials for n in _params(t)})


def write_trials_csv(listing: dict[str, Any], out: TextIO) -> None:
    """One row per trial; an imported_from column only in a study that imported trials."""
    imported = bool(listing.get("imported"))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", *listing["params"], "duration_s", "epochs_run",
                     *(["imported_from"] if imported else [])])
    for r in listing["trials"]:
        cells = [r["number"], r["state"], r["value"], *r["params"].values(), r["duration_s"],
                 r["epochs_run"], *([r["imported_from"]] if imported else [])]
        writer.writerow(["" if c is None else c for c in cells])


def format_trials_table(listing: dict[str, Any]) -> str:
    if not listing["trials"]:
        which = f" in state {listing['state']}" if listing["state"] else ""
        return f"study {listing['study']}: no trials{which}"
    imported = bool(listing.get("imported"))
    header = ["number", "state", "value", *listing["params"], "duration_s", "epochs_run",
              *(["imported_from"] if imported else [])]
    rows = [
        [str(r["number"]), r["state"].lower(), _value_cell(r),
         *(_cell(v, ".4g") for v in r["params"].values()), _cell(r["duration_s"], ".1f"),
         _cell(r["epochs_run"], ""), *([_cell(r["imported_from"], "")] if imported else [])]
        for r in listing["trials"]
    ]
    note = (f"\n{listing['imported']} trial(s) imported by create --warm-start (imported_from): "
            "history for the sampler, not run or exported here" if imported else "")
    if any(r.get("pruned_at_step") is not None for r in listing["trials"]):
        note += ("\npruned: the value is the last intermediate value reported (a fold's "
                 "validation F1 at that step), not a final out-of-fold score")
    return _table(header, rows) + note


def _value_cell(row: dict[str, Any]) -> str:
    """A pruned trial's value is marked as the last reported step's, so it is not read as a score."""
    if row.get("pruned_at_step") is None:
        return _cell(row["value"], ".4f")
    return f"{row['value']:.4f} @ step {row['pruned_at_step']} (pruned)"


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows])
    return "\n".join(line.rstrip() for line in lines)

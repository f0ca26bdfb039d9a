"""Listings of a storage's studies and of a study's trials, for people (table), scripts (JSON)
and spreadsheets (CSV).

Exercise: `histosweep studies [--json]`; `histosweep trials STUDY [--state S] [--format csv]`.
"""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

from histosweep.search import SETTINGS_KEY, UserError, load_settings
from histosweep.storage import count_trials_by_state, study_id

TRIAL_STATES = ("complete", "pruned", "fail", "running", "waiting")


def list_studies(storage) -> list[dict[str, Any]]:
    """Every study in `storage`, oldest first: trial counts by state, best value, direction."""
    return [_study_row(storage, s) for s in storage.get_all_studies()]


def _study_row(storage, frozen) -> dict[str, Any]:
    directions = [d.name.lower() for d in frozen.directions]
    best = None
    if len(directions) == 1:
        try:
            trial = storage.get_best_trial(study_id(frozen))
            best = {"number": trial.number, "value": trial.value}
        except ValueError:  # no complete trial yet
            pass
    return {
        "study": frozen.study_name, "direction": ",".join(directions),
        "sampler": _stored_sampler(frozen.user_attrs.get(SETTINGS_KEY)),
        "trials": count_trials_by_state(storage, study_id(frozen)), "best": best,
    }


def _stored_sampler(raw: Any) -> str | None:
    """The sampler a histosweep study stores (tpe before it was stored); None for others."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw.get("sampler", "tpe") if isinstance(raw, dict) else None


def format_studies(studies: list[dict[str, Any]]) -> str:
    if not studies:
        return "no studies in this storage (create one with: histosweep create STUDY --data DATA)"
    header = ["study", "direction", "sampler", "complete", "pruned", "fail", "running", "waiting",
              "best"]
    rows = [
        [s["study"], s["direction"], s["sampler"] or "-",
         *(str(s["trials"][k.upper()]) for k in TRIAL_STATES),
         "-" if s["best"] is None else f"{s['best']['value']:.4f} (trial {s['best']['number']})"]
        for s in studies
    ]
    return _table(header, rows)


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
            "params": {n: _params(t).get(n) for n in names},
            "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 1),
            "epochs_run": t.user_attrs.get("epochs_run"),
        }
        for t in trials
    ]
    return {"study": study.study_name, "state": state, "params": names, "trials": rows}


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
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", *listing["params"], "duration_s", "epochs_run"])
    for r in listing["trials"]:
        cells = [r["number"], r["state"], r["value"], *r["params"].values(), r["duration_s"],
                 r["epochs_run"]]
        writer.writerow(["" if c is None else c for c in cells])


def format_trials_table(listing: dict[str, Any]) -> str:
    if not listing["trials"]:
        which = f" in state {listing['state']}" if listing["state"] else ""
        return f"study {listing['study']}: no trials{which}"
    header = ["number", "state", "value", *listing["params"], "duration_s", "epochs_run"]
    rows = [
        [str(r["number"]), r["state"].lower(), _cell(r["value"], ".4f"),
         *(_cell(v, ".4g") for v in r["params"].values()), _cell(r["duration_s"], ".1f"),
         _cell(r["epochs_run"], "")]
        for r in listing["trials"]
    ]
    return _table(header, rows)


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

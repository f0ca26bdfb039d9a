"""What export-best reads from a study: the candidate trials (best first), each with its config,
fold records and stored out-of-fold / holdout probabilities, and the study's split.

Exercise: `histosweep export-best STUDY --out bundle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from histosweep.exceptions import UserError
from histosweep.model import ConfigError, TrainConfig
from histosweep.search import check_current, load_settings, open_study
from histosweep.trial_files import fetch_probs, fold_key


@dataclass
class Candidate:
    """One complete trial: its config, fold records and stored probabilities."""

    trial: Any
    config: TrainConfig
    records: list[dict[str, Any]]  # fold_<k> user attrs, k = 0..folds-1
    oof: np.ndarray  # (N_oof, C), rows in the order of Source.oof_rows
    holdout: np.ndarray  # (N_holdout, C), equal mean of the folds
    weight: float = 0.0


@dataclass
class Source:
    study: Any
    settings: Any
    candidates: list[Candidate]  # best first
    oof_rows: np.ndarray
    holdout_rows: np.ndarray
    selection: dict[str, Any] = field(default_factory=dict)
    offsets_check: dict[str, Any] = field(default_factory=dict)  # export: were the offsets kept

    @property
    def members(self) -> list[Candidate]:
        return [c for c in self.candidates if c.weight > 0]

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return self.settings.label_array()[rows]


def read_source(opts, store, *, on_candidates=None) -> Source:
    """The study, its settings and split, and the candidate trials with their stored probabilities
    (opts: ExportOptions; its study, storage, trials, single and candidates are read).

    on_candidates(study, trials): called once the candidates are chosen, before anything of theirs
    is read (export-best takes its lease there, so that gc spares them)."""
    study = open_study(opts.study, opts.storage)
    settings = load_settings(study)
    check_current(study, settings)
    split = settings.split_obj()
    oof_rows = np.concatenate([np.asarray(split.folds[k][1], np.int64) for k in range(settings.folds)])
    holdout_rows = np.asarray(split.holdout, dtype=np.int64)
    trials = _candidate_trials(study, opts)
    if on_candidates is not None:
        on_candidates(study, trials)
    candidates = [_candidate(store, t, settings.folds, oof_rows.size) for t in trials]
    return Source(study, settings, candidates, oof_rows, holdout_rows)


def _candidate_trials(study, opts) -> list:
    if opts.trials:
        return [pick_trial(study, n) for n in opts.trials]
    best = pick_trial(study, None)
    if opts.single:
        return [best]
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    ranked = sorted(complete, key=lambda t: (-float(t.value), t.number))
    return ranked[: opts.candidates]


def pick_trial(study, number: int | None):
    """Trial `number` (must be COMPLETE), or the best COMPLETE trial (highest OOF macro-F1)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise UserError(
                f"study {study.study_name!r} has no COMPLETE trial yet ({_state_counts(trials)}); "
                f"run workers first: histosweep worker {study.study_name} --n-trials N"
            )
        return study.best_trial
    found = [t for t in trials if t.number == number]
    if not found:
        last = f"0..{trials[-1].number}" if trials else "none yet"
        raise UserError(f"study {study.study_name!r} has no trial {number} (trials: {last})")
    if found[0].state != TrialState.COMPLETE:
        raise UserError(
            f"trial {number} of study {study.study_name!r} is {found[0].state.name}, not COMPLETE; "
            "export a complete trial, or leave out --trial to select an ensemble across the top trials"
        )
    return found[0]


def _state_counts(trials) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"


def _candidate(store, trial, folds: int, n_oof: int) -> Candidate:
    config = _trial_config(trial)
    records = _fold_records(trial, folds)
    probs = [fetch_probs(store, r, what=f"trial {trial.number} fold {k}") for k, r in enumerate(records)]
    oof = np.concatenate([p["val_probs"] for p in probs]).astype(np.float64)
    if oof.shape[0] != n_oof:
        raise UserError(f"trial {trial.number}: its folds predicted {oof.shape[0]} out-of-fold "
                        f"samples, the study's split has {n_oof}; was the study re-created?")
    holdout = np.mean([p["holdout_probs"] for p in probs], axis=0, dtype=np.float64)
    return Candidate(trial, config, records, oof, holdout)


def _trial_config(trial) -> TrainConfig:
    raw = trial.user_attrs.get("config")
    if not isinstance(raw, dict):
        raise UserError(f"trial {trial.number} has no stored config (user attr 'config'); it was not run by a histosweep worker")
    try:
        return TrainConfig.from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise UserError(f"trial {trial.number}: stored config is not usable here ({exc})") from None


def _fold_records(trial, folds: int) -> list[dict[str, Any]]:
    missing = [k for k in range(folds) if fold_key(k) not in trial.user_attrs]
    if missing:
        raise UserError(
            f"trial {trial.number} has no record of fold(s) {', '.join(map(str, missing))} "
            "(user attr fold_<k>); it did not finish all folds"
        )
    return [trial.user_attrs[fold_key(k)] for k in range(folds)]

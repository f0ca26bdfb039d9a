"""What export-best reads from a study, or from studies on one data and split: the candidate
trials (best first, pooled across the studies), each with its config, fold records and stored
out-of-fold / holdout probabilities, and the split. Imported trials are never candidates.

Exercise: `histosweep export-best STUDY [STUDY2 ..] --out bundle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from histosweep.exceptions import UserError
from histosweep.model import ConfigError, TrainConfig
from histosweep.search import (
    IMPORTED_ATTR,
    check_current,
    is_imported,
    load_settings,
    open_study,
    split_difference,
)
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
    study: str = ""  # the study that ran it (export-best S1 S2 pools several)


@dataclass
class Source:
    study: Any
    settings: Any
    candidates: list[Candidate]  # best first
    oof_rows: np.ndarray
    holdout_rows: np.ndarray
    selection: dict[str, Any] = field(default_factory=dict)
    offsets_check: dict[str, Any] = field(default_factory=dict)  # export: were the offsets kept
    studies: list = field(default_factory=list)  # every study pooled; study is the first

    @property
    def members(self) -> list[Candidate]:
        return [c for c in self.candidates if c.weight > 0]

    @property
    def names(self) -> list[str]:
        return [s.study_name for s in self.studies] or [self.study.study_name]

    @property
    def pooled(self) -> bool:
        return len(self.names) > 1

    def label(self, c: Candidate) -> int | str:
        """How the selection names a candidate: its number, or STUDY#number in a pool."""
        return f"{c.study}#{c.trial.number}" if self.pooled else c.trial.number

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return self.settings.label_array()[rows]


def study_names(opts) -> tuple[str, ...]:
    """The studies opts names (ExportOptions or EstimateOptions): study, then more_studies."""
    names = (opts.study, *getattr(opts, "more_studies", ()))
    if len(set(names)) != len(names):
        raise UserError(f"{' '.join(names)}: a study is named twice; name each study once")
    if len(names) > 1 and opts.trials:
        raise UserError(f"--trial {' '.join(map(str, opts.trials))} names trials of one study; with "
                        f"several studies ({' '.join(names)}) use --candidates N or --single")
    return names


def read_source(opts, store, *, on_candidates=None) -> Source:
    """The studies, their (one) settings and split, and the candidate trials with their stored
    probabilities (opts: ExportOptions; its study, more_studies, storage, trials, single and
    candidates are read). Studies on another data or split are refused with one line.

    on_candidates(study, trials): called once per study when the candidates are chosen, before
    anything of theirs is read (export-best takes its lease there, so that gc spares them)."""
    names = study_names(opts)
    studies = [_open(name, opts.storage) for name in names]
    study, settings = studies[0]
    for name, (_, other) in zip(names[1:], studies[1:], strict=True):
        why = split_difference(settings, other)
        if why is not None:
            raise UserError(
                f"{' '.join(names)}: study {name!r} is not on the data and split of study {names[0]!r} ({why}); "
                f"only studies on one split pool their trials (create them with --like {names[0]})"
            )
    split = settings.split_obj()
    oof_rows = np.concatenate([np.asarray(split.folds[k][1], np.int64) for k in range(settings.folds)])
    holdout_rows = np.asarray(split.holdout, dtype=np.int64)
    opened = [s for s, _ in studies]
    trials = _candidate_trials(opened, opts)
    for one in opened if on_candidates is not None else ():
        on_candidates(one, [t for name, t in trials if name == one.study_name])
    candidates = [_candidate(store, t, settings.folds, oof_rows.size, study=name) for name, t in trials]
    return Source(study, settings, candidates, oof_rows, holdout_rows, studies=opened)


def _open(name: str, storage):
    study = open_study(name, storage)
    settings = load_settings(study)
    check_current(study, settings)
    return study, settings


def rank_pool(studies) -> list[tuple[str, Any]]:
    """(study name, trial) of every COMPLETE trial the studies ran (imported ones are another
    study's), best first; ties: the study named first, then the lower number."""
    from optuna.trial import TrialState

    ranked = []
    for i, study in enumerate(studies):
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if not is_imported(t):
                ranked.append((-float(t.value), i, t.number, study.study_name, t))
    ranked.sort(key=lambda r: r[:3])
    return [(r[3], r[4]) for r in ranked]


def _candidate_trials(studies, opts) -> list[tuple[str, Any]]:
    if opts.trials:
        return [(studies[0].study_name, pick_trial(studies[0], n)) for n in opts.trials]
    ranked = rank_pool(studies)
    if not ranked:
        if len(studies) == 1:
            pick_trial(studies[0], None)  # its one-line error: run workers first
        names = " ".join(s.study_name for s in studies)
        raise UserError(f"{names}: no COMPLETE trial in any of these studies; run workers first")
    return ranked[:1] if opts.single else ranked[: opts.candidates]


def pick_trial(study, number: int | None):
    """Trial `number` (must be COMPLETE and run here), or the best COMPLETE trial the study ran
    (highest OOF macro-F1; imported trials are another study's)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if number is None:
        ranked = rank_pool([study])
        if not ranked:
            raise UserError(
                f"study {study.study_name!r} has no COMPLETE trial yet ({_state_counts(trials)}); "
                f"run workers first: histosweep worker {study.study_name} --n-trials N"
            )
        return ranked[0][1]
    found = [t for t in trials if t.number == number]
    if not found:
        last = f"0..{trials[-1].number}" if trials else "none yet"
        raise UserError(f"study {study.study_name!r} has no trial {number} (trials: {last})")
    if is_imported(found[0]):
        origin = found[0].user_attrs[IMPORTED_ATTR]
        raise UserError(
            f"trial {number} of study {study.study_name!r} was imported from {origin} by create "
            f"--warm-start: its checkpoints are that study's; export it from there"
        )
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


def _candidate(store, trial, folds: int, n_oof: int, *, study: str = "") -> Candidate:
    config = _trial_config(trial)
    records = _fold_records(trial, folds)
    probs = [fetch_probs(store, r, what=f"trial {trial.number} fold {k}") for k, r in enumerate(records)]
    oof = np.concatenate([p["val_probs"] for p in probs]).astype(np.float64)
    if oof.shape[0] != n_oof:
        raise UserError(f"trial {trial.number}: its folds predicted {oof.shape[0]} out-of-fold "
                        f"samples, the study's split has {n_oof}; was the study re-created?")
    holdout = np.mean([p["holdout_probs"] for p in probs], axis=0, dtype=np.float64)
    return Candidate(trial, config, records, oof, holdout, study=study)


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

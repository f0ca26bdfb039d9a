"""Studies of one campaign share a split: `create --like OLD` copies OLD's data and split,
`create --warm-start OLD..` imports OLD's finished trials into the new study's history (never
trained, exported or counted by --n-trials there), and the question both ask: same split?

Exercise: `histosweep create NEW --like OLD --warm-start OLD --space new.toml`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from histosweep.search._enqueue import _same_kind, in_space
from histosweep.search._errors import UserError
from histosweep.search._settings import FORMAT_VERSION, StudySettings, check_current, load_settings
from histosweep.search._space import Space, distribution

IMPORTED_ATTR = "imported_from"  # trial user attr of an imported trial: "OLD#12"
IMPORTS_KEY = "histosweep_imports"  # study user attr: what create --warm-start imported
# why: the fold rule compares a trial's finished folds with the best trial's fold_val_f1, and
# the best may be imported; its fold records (checkpoints) stay OLD's, never copied.
COPIED_ATTRS = ("fold_val_f1", "oof_f1", "pruned_reason")


def is_imported(trial) -> bool:
    """A trial create --warm-start copied from another study: history for the sampler and
    pruner only (no checkpoints here; never trained, exported, counted or kept by gc)."""
    return bool(trial.user_attrs.get(IMPORTED_ATTR))


def imported_finished(study) -> int:
    """How many of the study's finished (COMPLETE + PRUNED) trials were imported."""
    record = study.user_attrs.get(IMPORTS_KEY) or {}
    return int(record.get("complete", 0)) + int(record.get("pruned", 0))


def split_key(settings: StudySettings) -> str:
    """12 hex digits naming the data and split: studies with one key pool in export-best."""
    doc = [settings.fingerprint, settings.sample_ids, settings.labels, settings.split]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def split_difference(settings: StudySettings, other: StudySettings) -> str | None:
    """What makes `other`'s split differ from `settings`' (one phrase), None when identical."""
    if other.fingerprint != settings.fingerprint:
        return (f"data fingerprint {other.fingerprint[:12]} is not {settings.fingerprint[:12]} "
                "(other images or labels)")
    if other.sample_ids != settings.sample_ids or other.labels != settings.labels:
        return "other samples kept (--keep-flagged, or the audit flagged other images)"
    for name in ("folds", "holdout", "seed"):
        if getattr(other, name) != getattr(settings, name):
            return f"--{name} {getattr(other, name)} is not {getattr(settings, name)}"
    if other.split != settings.split:
        return "the split's rows differ (same folds, holdout and seed: another histosweep version?)"
    return None


# --- create --like ---------------------------------------------------------------------------
def like_settings(old_name: str, old: StudySettings, space: Space, opts) -> StudySettings:
    """The new study's settings: OLD's data, fingerprint, samples, split, folds and seed; its own
    space, pruner, sampler and --keep-top (opts: CreateOptions). --data only where it moved."""
    data_root = old.data_root
    if opts.data is not None:
        from histosweep.data import dataset_fingerprint, load_dataset

        fingerprint = dataset_fingerprint(load_dataset(opts.data, labeled=True))
        if fingerprint != old.fingerprint:
            raise UserError(
                f"--data {opts.data}: fingerprint {fingerprint[:12]} is not study {old_name!r}'s "
                f"{old.fingerprint[:12]}; --like copies {old_name!r}'s split of its own data, so "
                "pass that data (where it moved) or leave out --data"
            )
        data_root = str(Path(opts.data).resolve())
    return replace(old, data_root=data_root, space=space.to_dict(), pruner=opts.pruner,
                   sampler=opts.sampler, keep_top=opts.keep_top, version=FORMAT_VERSION)


def load_source(storage, name: str, flag: str):
    """(study, settings) of an existing histosweep study named on the command line."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(f"{flag} {shlex.quote(name)}: no such study in this storage{did_you_mean(name, names)} "
                        f"(studies: {', '.join(names) or 'none'})") from None
    settings = load_settings(study)
    check_current(study, settings)
    return study, settings


def did_you_mean(name: str, names: list[str]) -> str:
    """'; did you mean 'x'?' for a study name one typo (or only case, or only spaces around it)
    away from an existing one; the name is quoted, so a space in it shows."""
    by_fold = {n.strip().casefold(): n for n in names}
    key = name.strip().casefold()
    close = [by_fold[key]] if key in by_fold else difflib.get_close_matches(
        name.strip(), names, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- create --warm-start ---------------------------------------------------------------------
@dataclass
class Imports:
    """Trials to add to the new study, and per source study what was taken and left."""

    trials: list = field(default_factory=list)  # optuna FrozenTrials, ready for add_trials
    by_study: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The study user attr IMPORTS_KEY (imported_finished reads complete + pruned)."""
        total = {k: sum(s[k] for s in self.by_study.values()) for k in ("complete", "pruned")}
        return {**total, "from": self.by_study}


def plan_imports(storage, name: str, settings: StudySettings, sources: tuple[str, ...]) -> Imports:
    """OLD's finished trials that fit the new study's space, checked before anything is created:
    a source with another split is one UserError naming the difference."""
    if len(set(sources)) != len(sources):
        raise UserError(f"--warm-start {' '.join(sources)}: a study is named twice")
    if name in sources:
        raise UserError(f"--warm-start {name}: that is the study being created; name earlier studies")
    plan = Imports()
    space = settings.space_obj()
    for source in sources:
        study, old = load_source(storage, source, "--warm-start")
        why = split_difference(settings, old)
        if why is not None:
            raise UserError(
                f"--warm-start {source}: study {source!r} is on another split than {name!r} ({why}), "
                f"so its trial values are not comparable; create {name!r} with --like {source}"
            )
        plan.by_study[source] = _take(study, source, old, space, plan.trials)
    return plan


def _take(study, source: str, old: StudySettings, space: Space, out: list) -> dict[str, int]:
    from optuna.trial import TrialState

    # skipped: every finished trial not taken; reimported: those of them OLD itself imported
    counts = {"complete": 0, "pruned": 0, "skipped": 0, "reimported": 0}
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    steps = (old.space_obj().max_epochs(), space.max_epochs())
    for t in finished:
        counts["reimported"] += is_imported(t)
        params = None if is_imported(t) else fit_params(space, t.user_attrs.get("config"))
        try:  # NOTE: an imported trial is taken from the study that ran it, not re-imported
            copied = None if params is None else _copy(t, source, space, params, steps)
        except ValueError:  # optuna's own check: a value outside the new distribution
            copied = None
        if copied is None:
            counts["skipped"] += 1
            continue
        out.append(copied)
        counts[t.state.name.lower()] += 1
    return counts


def fit_params(space: Space, config: Any) -> dict[str, Any] | None:
    """The trial's values of the space's searched params when its whole training config is a
    point of `space` (every other field at the space's fixed value or TrainConfig's default);
    None when it is not. The seed is the study's and not compared."""
    from histosweep.model import ConfigError, TrainConfig

    if not isinstance(config, dict):
        return None
    try:
        values = TrainConfig.from_dict(config).to_dict()
    except (ConfigError, TypeError, ValueError):
        return None
    defaults = TrainConfig().to_dict()
    params = {}
    for key, value in values.items():
        p = space.params.get(key)
        if key == "seed":
            continue
        if p is None or p.kind == "fixed":
            want = defaults[key] if p is None else p.value
            if not (_same_kind(want, value) and want == value):
                return None
            continue
        try:
            params[key] = in_space(p, value)
        except ValueError:
            return None
    return params


def _copy(t, source: str, space: Space, params: dict[str, Any], steps: tuple[int, int]):
    """The trial as the new study's history: its value and per-epoch values (steps re-based on
    the new space's epochs), the new space's distributions, marked imported."""
    import optuna
    from optuna.trial import TrialState

    attrs = {k: t.user_attrs[k] for k in COPIED_ATTRS if k in t.user_attrs}
    return optuna.trial.create_trial(
        state=t.state, value=t.value if t.state == TrialState.COMPLETE else None,
        params=params, distributions={k: distribution(space.params[k]) for k in params},
        user_attrs={IMPORTED_ATTR: f"{source}#{t.number}", **attrs},
        intermediate_values=rebase_steps(t.intermediate_values, *steps),
    )


def rebase_steps(values: dict[int, float], old_epochs: int, new_epochs: int) -> dict[int, float]:
    """Steps are fold * (the space's most epochs) + epoch: the same fold and epoch under the new
    space's most epochs (an epoch the new space cannot reach is dropped)."""
    out = {}
    for step, value in values.items():
        fold, epoch = divmod(int(step), old_epochs)
        if epoch < new_epochs:
            out[fold * new_epochs + epoch] = value
    return out


def add_imports(study, plan: Imports) -> dict[str, Any]:
    """Add the planned trials to the new study's history and record what came from where."""
    if plan.trials:
        study.add_trials(plan.trials)
    record = plan.record()
    study.set_user_attr(IMPORTS_KEY, record)
    return record

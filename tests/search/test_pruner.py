"""make_pruner's pruners, and SnapshotPruner's cached reads of the study's trials."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from histosweep.search import make_pruner
from histosweep.search._pruner import SnapshotPruner, _SnapshotStudy
from histosweep.storage import study_storage, trial_id

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _finished(study: optuna.Study, n: int, value: float, steps: int = 4) -> None:
    for _ in range(n):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, intermediate_values={s: value for s in range(steps)}
            )
        )


def _running(study: optuna.Study, value: float, steps: int = 3) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    for s in range(steps):
        trial.report(value, s)
    return study_storage(study).get_trial(trial_id(trial))


def _inner():
    return optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1)


def test_snapshot_pruner_decides_like_the_inner_pruner():
    study = optuna.create_study(direction="maximize")
    _finished(study, 4, 0.8)
    losing, winning = _running(study, 0.1), _running(study, 0.9)
    pruner = SnapshotPruner(_inner(), max_age_s=0.0)
    assert pruner.prune(study, losing) is True and bool(_inner().prune(study, losing))
    assert pruner.prune(study, winning) is False and not _inner().prune(study, winning)


def test_snapshot_is_reused_until_it_is_older_than_max_age():
    study = optuna.create_study(direction="maximize")
    _finished(study, 1, 0.8)  # one finished trial: still in n_startup_trials, nothing is pruned
    losing = _running(study, 0.1)
    cached, fresh = (
        SnapshotPruner(_inner(), max_age_s=3600.0),
        SnapshotPruner(_inner(), max_age_s=0.0),
    )
    assert cached.prune(study, losing) is False and fresh.prune(study, losing) is False
    _finished(study, 2, 0.8)  # now 3 finished trials: a fresh read prunes the losing trial
    assert fresh.prune(study, losing) is True
    assert cached.prune(study, losing) is False  # decided on the snapshot taken above


@pytest.mark.parametrize(
    ("name", "inner"),
    [("percentile", optuna.pruners.PercentilePruner), ("median", optuna.pruners.MedianPruner)],
)
def test_make_pruner_wraps_percentile_and_median(name, inner):
    pruner = make_pruner(SimpleNamespace(pruner=name, folds=3), epochs=4)
    assert isinstance(pruner, SnapshotPruner) and type(pruner.inner) is inner


def test_make_pruner_without_snapshot_is_the_plain_pruner():
    pruner = make_pruner(SimpleNamespace(pruner="percentile", folds=3), epochs=4, snapshot_s=0)
    assert type(pruner) is optuna.pruners.PercentilePruner


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("none", optuna.pruners.NopPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
    ],
)
def test_make_pruner_other_choices(name, kind):
    assert isinstance(make_pruner(SimpleNamespace(pruner=name, folds=3), 4), kind)


def test_snapshot_holds_only_finished_trials_and_passes_other_reads_through():
    study = optuna.create_study(direction="maximize")
    _finished(study, 2, 0.8)
    running = _running(study, 0.5)
    pruner = SnapshotPruner(_inner(), max_age_s=3600.0)
    pruner.prune(study, running)
    assert [t.state for t in pruner._trials] == [optuna.trial.TrialState.COMPLETE] * 2
    view = _SnapshotStudy(study, pruner._trials)
    assert len(view.get_trials()) == 3  # every state: read from the study, not the snapshot

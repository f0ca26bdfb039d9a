"""A pruner wrapper that reads the study's finished trials from a snapshot, not on every report.

Median and percentile pruners call `study.get_trials(states=(COMPLETE,))` at every
`should_prune()`: with 8 workers and 1000 trials that read is most of the storage time per
trial (bench/storage.py). The snapshot is refreshed at most every `max_age_s` seconds, so a
decision can miss trials that finished in the last few seconds; trials take minutes, so that
changes little.

Exercise: `python bench/storage.py --storage sqlite:///s.db --workers 8 --trials 1000`.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, TrialState

SNAPSHOT_MAX_AGE_S = 10.0
_SNAPSHOT_STATES = (TrialState.COMPLETE,)


class SnapshotPruner(optuna.pruners.BasePruner):
    """Wraps a pruner that reads only COMPLETE trials, `study.direction(s)` and the trial."""

    def __init__(self, inner: optuna.pruners.BasePruner, max_age_s: float = SNAPSHOT_MAX_AGE_S) -> None:
        self.inner = inner
        self.max_age_s = max_age_s
        self._trials: list[FrozenTrial] | None = None
        self._taken = 0.0

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        if self._trials is None or now - self._taken > self.max_age_s:
            self._trials = study.get_trials(deepcopy=False, states=_SNAPSHOT_STATES)
            self._taken = now
        return bool(self.inner.prune(_SnapshotStudy(study, self._trials), trial))


class _SnapshotStudy:
    """The study as the inner pruner sees it: COMPLETE trials come from the snapshot."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        if states is None or not set(states) <= set(_SNAPSHOT_STATES):
            return self._study.get_trials(deepcopy=deepcopy, states=states)  # not in the snapshot
        return list(self._trials)

    def __getattr__(self, name: str):
        return getattr(self._study, name)

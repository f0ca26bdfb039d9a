"""A pruner wrapper that reads the study's finished trials from a snapshot, not on every report.

Median and percentile pruners call `study.get_trials()` at every `should_prune()`: with 8
workers and 1000 trials that full read is most of the storage time per trial (bench/storage.py).
The snapshot is refreshed at most every `max_age_s` seconds, so a decision can miss trials that
finished in the last few seconds; trials take minutes, so that changes little.

Exercise: `python bench/storage.py --storage sqlite:///s.db --workers 8 --trials 1000`.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial


class SnapshotPruner(optuna.pruners.BasePruner):
    """Wraps a pruner that only reads `study.get_trials()`, `study.direction(s)` and the trial."""

    def __init__(self, inner: optuna.pruners.BasePruner, max_age_s: float = 10.0) -> None:
        self.inner = inner
        self.max_age_s = max_age_s
        self._trials: list[FrozenTrial] | None = None
        self._taken = 0.0

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        if self._trials is None or now - self._taken > self.max_age_s:
            self._trials = study.get_trials(deepcopy=False)
            self._taken = now
        return bool(self.inner.prune(_SnapshotStudy(study, self._trials), trial))


class _SnapshotStudy:
    """The study as the inner pruner sees it: get_trials() answers from the snapshot."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name: str):
        return getattr(self._study, name)

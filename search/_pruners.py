"""The pruners a study can name (`create --pruner`): name -> builder + what it can do. The CLI
help, validation and the README table come from here; every worker builds the study's pruner.

Imports optuna only when a pruner is built. Exercise: `histosweep create S --data D --pruner asha`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from histosweep.exceptions import UserError

DEFAULT_PRUNER = "percentile"


@dataclass(frozen=True)
class PrunerKind:
    """One pruner: how a worker builds it from the study's folds and epochs, and what it reads."""

    name: str
    summary: str  # one line for the README table
    build: Callable[[int, int], Any]  # (folds, most epochs in the space) -> an optuna pruner
    # reads the finished trials at every report: wrapped in SnapshotPruner (search._pruner)
    reads_finished: bool = False


def _percentile(folds, epochs):
    import optuna

    # keep a trial only while it is in the top 25 % of finished trials at the same step
    # (PercentilePruner(25) when maximizing prunes below the 75th percentile); saved 49% of
    # epochs at equal best F1 where median saved 28% (bench/pruning.py).
    # NOTE: warm-up of one epoch: first-epoch F1 of a fresh head is mostly noise.
    return optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1)


def _median(folds, epochs):
    import optuna

    # NOTE: 5 start-up trials: with 2, the sampler's model rested on 2-3 complete trials
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _asha(folds, epochs):
    import optuna

    # Successive halving over fold-epoch rungs: the first rung after one fold's epochs, then
    # every 3x more steps; a trial goes on while in the top third at its rung.
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=epochs, reduction_factor=3)


def _hyperband(folds, epochs):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=folds * epochs)


def _wilcoxon(folds, epochs):
    import optuna

    # Compares this trial's per-(fold, epoch) F1 with the best trial's on the same steps.
    return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=epochs)


def _none(folds, epochs):
    import optuna

    return optuna.pruners.NopPruner()


PRUNER_KINDS: dict[str, PrunerKind] = {k.name: k for k in (
    PrunerKind("percentile", "top 25 % of finished trials at the same step go on", _percentile,
               reads_finished=True),
    PrunerKind("median", "above the median of finished trials at the same step", _median,
               reads_finished=True),
    PrunerKind("asha", "successive halving, rungs every 3x fold-epochs", _asha),
    PrunerKind("hyperband", "several successive-halving brackets", _hyperband),
    PrunerKind("wilcoxon", "paired test against the best trial's same steps", _wilcoxon),
    PrunerKind("none", "never prune", _none),
)}
PRUNERS = tuple(PRUNER_KINDS)


def pruner_kind(name: str, *, flag: str = "pruner") -> PrunerKind:
    """The registered pruner `name`; a one-line UserError listing the choices otherwise."""
    try:
        return PRUNER_KINDS[name]
    except KeyError:
        raise UserError(f"{flag} {name!r}: choose one of {', '.join(PRUNERS)}") from None


def pruner_help() -> str:
    return f"{' | '.join(PRUNERS)} (default {DEFAULT_PRUNER}; docs/real-data.md: Pruners)"


def pruner_table() -> str:
    """The README's table of pruners, rendered from the registry."""
    rows = ["| pruner | rule | reads finished trials |", "|---|---|---|"]
    for k in PRUNER_KINDS.values():
        default = " (default)" if k.name == DEFAULT_PRUNER else ""
        reads = "yes (a snapshot, refreshed every few seconds)" if k.reads_finished else "no"
        rows.append(f"| `{k.name}`{default} | {k.summary} | {reads} |")
    return "\n".join(rows)

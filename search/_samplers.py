"""The samplers a study can name (`create --sampler`): name -> builder + what it can do. The
CLI help, validation, the worker's categorical warning and the README table come from here.

Imports optuna only when a sampler is built, so `histosweep --help` stays fast.
Exercise: `histosweep create STUDY --data DATA --sampler qmc`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from histosweep.exceptions import UserError

DEFAULT_SAMPLER = "tpe"


@dataclass(frozen=True)
class SamplerKind:
    """One sampler: how a worker builds it and what it can do."""

    name: str
    summary: str  # one line for the README table
    # (study seed, this worker's seed) -> an optuna sampler
    build: Callable[[int | None, int | None], Any]
    categorical_at_random: bool = False  # categorical params fall back to a RandomSampler
    shared_sequence: bool = False  # one sequence for all workers (the study seed, not per-worker)
    needs: str | None = None  # a package it imports only when it samples (checked at create)


def _tpe(seed, draw_seed):
    import optuna

    # multivariate models parameter interactions and costs 3x less per trial at 1000 trials
    # (bench/storage.py); constant_liar: parallel workers treat running trials as bad results
    # instead of all proposing the same point.
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=draw_seed)


def _gp(seed, draw_seed):
    import optuna

    return optuna.samplers.GPSampler(seed=draw_seed)  # conditions on running trials itself


def _random(seed, draw_seed):
    import optuna

    return optuna.samplers.RandomSampler(seed=draw_seed)


def _cmaes(seed, draw_seed):
    import optuna

    # the worker logs the categorical fallback once (fleet), not at every trial
    return optuna.samplers.CmaEsSampler(
        seed=draw_seed, independent_sampler=optuna.samplers.RandomSampler(seed=draw_seed),
        warn_independent_sampling=False)


def _qmc(seed, draw_seed):
    import optuna

    from histosweep.storage import trial_number_qmc_sampler

    # NOTE: the scrambled Sobol sequence is one for all workers, so QMC takes the study seed
    # itself, never a per-worker one; its index is the trial number.
    return trial_number_qmc_sampler(
        seed=seed, independent_sampler=optuna.samplers.RandomSampler(seed=draw_seed))


SAMPLER_KINDS: dict[str, SamplerKind] = {k.name: k for k in (
    SamplerKind("tpe", "multivariate TPE with constant liar (parallel workers spread out)", _tpe),
    SamplerKind("gp", "Gaussian process (few trials, continuous params)", _gp),
    SamplerKind("random", "independent uniform draws (a baseline)", _random),
    SamplerKind("cmaes", "CMA-ES over the numeric params", _cmaes,
                categorical_at_random=True, needs="cmaes"),
    SamplerKind("qmc", "scrambled Sobol sequence indexed by trial number (even coverage)", _qmc,
                categorical_at_random=True, shared_sequence=True),
)}
SAMPLERS = tuple(SAMPLER_KINDS)


def sampler_kind(name: str, *, flag: str = "sampler") -> SamplerKind:
    """The registered sampler `name`; a one-line UserError listing the choices otherwise."""
    try:
        return SAMPLER_KINDS[name]
    except KeyError:
        raise UserError(f"{flag} {name!r}: choose one of {', '.join(SAMPLERS)}") from None


def sampler_help() -> str:
    return f"{' | '.join(SAMPLERS)} (default {DEFAULT_SAMPLER}; docs/real-data.md: Samplers)"


def sampler_table() -> str:
    """The README's table of samplers, rendered from the registry."""
    rows = ["| sampler | what it is | categorical params | workers |", "|---|---|---|---|"]
    for k in SAMPLER_KINDS.values():
        categorical = "at random (independent sampler)" if k.categorical_at_random else "by the sampler"
        workers = "one shared sequence" if k.shared_sequence else "own seed per worker"
        needs = f" (needs `{k.needs}`)" if k.needs else ""
        default = " (default)" if k.name == DEFAULT_SAMPLER else ""
        rows.append(f"| `{k.name}`{default} | {k.summary}{needs} | {categorical} | {workers} |")
    return "\n".join(rows)

"""BBC-CV of a study from its stored out-of-fold probabilities (no checkpoint is read): what
export-best writes into the manifest, and what `histosweep estimate` prints without a bundle.

The pool is every COMPLETE trial with stored fold predictions, ranked as export-best ranks
them (trial value, then study, then number), across the studies named (one data and split);
imported trials are not in it. The reference recipe's trial is found by its enqueued_from
attr, the first study's where several have one. The result is also kept in the study (user
attr ESTIMATE_ATTR) for `status`, for one study only (a pool's figure is not any one study's).

Exercise: `histosweep estimate STUDY [STUDY2 ..] [--ensemble bagged] [--bootstrap 1000] [--json]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from histosweep.bundle._bootstrap import BBC_RESAMPLES, BBCOptions, bbc_cv
from histosweep.bundle._selection import DEFAULT_METHOD, METHODS
from histosweep.bundle._source import Source, _candidate, rank_pool
from histosweep.constants import DEFAULT_CANDIDATES
from histosweep.exceptions import UserError
from histosweep.search import is_reference
from histosweep.trial_files import ESTIMATE_ATTR


@dataclass(frozen=True)
class EstimateOptions:
    study: str
    storage: str | None = None
    artifacts: str | None = None
    trials: tuple[int, ...] = ()
    single: bool = False
    candidates: int = DEFAULT_CANDIDATES
    calibrate: bool = True
    ensemble: str = DEFAULT_METHOD
    bootstrap: int = BBC_RESAMPLES
    more_studies: tuple[str, ...] = ()  # pooled with study (same data and split)


def check_estimate_options(opts) -> None:
    if opts.ensemble not in METHODS:
        raise UserError(f"--ensemble {opts.ensemble!r}: choose one of {', '.join(METHODS)}")
    if opts.bootstrap < 100:
        raise UserError(f"--bootstrap {opts.bootstrap}: use at least 100 resamples (default "
                        f"{BBC_RESAMPLES}); fewer make the 95 % interval's ends noise")


def estimate(opts: EstimateOptions) -> dict[str, Any]:
    """`histosweep estimate`: BBC-CV without a bundle; records it in the study."""
    from histosweep.bundle._source import read_source
    from histosweep.storage import open_artifact_store

    check_estimate_options(opts)
    if opts.candidates < 1:
        raise UserError(f"--candidates {opts.candidates}: must be >= 1")
    store = open_artifact_store(opts.artifacts, create=False)  # estimate only reads the store
    src = read_source(opts, store)
    result = estimate_source(src, store, opts)
    if not src.pooled:
        record_estimate(src.study, result, by="estimate")
    return {"study": src.study.study_name, "studies": src.names, **result}


def estimate_source(src: Source, store, opts) -> dict[str, Any]:
    """BBC-CV of the selection opts asks for (opts: ExportOptions or EstimateOptions)."""
    pool = _pool(src, store)
    keys = [(c.study, c.trial.number) for c in pool]
    refs = _references(src, pool)
    fixed = tuple(keys.index((src.names[0], n)) for n in opts.trials) if opts.trials else ()
    bbc = bbc_cv(
        np.stack([c.oof for c in pool]), src.labels(src.oof_rows),
        BBCOptions(resamples=opts.bootstrap, method=opts.ensemble, candidates=opts.candidates,
                   calibrate=opts.calibrate, fixed=fixed, single=opts.single and not opts.trials),
        reference=refs[0] if refs else None,
    )
    bbc["reference_trial"] = keys[refs[0]][1] if refs else None
    bbc["reference_study"] = keys[refs[0]][0] if refs else None
    bbc["seed"] = int(bbc["seed"])
    return bbc


def _references(src: Source, pool: list) -> list[int]:
    """Pool indices of reference-recipe trials, the first study's first (the search gain's
    baseline in a pool of studies is the first study's reference, else the next one's)."""
    refs = [i for i, c in enumerate(pool) if is_reference(c.trial)]
    return sorted(refs, key=lambda i: src.names.index(pool[i].study))


def _pool(src: Source, store) -> list:
    """Every COMPLETE trial's OOF probabilities, best first (the candidates are its head)."""
    have = {(c.study, c.trial.number): c for c in src.candidates}
    pool = []
    for name, t in rank_pool(src.studies or [src.study]):
        if (name, t.number) in have:
            pool.append(have[(name, t.number)])
            continue
        try:
            pool.append(_candidate(store, t, src.settings.folds, src.oof_rows.size, study=name))
        except UserError:  # a trial without all its stored predictions cannot be re-selected
            continue
    return pool


def record_estimate(study, bbc: dict[str, Any], *, by: str) -> None:
    """Keep the figures in the study for `status` (a courtesy: never fails the command), with
    when they were made (UTC), so status can say how old they are."""
    import datetime

    keep = {k: bbc.get(k) for k in ("ensemble", "single_best", "reference", "search_gain",
                                     "resamples", "seed", "method", "reference_trial")}
    at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        study.set_user_attr(ESTIMATE_ATTR, {**keep, "by": by, "at": at})
    except Exception:  # noqa: BLE001 - a read-only storage still gets its estimate printed
        pass

"""BBC-CV (Tsamardinos et al. 2018): an honest estimate of what export-best's whole selection
gives, from the stored out-of-fold predictions alone.

The OOF rows are resampled B times with replacement, stratified by class. In each resample the
whole selection runs on the in-bag rows only (ranking the trials, picking the top --candidates,
ensemble selection, the decision-offset fit and its check) and what it chose is scored on the
out-of-bag rows. The estimate is the mean out-of-bag macro-F1 with a percentile 95 % interval.
In the same resamples: the single best trial (in-bag rank 1) and the reference recipe's trial,
and the paired difference ensemble - reference ("search gain over the reference").

Exercise: `histosweep estimate STUDY [--json]`; `histosweep export-best STUDY --bootstrap 1000`.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from histosweep.bundle._selection import (
    BAGS,
    DEFAULT_METHOD,
    batch_f1,
    checked_offsets_batch,
    decide_batch,
    select_batch,
)

BBC_RESAMPLES = 1000
BBC_SEED = 0  # NOTE: fixed, so that export-best and estimate give the same figures and bytes
BBC_LEVEL = 0.95
CHUNK = 50  # resamples selected at once (memory: K x CHUNK x N x C float64)
PARALLEL_WORK = 5_000_000  # resamples x rows x candidates above which chunks go to processes
MAX_WORKERS = 8
BBC_NOTE = (
    "BBC-CV (bootstrap bias-corrected cross-validation): the out-of-fold rows resampled with "
    "replacement; in each resample the whole selection (ranking, ensemble, decision offsets) "
    "re-run on the in-bag rows and scored on the rows left out; mean and 95 % percentile "
    "interval. It needs no held-out images."
)
LOCKBOX_VS_BBC = (
    "The lockbox is one held-out sample scored once: unbiased, but small and it costs training "
    "images. BBC-CV re-runs the selection on resampled out-of-fold rows: it uses every image and "
    "accounts for the optimism of picking the best of many trials."
)


@dataclass(frozen=True)
class BBCOptions:
    resamples: int = BBC_RESAMPLES
    seed: int = BBC_SEED
    method: str = DEFAULT_METHOD  # ensemble selection: greedy | bagged | cmaes
    candidates: int = 20  # the top-N trials (ranked in bag) the ensemble selects from
    calibrate: bool = True
    fixed: tuple[int, ...] = ()  # pool indices of members chosen by the user (no selection)
    single: bool = False  # the exported model is the in-bag best trial alone


def stratified_counts(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) bootstrap counts: each class's rows drawn with replacement, as many as it has."""
    counts = np.zeros((resamples, labels.size), np.float64)
    for c in np.unique(labels):
        cols = np.flatnonzero(labels == c)
        draws = rng.integers(0, cols.size, size=(resamples, cols.size))
        flat = (np.arange(resamples)[:, None] * cols.size + draws).ravel()
        counts[:, cols] = np.bincount(flat, minlength=resamples * cols.size).reshape(resamples, cols.size)
    return counts


def interval(values: np.ndarray, level: float = BBC_LEVEL) -> dict[str, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return {"mean": round(float(np.mean(values)), 6), "ci95": [round(float(low), 6), round(float(high), 6)]}


def select_in_bag(probs: np.ndarray, labels: np.ndarray, w: np.ndarray, opts: BBCOptions,
                  rng: np.random.Generator, *, argmax: np.ndarray | None = None,
                  offsets_seed: int | None = None):
    """The whole selection on the rows w weights (b problems at once): the trials ranked by
    weighted macro-F1, the top opts.candidates, the ensemble weights and the checked decision
    offsets. Returns top (b, K) pool indices, best (b,) the rank-1 trial, weights (b, K),
    offsets (b, C). Rows of weight 0 are never read."""
    m_all, _, num_classes = probs.shape
    b = w.shape[0]
    argmax = probs.argmax(-1) if argmax is None else argmax
    rank_f1 = np.stack([batch_f1(np.broadcast_to(argmax[m], w.shape), labels, w, num_classes)
                        for m in range(m_all)], 1)  # (b, M)
    order = np.argsort(-rank_f1, axis=1, kind="stable")  # ties: the pool's order
    best = order[:, 0]
    if opts.fixed:
        top = np.broadcast_to(np.asarray(opts.fixed), (b, len(opts.fixed)))
        weights = np.full(top.shape, 1.0 / len(opts.fixed))
    elif opts.single:
        top, weights = best[:, None], np.ones((b, 1))
    else:
        top = order[:, :opts.candidates]
        weights = select_batch(opts.method, probs[top.T], labels, w, rng)
    chosen = np.einsum("bk,kbnc->bnc", weights, probs[top.T])
    offsets_rng = rng if offsets_seed is None else np.random.default_rng(offsets_seed)
    offsets = (checked_offsets_batch(chosen, labels, w, offsets_rng) if opts.calibrate
               else np.zeros((b, num_classes)))
    return top, best, weights, offsets


def bbc_cv(probs: np.ndarray, labels: np.ndarray, opts: BBCOptions, *,
           reference: int | None = None) -> dict:
    """probs (M, N, C): every candidate trial's OOF probabilities (pool order = rank by trial
    value, the tie-break in bag); labels (N,); reference: pool index of the reference trial.

    Returns {"ensemble", "single_best", "reference", "search_gain"} each {"mean", "ci95"}
    (None where there is no reference), and the settings. Chunks of resamples run in worker
    processes when the work is large (each chunk has its own seed: the same figures either way)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(opts.seed)
    counts = stratified_counts(labels, opts.resamples, rng)
    starts = range(0, opts.resamples, CHUNK)
    chunk_seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=len(starts))]
    jobs = [(counts[start:start + CHUNK], seed) for start, seed in zip(starts, chunk_seeds, strict=True)]
    shared = (probs, labels, opts, reference)
    workers = _workers(probs, opts, len(jobs))
    if workers == 1:
        _init_shared(*shared)
        parts = [_score_chunk(job) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")  # NOTE: no fork: the caller may hold threads
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_shared,
                                 initargs=shared) as pool:
            parts = list(pool.map(_score_chunk, jobs))
    ens, single, ref = (np.concatenate(x) for x in zip(*parts, strict=True))
    has_ref = reference is not None
    return {
        "ensemble": interval(ens), "single_best": interval(single),
        "reference": interval(ref) if has_ref else None,
        "search_gain": interval(ens - ref) if has_ref else None,
        "resamples": opts.resamples, "seed": opts.seed,
        "method": "single" if opts.single else "trials" if opts.fixed else opts.method,
        "candidates": opts.candidates, "calibrated": opts.calibrate, "rows": int(labels.size),
        "pool": int(probs.shape[0]), "note": BBC_NOTE,
    }


def _workers(probs: np.ndarray, opts: BBCOptions, chunks: int) -> int:
    """Processes for the chunks: one where the work is small (starting one costs ~1 s)."""
    work = opts.resamples * probs.shape[1] * min(opts.candidates, probs.shape[0])
    work *= BAGS // 2 if opts.method == "bagged" else 1
    if work < PARALLEL_WORK:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(chunks, cpus, MAX_WORKERS))


_SHARED: dict = {}


def _init_shared(probs, labels, opts, reference) -> None:
    _SHARED.update(probs=probs, labels=labels, opts=opts, reference=reference,
                   argmax=probs.argmax(-1))


def _score_chunk(job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of resamples: select in bag, score out of bag -> (ensemble, single, reference)."""
    w, seed = job
    probs, labels, opts = _SHARED["probs"], _SHARED["labels"], _SHARED["opts"]
    reference, argmax = _SHARED["reference"], _SHARED["argmax"]
    num_classes = probs.shape[-1]
    oob = (w == 0).astype(np.float64)
    rng = np.random.default_rng(seed)
    offsets_seed = int(rng.integers(0, 2**63 - 1))  # one offsets check's draws for all three
    top, best, weights, offsets = select_in_bag(probs, labels, w, opts, rng, argmax=argmax,
                                                offsets_seed=offsets_seed)
    chosen = np.einsum("bk,kbnc->bnc", weights, probs[top.T])
    ens = batch_f1(decide_batch(chosen, offsets), labels, oob, num_classes)
    # NOTE: the single best and the reference as export-best would ship them alone: with their own
    # decision offsets fitted and checked in bag, so that the search gain is the search's, not
    # the offsets' (an export of the reference trial itself then gains exactly 0)
    single = _alone(probs[best], labels, w, oob, opts, offsets_seed)
    ref = (_alone(np.broadcast_to(probs[reference], chosen.shape), labels, w, oob, opts, offsets_seed)
           if reference is not None else np.full(w.shape[0], np.nan))
    return ens, single, ref


def _alone(member: np.ndarray, labels, w, oob, opts: BBCOptions, offsets_seed: int) -> np.ndarray:
    """(b, N, C) one trial per problem -> (b,) out-of-bag macro-F1, calibrated as export would."""
    offsets = (checked_offsets_batch(member, labels, w, np.random.default_rng(offsets_seed))
               if opts.calibrate
               else np.zeros((member.shape[0], member.shape[-1])))
    return batch_f1(decide_batch(member, offsets), labels, oob, member.shape[-1])

"""Ensemble selection and decision offsets, batched: one call selects for many resamples at once.

Each problem of a batch is the same candidates' out-of-fold probabilities seen through its own
row weights (bootstrap counts; 1 for every row at export), so BBC-CV (bundle._bootstrap) can
re-run the whole selection in every resample with numpy instead of a Python loop per resample.

Methods (`export-best --ensemble`):
- greedy: Caruana et al. 2004, forward selection with replacement, best prefix kept (the same
  rule as bundle._ensemble.greedy_selection).
- bagged: Caruana et al. 2006's remedies for small selection sets: sorted initialisation with
  the best few candidates, then greedy, on many random halves of the candidates; the bags'
  weights averaged.
- cmaes: CMA-ES over one weight per candidate, each point normalised as Purucker & Beel 2023
  (arXiv 2307.00286) propose for post hoc ensembling: negative weights trimmed to 0, the rest
  scaled to sum 1 and rounded to the greedy grid (multiples of 1/25).

Exercise: `histosweep estimate STUDY --ensemble bagged`.
"""

from __future__ import annotations

import numpy as np

from histosweep.bundle._ensemble import (
    OFFSET_CHECK_LEVEL,
    OFFSET_CHECK_PARTS,
    OFFSET_GRID,
    OFFSET_PASSES,
    SELECTION_ROUNDS,
)
from histosweep.model import macro_f1_from_confusion

METHODS = ("greedy", "bagged", "cmaes")
DEFAULT_METHOD = "cmaes"  # bench/selection_seeds.py decided: best mean test F1 (docs/performance.md)
BAGS = 10  # bagged selection: greedy runs on random halves of the candidates
BAG_FRACTION = 0.5
SORTED_INIT = 2  # bagged selection starts each bag with its best few candidates (Caruana 2006)
CMA_GENERATIONS = 30
CMA_SIGMA = 0.3
INNER_RESAMPLES = 200  # the offsets' gain check inside a BBC-CV resample (Poisson bootstrap)


# --- scores with row weights ------------------------------------------------------------------
def batch_f1(preds: np.ndarray, labels: np.ndarray, w: np.ndarray, num_classes: int) -> np.ndarray:
    """(b, N) predicted ids, (N,) labels, (b, N) row weights -> (b,) weighted macro-F1."""
    b = preds.shape[0]
    cells = (np.arange(b)[:, None] * num_classes + labels[None, :]) * num_classes + preds
    cms = np.bincount(cells.ravel(), weights=w.ravel(), minlength=b * num_classes**2)
    return macro_f1_from_confusion(cms.reshape(b, num_classes, num_classes))


def batch_nll(probs: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(b, N, C) probabilities -> (b,) weighted mean log loss."""
    picked = np.take_along_axis(probs, np.broadcast_to(labels[None, :, None], probs.shape[:2] + (1,)),
                                axis=2)[..., 0]
    return -(w * np.log(np.clip(picked, 1e-12, None))).sum(1) / w.sum(1)


def _key(probs: np.ndarray, labels: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """greedy_selection's key: (macro-F1, -log loss), rounded so that re-picks tie."""
    f1 = np.round(batch_f1(probs.argmax(-1), labels, w, probs.shape[-1]), 12)
    return f1, np.round(-batch_nll(probs, labels, w), 9)


def _better(f1, nll, best_f1, best_nll) -> np.ndarray:
    return (f1 > best_f1) | ((f1 == best_f1) & (nll > best_nll))


# --- ensemble methods ---------------------------------------------------------------------------
def select_batch(method: str, cands: np.ndarray, labels: np.ndarray, w: np.ndarray,
                 rng: np.random.Generator, *, rounds: int = SELECTION_ROUNDS) -> np.ndarray:
    """cands (K, b, N, C) -> (b, K) member weights summing to 1, chosen on rows weighted by w."""
    if cands.shape[0] == 1:
        return np.ones((cands.shape[1], 1))
    if method == "greedy":
        return greedy_batch(cands, labels, w, rounds=rounds)
    if method == "bagged":
        return bagged_batch(cands, labels, w, rng, rounds=rounds)
    if method == "cmaes":
        return cmaes_batch(cands, labels, w, rng, rounds=rounds)
    raise ValueError(f"ensemble method {method!r}: choose one of {', '.join(METHODS)}")


def greedy_batch(cands: np.ndarray, labels: np.ndarray, w: np.ndarray, *, rounds: int,
                 allowed: np.ndarray | None = None, init: int = 0) -> np.ndarray:
    """Forward selection with replacement per problem; the best prefix (from `init` on) kept.

    allowed (b, K): candidates a problem may pick; init: start from the best `init` allowed
    candidates, each once (sorted initialisation)."""
    k_all, b = cands.shape[:2]
    rows = np.arange(b)
    allowed = np.ones((b, k_all), bool) if allowed is None else allowed
    # NOTE: the running sum is never divided by the round (the argmax does not move, and the log
    # loss of sum/(r+1) is the sum's own plus log(r+1)), and only the true class's column is
    # logged: the same keys as _key, at a fraction of the work.
    on_label = np.take_along_axis(cands, np.broadcast_to(labels[None, None, :, None],
                                                         cands.shape[:3] + (1,)), 3)[..., 0]
    w_sum = w.sum(1)
    total, total_label = np.zeros(cands.shape[1:]), np.zeros(cands.shape[1:3])
    path = np.zeros((rounds, b), np.int64)
    scores_f1, scores_nll = np.full((rounds, b), -np.inf), np.full((rounds, b), -np.inf)
    if init:
        f1s, nlls = zip(*(_key(cands[k], labels, w) for k in range(k_all)), strict=True)
        f1s, nlls = np.where(allowed.T, np.stack(f1s), -np.inf), np.stack(nlls)
        order = np.lexsort((np.arange(k_all)[:, None].repeat(b, 1), -nlls, -f1s), axis=0)
        for r in range(init):
            path[r] = order[r]
            total += cands[order[r], rows]
            total_label += on_label[order[r], rows]
        scores_f1[init - 1], scores_nll[init - 1] = _key(total / init, labels, w)
    for r in range(init, rounds):
        best_f1, best_nll = np.full(b, -np.inf), np.full(b, -np.inf)
        best_k = np.zeros(b, np.int64)
        for k in range(k_all):
            who = np.flatnonzero(allowed[:, k])
            if who.size == 0:
                continue
            sub = slice(None) if who.size == b else who  # bagged: only the problems that may pick k
            f1 = np.round(batch_f1((total[sub] + cands[k, sub]).argmax(-1), labels, w[sub],
                                   cands.shape[-1]), 12)
            picked = np.clip(total_label[sub] + on_label[k, sub], 1e-12 * (r + 1), None)
            nll = np.round((w[sub] * np.log(picked)).sum(1) / w_sum[sub] - np.log(r + 1), 9)
            better = _better(f1, nll, best_f1[sub], best_nll[sub])
            best_f1[sub], best_nll[sub] = np.where(better, f1, best_f1[sub]), np.where(better, nll, best_nll[sub])
            best_k[sub] = np.where(better, k, best_k[sub])
        total += cands[best_k, rows]
        total_label += on_label[best_k, rows]
        path[r], scores_f1[r], scores_nll[r] = best_k, best_f1, best_nll
    return _prefix_weights(path, scores_f1, scores_nll, init=init, k_all=k_all)


def _prefix_weights(path, scores_f1, scores_nll, *, init: int, k_all: int) -> np.ndarray:
    """(rounds, b) picks -> (b, K) weights of the shortest prefix with the best key."""
    rounds, b = path.shape
    rows = np.arange(b)
    keep_f1, keep_nll = np.full(b, -np.inf), np.full(b, -np.inf)
    keep = np.zeros(b, np.int64)
    for r in range(max(init, 1) - 1, rounds):
        better = _better(scores_f1[r], scores_nll[r], keep_f1, keep_nll)
        keep_f1, keep_nll = np.where(better, scores_f1[r], keep_f1), np.where(better, scores_nll[r], keep_nll)
        keep = np.where(better, r + 1, keep)
    weights = np.zeros((b, k_all))
    for r in range(rounds):
        np.add.at(weights, (rows, path[r]), (r < keep).astype(np.float64))
    return weights / keep[:, None]


def bagged_batch(cands: np.ndarray, labels: np.ndarray, w: np.ndarray, rng: np.random.Generator,
                 *, rounds: int, bags: int = BAGS) -> np.ndarray:
    """Caruana et al. 2006: greedy with sorted initialisation on `bags` random halves, averaged."""
    k_all, b = cands.shape[:2]
    size = max(1, int(round(k_all * BAG_FRACTION)))
    weights = np.zeros((b, k_all))
    for _ in range(bags):
        chosen = np.argsort(rng.random((b, k_all)), axis=1)[:, :size]
        allowed = np.zeros((b, k_all), bool)
        np.put_along_axis(allowed, chosen, True, axis=1)
        weights += greedy_batch(cands, labels, w, rounds=rounds, allowed=allowed,
                                init=min(SORTED_INIT, size))
    return weights / bags


def normalise_weights(x: np.ndarray, rounds: int = SELECTION_ROUNDS) -> np.ndarray:
    """Purucker & Beel's GES-like normalisation of raw CMA-ES points (..., K): trim negatives,
    scale to sum 1, round to multiples of 1/rounds (largest remainder); all <= 0: uniform."""
    x = np.clip(x, 0, None)
    s = x.sum(-1, keepdims=True)
    x = np.where(s > 0, x / np.where(s > 0, s, 1), 1 / x.shape[-1])
    scaled = x * rounds
    base = np.floor(scaled)
    short = (rounds - base.sum(-1)).astype(np.int64)
    order = np.argsort(-(scaled - base), axis=-1, kind="stable")
    ranks = np.argsort(order, axis=-1, kind="stable")
    return (base + (ranks < short[..., None])) / rounds


def cmaes_batch(cands: np.ndarray, labels: np.ndarray, w: np.ndarray, rng: np.random.Generator,
                *, rounds: int, generations: int = CMA_GENERATIONS) -> np.ndarray:
    """CMA-ES on normalised weights, one optimiser per problem run in lockstep; the best point
    seen (key: macro-F1, then log loss) is kept. Starts from equal weights."""
    from cmaes import CMA

    k_all, b = cands.shape[:2]
    seeds = rng.integers(0, 2**31 - 1, size=b)
    opts = [CMA(mean=np.full(k_all, 1.0 / k_all), sigma=CMA_SIGMA, seed=int(s)) for s in seeds]
    pop = opts[0].population_size
    best_f1, best_nll = np.full(b, -np.inf), np.full(b, -np.inf)
    best_w = np.full((b, k_all), 1.0 / k_all)
    for _ in range(generations):
        xs = np.array([[o.ask() for _ in range(pop)] for o in opts])  # (b, pop, K)
        ws = normalise_weights(xs, rounds)
        f1s, nlls = np.empty((pop, b)), np.empty((pop, b))
        for p in range(pop):
            probs = np.einsum("bk,kbnc->bnc", ws[:, p], cands)
            f1s[p], nlls[p] = _key(probs, labels, w)
            better = _better(f1s[p], nlls[p], best_f1, best_nll)
            best_f1, best_nll = np.where(better, f1s[p], best_f1), np.where(better, nlls[p], best_nll)
            best_w = np.where(better[:, None], ws[:, p], best_w)
        loss = -f1s + 1e-3 * -nlls  # minimised: macro-F1 first, log loss to break its plateaus
        for i, o in enumerate(opts):
            o.tell([(xs[i, p], float(loss[p, i])) for p in range(pop)])
    return best_w


# --- decision offsets ---------------------------------------------------------------------------
def fit_offsets_batch(logp: np.ndarray, labels: np.ndarray, w: np.ndarray, *, grid=OFFSET_GRID,
                      passes: int = OFFSET_PASSES) -> np.ndarray:
    """bundle._ensemble.fit_offsets per problem: coordinate ascent on weighted macro-F1.

    Every grid value of a class is scored in one call, then taken in grid order exactly as the
    loop over values would (a value is kept only for a strict gain); a pass that moves no
    problem ends the ascent, as fit_offsets' does."""
    b, _, c_all = logp.shape
    grid = np.asarray(grid, np.float64)
    offsets = np.zeros((b, c_all))
    best = batch_f1(logp.argmax(-1), labels, w, c_all)
    w_grid = np.broadcast_to(w, (grid.size, *w.shape)).reshape(-1, w.shape[-1])
    for _ in range(passes):
        moved = np.zeros(b, bool)
        for c in range(c_all):
            others = logp + offsets[:, None, :]
            others[..., c] = -np.inf
            other_arg, other_max = others.argmax(-1), others.max(-1)
            x = logp[None, ..., c] + grid[:, None, None]  # (G, b, N)
            preds = np.where((x > other_max) | ((x == other_max) & (c < other_arg)), c, other_arg)
            scores = batch_f1(preds.reshape(-1, preds.shape[-1]), labels, w_grid,
                              c_all).reshape(grid.size, b)
            for g, value in enumerate(grid):
                better = scores[g] > best + 1e-12
                best = np.where(better, scores[g], best)
                offsets[better, c] = value
                moved |= better
        if not moved.any():
            break
    return offsets


def checked_offsets_batch(probs: np.ndarray, labels: np.ndarray, w: np.ndarray,
                          rng: np.random.Generator, *, parts: int = OFFSET_CHECK_PARTS) -> np.ndarray:
    """bundle._ensemble.fit_checked_offsets per problem (b, N, C) -> (b, C) offsets applied.

    The same fit and cross-fitted check on the rows a problem weights; parts are stratified over
    its distinct rows (a row's copies stay in one part), and the gain's one-sided lower bound
    comes from an inner Poisson bootstrap of INNER_RESAMPLES (fewer than export's 1000)."""
    num_classes = probs.shape[-1]
    logp = np.log(np.clip(probs, 1e-12, None))
    fitted = fit_offsets_batch(logp, labels, w)
    present = w > 0
    distinct = np.stack([present[:, labels == c].sum(1) for c in np.unique(labels)], 1).min(1)
    k = int(min(parts, distinct.min()))
    if k < 2:
        return np.zeros_like(fitted)
    part = _stratified_parts(present, labels, k, rng)
    preds = logp.argmax(-1)
    for j in range(k):
        off = fit_offsets_batch(logp, labels, w * (part != j))
        held = part == j
        preds = np.where(held, (logp + off[:, None, :]).argmax(-1), preds)
    low = _gain_lower_bound(labels, preds, logp.argmax(-1), w, num_classes, rng)
    kept = fitted.any(1) & (low > 0)
    return np.where(kept[:, None], fitted, 0.0)


def _stratified_parts(present: np.ndarray, labels: np.ndarray, k: int, rng) -> np.ndarray:
    """(b, N) part id in 0..k-1 of each present row, stratified by class; -1 where absent."""
    keys = np.where(present, rng.random(present.shape), np.inf)
    part = np.full(present.shape, -1, np.int64)
    for c in np.unique(labels):
        cols = np.flatnonzero(labels == c)
        order = np.argsort(keys[:, cols], axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(cols.size)[None, :].repeat(len(keys), 0), axis=1)
        part[:, cols] = np.where(present[:, cols], ranks % k, -1)
    return part


def _gain_lower_bound(labels, preds, base, w, num_classes: int, rng) -> np.ndarray:
    """(b,) one-sided lower bound of weighted macro-F1(preds) - macro-F1(base).

    Each inner resample draws a row's weight from Poisson(w); the rows of one (label, pred,
    base) cell only ever count together, and a sum of Poissons is Poisson of the summed
    means, so the draw is one Poisson per cell (C**3 of them), not one per row."""
    b = preds.shape[0]
    c = num_classes
    cells = ((np.arange(b)[:, None] * c + labels[None, :]) * c + preds) * c + base
    means = np.bincount(cells.ravel(), weights=w.ravel(), minlength=b * c**3).reshape(b, c, c, c)
    inner = rng.poisson(means, size=(INNER_RESAMPLES, b, c, c, c)).astype(np.float64)
    f1_preds = macro_f1_from_confusion(inner.sum(4).reshape(-1, c, c)).reshape(INNER_RESAMPLES, b)
    f1_base = macro_f1_from_confusion(inner.sum(3).reshape(-1, c, c)).reshape(INNER_RESAMPLES, b)
    return np.quantile(f1_preds - f1_base, 1 - OFFSET_CHECK_LEVEL, axis=0)


def decide_batch(probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(b, N, C), (b, C) -> (b, N) class ids (bundle._ensemble.decide per problem)."""
    return (np.log(np.clip(probs, 1e-12, None)) + offsets[:, None, :]).argmax(-1)

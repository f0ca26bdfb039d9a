"""Process pool that decodes samples once each, with a tqdm progress bar on stderr.

Used by the cache build and by the audit for features still missing. Exercise: `histosweep prepare DATA --workers 2`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from histosweep.data._dataset import DataError, Sample
from histosweep.data._decode import load_mask, load_rgb
from histosweep.data._features import compute_features

# NOTE: below this many samples a pool costs more to start than it saves.
_INLINE_BELOW = 8


def _start_method() -> str:
    """fork only from a plain single-threaded process, else spawn.

    NOTE: fork needs no `if __name__ == "__main__"` guard in a caller's script, but forking a
    process with other threads (a worker's heartbeat thread, torch's pools, tqdm's monitor)
    copies locks those threads may hold, and the child can hang forever on one of them.
    """
    import threading

    plain = threading.active_count() == 1 and "torch" not in sys.modules
    return "fork" if plain and "fork" in multiprocessing.get_all_start_methods() else "spawn"


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start pool processes with SIGINT ignored: a Ctrl-C on the process group is for the
    caller to handle (it ends the pool), not a KeyboardInterrupt traceback from every pool
    process, even one still starting its interpreter.

    NOTE: an ignored signal is the one setting that survives fork and exec (a handler or a
    blocked mask does not reach a spawned interpreter). The price: a SIGINT to the caller in
    the milliseconds the pool takes to start is lost (press Ctrl-C again).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def default_workers(n_jobs: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_jobs // 4 or 1))


def decode_all(
    samples: list[Sample],
    targets,
    want_features: bool,
    *,
    workers=None,
    progress=True,
    desc="decode",
) -> Iterator[tuple]:
    """Yield (position, {spec: (arrays, fallback)}, features | None, mask_empty), any order;
    targets are data.InputSpec objects (each cuts the decoded image with spec.cut)."""
    from tqdm import tqdm

    jobs = [
        (i, s.image_path, s.mask_path, list(targets), want_features) for i, s in enumerate(samples)
    ]
    workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))
    method = _start_method()  # before tqdm: its bar starts a monitor thread, even when disabled
    bar = tqdm(
        total=len(jobs), desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False
    )
    with bar:
        if workers == 1 or len(jobs) < _INLINE_BELOW:
            for job in jobs:
                yield decode_sample(job)
                bar.update()
            return
        context = multiprocessing.get_context(method)
        with _sigint_ignored():
            pool = context.Pool(min(workers, len(jobs)))
        with pool:
            for result in pool.imap_unordered(decode_sample, jobs, chunksize=1):
                yield result
                bar.update()


def decode_sample(job: tuple) -> tuple:
    """Pool worker: (position, image, mask, targets, want_features) -> (position, arrays, features, empty)."""
    position, image_path, mask_path, targets, want_features = job
    image = load_rgb(image_path)
    raw_mask = load_mask(mask_path)
    if raw_mask.shape != (image.height, image.width):
        raise DataError(
            f"{mask_path}: mask is {raw_mask.shape[1]}x{raw_mask.shape[0]} but {Path(image_path).name} is "
            f"{image.width}x{image.height}; re-export the mask at the image's size"
        )
    features = compute_features(image, raw_mask) if want_features else None
    cuts = {spec: spec.cut(image, raw_mask) for spec in targets}  # raw_mask: (H, W) bool
    return position, cuts, features, not raw_mask.any()

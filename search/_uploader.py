"""The worker's background uploader: fold artifacts and pictures are written by one thread, in
order, while the next fold trains; the trial waits for them (and sees their errors) before it is
told to the study. Exercise: `pytest tests/search/test_uploader.py`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("histosweep")

# why 2: a waiting job holds a fold's weights in host memory (ConvNeXt-T + ResNet-18: ~0.2 GB);
# one uploading and one waiting already keep the next fold from ever waiting on a fast store.
MAX_PENDING = 2


class Uploader:
    """One daemon thread running submitted jobs in submission order (a bounded queue).

    A job's exception is kept and raised by `raise_if_failed`, `submit` and `wait` in the
    submitting thread, so an upload error fails the trial as a synchronous upload did (a
    StoreError stays a StoreError: the worker re-queues the trial). Jobs queued after a failed
    one are skipped; `wait` (the trial's end) clears the error for the next trial.

    NOTE: the thread is idle (blocked in the queue, holding no lock) whenever a trial starts,
    because the previous trial waited for its uploads: the image cache's decode pool, which
    forks at that point, never copies a lock held by an upload.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING, name: str = "histosweep-uploader") -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> None:
        """Queue `job`; blocks while `max_pending` jobs wait (back-pressure on host memory)."""
        self.raise_if_failed()
        self._jobs.put(job)

    @property
    def failed(self) -> bool:
        """A job failed since the last `wait`."""
        with self._lock:
            return self._error is not None

    def raise_if_failed(self) -> None:
        """Raise the error of a job that failed since the last `wait` (it stays until then)."""
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def wait(self) -> None:
        """Block until every submitted job has run; then raise the first error, if any.

        A stop signal arriving while waiting (WorkerStopped from the signal handler) still lets
        the running uploads finish first: a trial is never told while its uploads are in flight.
        """
        try:
            self._jobs.join()
        except BaseException:
            self._jobs.join()  # uploads take seconds; then the stop goes on
            raise
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def settle(self) -> BaseException | None:
        """Like `wait`, but returns the job error instead of raising it (a trial already failing
        for another reason reports that reason; the upload error is only logged)."""
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - handed back to the caller
            return exc
        return None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                with self._lock:
                    failed = self._error is not None
                if not failed:
                    job()
            except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                with self._lock:
                    self._error = exc
            finally:
                self._jobs.task_done()

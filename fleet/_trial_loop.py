"""The trial loop of one worker process: ask (gated so that --n-trials is exact over all
workers), run the objective under a heartbeat, tell; stop signals end the running trial, which
is re-queued; database and artifact-store outages are ridden out; a trial another worker took
over (its heartbeat looked stale) is left to it with one line.

Exercise: `histosweep worker STUDY --gpus cpu --n-trials 4` (fleet._supervisor starts it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

from histosweep.exceptions import one_line
from histosweep.fleet._db import (
    fail_stale,
    finished_elsewhere,
    gated_ask,
    heartbeat,
    is_db_outage,
    mark_owner,
    retry_db,
)
from histosweep.fleet._gc import retention_pass
from histosweep.fleet._options import WorkerOptions
from histosweep.search import (
    Runtime,
    UserError,
    WorkerStopped,
    budget_report,
    imported_finished,
    read_budget,
    spent_line,
)
from histosweep.storage import (
    StoreError,
    frozen_trial,
    probe_store,
    redact_text,
    retry_callback,
    study_storage,
    trial_id,
)

log = logging.getLogger("histosweep")
IDLE_POLL_S = 5.0  # how often an idle worker re-checks whether running trials freed a slot
MAX_CONSECUTIVE_FAILURES = 5  # a space that fails every trial should stop, not spin
# Fail reasons of trials that are re-queued (resumed from their finished folds), not counted as
# failures of the space: a stop signal, a database or artifact-store outage mid-trial.
REQUEUED = ("worker stopped", "database unavailable", "artifact store unavailable")
STORE_RETRY_S = 300.0  # how long an artifact store may keep failing before the worker gives up
STORE_BACKOFF_MAX_S = 30.0


class TrialTakenOver(Exception):
    """The running trial was failed and re-queued by another worker (raised at an epoch's end)."""


def _quiet_stop_hook(default):
    """sys.unraisablehook that turns a stop signal landing in a finaliser into one debug line
    (the trial stops at its next epoch instead); anything else goes to the previous hook."""
    if getattr(default, "histosweep_quiet", False):
        return default

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, (WorkerStopped, KeyboardInterrupt)):
            log.debug("stop signal arrived inside a finaliser; the trial stops at its next epoch")
            return
        default(unraisable)

    hook.histosweep_quiet = True
    return hook


class TrialLoop:
    """ask -> objective -> tell, gated so that --n-trials is exact across all workers."""

    def __init__(self, study, objective, opts: WorkerOptions, label: str, *, store=None) -> None:
        self.study = study
        self.objective = objective
        self.opts = opts
        self.label = label
        self.store = store  # probed after a store failure before the next trial (None: just wait)
        self.store_failing_since: float | None = None
        self.store_failures = 0
        self.stop = threading.Event()
        self.taken_over = threading.Event()  # set by the heartbeat thread (fleet._db.heartbeat)
        self.pid = os.getpid()
        self.in_trial = False
        self.finished_here = 0
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.last_store_failure = ""
        self.stopped_by: int | None = None  # the first stop signal received
        self.said_stopping = False
        self.say_lock = threading.Lock()
        self.say_thread: threading.Thread | None = None
        # NOTE: read once: trials are imported only when the study is created
        self.imported = retry_db(lambda: imported_finished(study)) if opts.n_trials else 0
        if isinstance(getattr(objective, "rt", None), Runtime):
            objective.rt.check_stop = self.raise_if_stopped  # checked at every epoch's end

    def raise_if_stopped(self) -> None:
        """Stop the running trial if a stop signal came: the backstop for a WorkerStopped that
        the handler raised inside a finaliser (a weakref callback), where Python swallows it."""
        if self.stop.is_set():
            raise WorkerStopped(_signal_name(self.stopped_by))
        if self.taken_over.is_set():
            raise TrialTakenOver("another worker took the trial over")

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        sys.unraisablehook = _quiet_stop_hook(sys.unraisablehook)
        start = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.opts.timeout and time.monotonic() - start >= self.opts.timeout:
                    log.info("timeout reached")
                    break
                trial = self._ask()
                if trial is False:
                    break
                if trial is None:
                    # others' running trials fill the study; one may still fail or die
                    self.stop.wait(min(IDLE_POLL_S, max(1.0, self.opts.heartbeat / 2)))
                    continue
                self._run_trial(trial)
                if self.store_failing_since is not None:
                    self._wait_for_store()
                if self.failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    raise UserError(
                        f"{self.failures_in_a_row} trials in a row failed on {self.label}; last: "
                        f"{self.last_failure} (see the worker log; fix the space or the data)"
                    )
        finally:
            # NOTE: once stopped, later stop signals stay no-ops (a Ctrl-C on the process group
            # reaches a slot twice: from the terminal and forwarded by its parent).
            for s, h in old.items():
                if self.stopped_by is None:
                    signal.signal(s, h)
        self._said_stopping()
        log.info("worker done: %d %s finished here", self.finished_here,
                 "trial" if self.finished_here == 1 else "trials")
        # NOTE: 128 + signal, as a shell reports a process the signal ended: schedulers
        # requeue on 143 (SIGTERM) and 130 (SIGINT); 0 would read as "study done".
        return 0 if self.stopped_by is None else 128 + self.stopped_by

    def _say_stopping(self) -> None:
        """Log the stop signal once (from a thread the handler starts, or at a safe point)."""
        if self.stopped_by is None:
            return
        with self.say_lock:
            if self.said_stopping:
                return
            self.said_stopping = True
        log.warning("received %s: stopping", signal.Signals(self.stopped_by).name)

    def _said_stopping(self) -> None:
        """Make sure the stop line is written before the worker's last lines."""
        if self.say_thread is not None:
            self.say_thread.join(timeout=5)
        self._say_stopping()

    def _on_signal(self, signum, _frame) -> None:
        if os.getpid() != self.pid:
            # NOTE: a forked helper (the cache's decode pool) inherited this handler; its pool
            # ends it with SIGTERM, which must simply end it, as without us.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = self.stopped_by is None
        if first:
            # NOTE: not logged here: the handler may run inside a log write to the same file
            # ("reentrant call inside BufferedWriter"); a thread waits for that write to end
            self.stopped_by = signum
            self.say_thread = threading.Thread(target=self._say_stopping, daemon=True)
            self.say_thread.start()
        self.stop.set()
        if self.in_trial and first:  # a second signal must not interrupt the clean stop
            raise WorkerStopped(signal.Signals(signum).name)

    def _ask(self):
        """A new trial, None when the study is full of running trials, False when done."""

        fail_stale(self.study)
        if self.stop.is_set() or retry_db(self._budget_spent):
            return False
        trial = gated_ask(self.study, self.opts.n_trials, imported=self.imported)
        if trial is False and not self.finished_here:  # say why a worker did nothing at all
            log.info("the study already holds its --n-trials %d finished trials: nothing to run "
                     "here; raise --n-trials to search further", self.opts.n_trials)
        if trial is not None and trial is not False:  # a new trial: say how it is kept alive
            retry_db(lambda: mark_owner(self.study, trial))
        return trial

    def _budget_spent(self) -> bool:
        """create --budget-gpu-hours / `histosweep budget --set`, read before every trial (it may
        change while workers run): spent -> one line, and no new trial is taken."""
        if read_budget(self.study) is None:  # one query: no trial is read without a budget
            return False
        report = budget_report(self.study)
        if report["spent"]:
            log.info(spent_line(report))
        return report["spent"]

    def _run_trial(self, trial) -> None:
        import optuna
        from optuna.trial import TrialState

        state, value, reason, error = TrialState.FAIL, None, None, None
        self.in_trial = True
        self.taken_over.clear()
        try:
            with heartbeat(trial_id(trial), study_storage(self.study), taken_over=self.taken_over):
                try:
                    if self.stop.is_set():  # signalled during the ask (in_trial was False then)
                        raise WorkerStopped(f"{_signal_name(self.stopped_by)} before the trial started")
                    value = self.objective(trial)
                    self.raise_if_stopped()  # the signal's own raise may have been swallowed
                    state = TrialState.COMPLETE
                except optuna.TrialPruned as exc:
                    state, reason = TrialState.PRUNED, str(exc)
                except WorkerStopped as exc:
                    self._said_stopping()
                    reason = f"worker stopped by {exc}; re-queued to resume"
                except Exception as exc:  # noqa: BLE001 - a bad trial must not kill the worker
                    error = exc
        finally:
            self.in_trial = False
        outage = is_db_outage(error)
        if outage:  # NOTE: said at once: the check below waits for the database to come back
            reason = self._failure_reason(trial, error)
        if retry_db(lambda: finished_elsewhere(self.study, trial)):
            self._taken_over(trial)
            return
        if error is not None and not outage:
            reason = self._failure_reason(trial, error)
        if not retry_db(lambda: self._tell(trial, state, value, reason)):
            self._taken_over(trial)  # failed by another worker between the check and the tell
            return
        if reason and reason.startswith(REQUEUED):
            retry_db(lambda: self._requeue(trial))
        self._log_result(trial, state, value, reason)
        keep_top = getattr(getattr(self.objective, "settings", None), "keep_top", 0)
        if keep_top:  # create --keep-top N: the same gc as `histosweep gc`, newly out-of-top only
            retention_pass(self.study, self.objective.rt.store, self.opts.artifacts, keep_top)

    @staticmethod
    def _failure_reason(trial, exc: Exception) -> str:
        reason = _reason(exc)
        if is_db_outage(exc):
            reason = f"database unavailable during the trial ({reason}); re-queued to resume"
        elif isinstance(exc, StoreError):
            reason = f"artifact store unavailable during the trial ({reason}); re-queued to resume"
        log.error("trial %d failed: %s", trial.number, reason)
        return reason

    @staticmethod
    def _taken_over(trial) -> None:
        """Another worker failed and re-queued this trial: not a failure of the space, and the
        retry (resumed from the finished folds) is that worker's; nothing to tell."""
        log.info("trial %d was taken over by another worker (its heartbeat looked stale); "
                 "moving on", trial.number)

    def _tell(self, trial, state, value, reason) -> bool:
        """Finish the trial as `state`; False when another worker had already failed it."""
        import optuna
        from optuna.trial import TrialState

        # NOTE: idempotent: retry_db re-runs this when the connection drops after the server
        # committed the finish; the retry then finds the trial finished and must not raise.
        if reason:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("fail_reason" if state == TrialState.FAIL else "pruned_reason", reason)
        told = self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                               skip_if_finished=True)
        # the stored state: ours, or another worker's FAIL (skip_if_finished kept it)
        return told.state == state

    def _wait_for_store(self) -> None:
        """Back off after a trial failed on the artifact store, as for a database outage: wait
        (doubling, at most STORE_BACKOFF_MAX_S) until a probe succeeds; give up with one line once
        the store has failed for STORE_RETRY_S. A stop signal ends the wait at once."""
        delay = min(2.0 ** (self.store_failures - 1), STORE_BACKOFF_MAX_S)
        while not self.stop.is_set():
            if time.monotonic() - self.store_failing_since >= STORE_RETRY_S:
                raise StoreError(f"the artifact store kept failing for {STORE_RETRY_S:.0f} s on "
                                 f"{self.label}; last: {self.last_store_failure}")
            log.warning("artifact store unavailable; retrying in %.1f s", delay)
            if self.stop.wait(delay):
                return
            try:
                if self.store is not None:
                    probe_store(self.store)
                return
            except StoreError as exc:
                self.last_store_failure = str(exc)
                delay = min(delay * 2, STORE_BACKOFF_MAX_S)

    def _requeue(self, trial) -> None:
        retry_callback()(self.study, frozen_trial(trial))

    def _log_result(self, trial, state, value, reason) -> None:
        from optuna.trial import TrialState

        if state != TrialState.FAIL:
            self.finished_here += 1
            self.failures_in_a_row = 0
        elif not (reason or "").startswith(REQUEUED):
            self.failures_in_a_row += 1
            self.last_failure = reason or "unknown"
        if (reason or "").startswith("artifact store unavailable"):
            self.store_failures += 1
            self.last_store_failure = reason
            if self.store_failing_since is None:
                self.store_failing_since = time.monotonic()
        else:  # the store worked for a whole trial (or the trial failed on its own)
            self.store_failing_since, self.store_failures = None, 0
        if state == TrialState.COMPLETE:
            log.info("trial %d complete: out-of-fold macro-F1 %.4f", trial.number, value)
        else:
            log.info("trial %d %s: %s", trial.number, state.name.lower(), reason)


def _signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum else "a stop request"


def _reason(exc: BaseException) -> str:
    """The exception's one line; an empty one through the gRPC proxy (Optuna's client raises a
    bare UpdateFinishedTrialError or KeyError) gets the server's details from its cause."""
    text = one_line(exc, limit=500)
    if not str(exc).strip():
        details = getattr(exc.__cause__, "details", None)
        detail = details() if callable(details) else None
        text = f"{text}: {detail}" if detail else f"{text} (no message)"
    return redact_text(text)

"""Database-facing steps of the trial loop: reaping dead workers' trials, the gated ask, retries.

The gate serialises "count finished+running, then ask" per study (PostgreSQL advisory lock
or a file lock for SQLite) so that `--n-trials N` gives exactly N finished trials. A trial is
judged stale against its owner's heartbeat interval (stored on the trial at the ask), never the
reaper's own; trials run through the gRPC proxy have no heartbeat and are never reaped.
Exercise: `histosweep worker STUDY --heartbeat 60` beside `histosweep worker STUDY --heartbeat 5`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import warnings
from typing import Any

from histosweep.storage import (
    grace_period_s,
    heartbeat_enabled,
    running_liveness,
    sql_engine,
    study_gate,
    study_id,
    study_storage,
    trial_counts,
    trial_id,
)

log = logging.getLogger("histosweep")
DB_RETRY_S = 60.0  # ride out a database restart this long before giving up
HEARTBEAT_ATTR = "heartbeat_s"  # trial system attr: its owner's heartbeat interval in seconds
PROXY_ATTR = "via_proxy"  # trial system attr: run through the gRPC proxy, so no heartbeat


def mark_owner(study, trial) -> None:
    """Record on a freshly asked trial how its owner keeps it alive: the owner's heartbeat
    interval (others judge it by that), or that it runs through the gRPC proxy (no heartbeat).

    NOTE: both attrs every time: a re-queued trial inherits its failed trial's system attrs,
    and a proxy trial retried by a direct worker must be reaped again if that worker dies.
    """
    storage = study_storage(study)
    tid = trial_id(trial)
    if sql_engine(storage) is None:  # the gRPC proxy: heartbeats do not pass through it
        storage.set_trial_system_attr(tid, PROXY_ATTR, True)
        storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, None)
        return
    interval = storage.get_heartbeat_interval() if heartbeat_enabled(storage) else None
    storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, interval)
    storage.set_trial_system_attr(tid, PROXY_ATTR, False)


def owner_grace_s(system_attrs: dict[str, Any], own_grace_s: float) -> float | None:
    """Seconds of silence after which a RUNNING trial is taken for dead: twice its owner's
    heartbeat interval; None (never) for a trial run through the gRPC proxy. A trial with no
    interval recorded (its owner asked it a moment ago, or predates this) gets the reaper's own."""
    if system_attrs.get(PROXY_ATTR):
        return None
    interval = system_attrs.get(HEARTBEAT_ATTR)
    return 2.0 * float(interval) if interval else own_grace_s


def fail_stale(study) -> None:
    """Fail the RUNNING trials whose worker died and re-queue them: silent for longer than their
    owner's grace (owner_grace_s), counted from the last heartbeat, or from the start when the
    worker died before its first beat (Optuna's own check skips those: they would hold a
    --n-trials slot forever)."""
    storage = study_storage(study)
    if not heartbeat_enabled(storage):  # the gRPC proxy: no heartbeats to judge by
        return
    retry_db(lambda: _fail_stale(study, storage))


def _fail_stale(study, storage) -> None:
    from optuna.trial import TrialState

    own = grace_period_s(storage)
    sid = study_id(study)
    # NOTE: the attrs first: a trial asked after this read is skipped (it was just started)
    running = {trial_id(t): t.system_attrs for t in
               storage.get_all_trials(sid, deepcopy=False, states=(TrialState.RUNNING,))}
    failed = []
    for live in running_liveness(storage, sid):
        attrs = running.get(live.trial_id)
        grace = None if attrs is None else owner_grace_s(attrs, own)
        if grace is None or live.age_s <= grace:
            continue
        if _fail(storage, live.trial_id):
            failed.append(live.trial_id)
            _log_reaped(live, attrs)
    callback = storage.get_heartbeat_stale_trial_callback()
    for tid in failed if callback is not None else []:
        with warnings.catch_warnings():  # the retry callback is marked experimental
            warnings.simplefilter("ignore")
            callback(study, copy.deepcopy(storage.get_trial(tid)))


def _fail(storage, tid: int) -> bool:
    import optuna
    from optuna.trial import TrialState

    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
        return bool(storage.set_trial_state_values(tid, state=TrialState.FAIL))
    return False


def _log_reaped(live, attrs: dict[str, Any]) -> None:
    if not live.beaten:
        log.warning("trial %d never sent a heartbeat in %.0f s: failed and re-queued",
                    live.number, live.age_s)
        return
    every = attrs.get(HEARTBEAT_ATTR)
    owner = f"its worker beats every {every} s" if every else "its worker's interval unknown"
    log.warning("trial %d sent no heartbeat for %.0f s (%s): failed and re-queued",
                live.number, live.age_s, owner)


def finished_elsewhere(study, trial) -> bool:
    """Whether a trial this worker runs is already finished in the storage: another worker took
    it for dead (its heartbeat looked stale) and failed and re-queued it."""
    return study_storage(study).get_trial(trial_id(trial)).state.is_finished()


def gated_ask(study, n_trials: int | None, *, imported: int = 0):
    """A new RUNNING trial; None if the running trials already fill N; False when N finished.

    imported: finished trials create --warm-start copied in (search.imported_finished); they
    are the study's history, not its work, so N counts the trials run here.
    """

    def attempt():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            if n_trials is None:
                return study.ask()
            with study_gate(study_storage(study), study.study_name):
                c = trial_counts(study)
                finished = c["COMPLETE"] + c["PRUNED"] - imported
                if finished >= n_trials:
                    return False
                if finished + c["RUNNING"] >= n_trials:
                    return None
                return study.ask()

    return retry_db(attempt)


def retry_db(fn, *, budget_s: float = DB_RETRY_S):
    """Call fn, retrying on lost database connections (server restart, idle drop)."""
    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_db_outage(exc) or time.monotonic() >= deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", outage_name(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def is_db_outage(exc: BaseException | None) -> bool:
    """A lost or refused database connection, also where Optuna wrapped it.

    NOTE: Optuna's RDBStorage re-raises every SQLAlchemy error of a storage call as
    StorageInternalError, so the connection error is found on the exception's cause chain.
    """
    import sqlalchemy.exc

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def outage_name(exc: BaseException) -> str:
    """The driver's exception name (e.g. OperationalError) behind a database outage."""
    for _ in range(10):  # Optuna error -> SQLAlchemy error -> driver error
        inner = getattr(exc, "orig", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return type(exc).__name__


@contextlib.contextmanager
def heartbeat(trial_id_: int, storage, *, taken_over: threading.Event | None = None):
    """Record a trial's heartbeat every interval in a thread that rides out database outages;
    sets `taken_over` (and stops beating) once the trial is found finished by another worker.

    NOTE: Optuna's own heartbeat thread dies on the first failed write (a server restart), after
    which the live trial looks dead and another worker would fail and re-run it.
    """
    if not heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id_)
                if taken_over is not None and storage.get_trial(trial_id_).state.is_finished():
                    taken_over.set()  # the trial loop stops the trial at its next epoch
                    return
            except Exception as exc:
                if not is_db_outage(exc):
                    raise
                log.warning("heartbeat not recorded, database unavailable (%s); retrying",
                            outage_name(exc))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id_}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

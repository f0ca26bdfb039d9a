"""Database-facing steps of the trial loop: stale-trial failing, the gated ask, retries.

The gate serialises "count finished+running, then ask" per study (PostgreSQL advisory lock
or a file lock for SQLite) so that `--n-trials N` gives exactly N finished trials.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings

from histosweep.storage import (
    grace_period_s,
    heartbeat_enabled,
    start_ages,
    study_gate,
    study_id,
    study_storage,
    trial_counts,
)

log = logging.getLogger("histosweep")
DB_RETRY_S = 60.0  # ride out a database restart this long before giving up


def fail_stale(study) -> None:
    """Fail trials whose worker died (heartbeat older than the grace period) and re-queue them;
    also RUNNING trials that never had a heartbeat, once their start is older than the grace."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_db(lambda: optuna.storages.fail_stale_trials(study))
        retry_db(lambda: _fail_never_beaten(study))


def _fail_never_beaten(study) -> None:
    """Optuna's check skips a RUNNING trial without a heartbeat row (the ask committed, then the
    worker died before its first beat): it would hold a --n-trials slot forever."""
    import copy

    import optuna
    from optuna.trial import TrialState

    storage = study_storage(study)
    if not heartbeat_enabled(storage):
        return
    grace = grace_period_s(storage)
    failed = []
    for trial_id, (number, age) in start_ages(storage, study_id(study)).items():
        if age <= grace:
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                log.warning("trial %d never sent a heartbeat in %.0f s: failed and re-queued",
                            number, age)
                failed.append(trial_id)
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in failed if callback is not None else []:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))


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
def heartbeat(trial_id: int, storage):
    """Record a trial's heartbeat every interval in a thread that rides out database outages.

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
                storage.record_heartbeat(trial_id)
            except Exception as exc:
                if not is_db_outage(exc):
                    raise
                log.warning("heartbeat not recorded, database unavailable (%s); retrying",
                            outage_name(exc))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

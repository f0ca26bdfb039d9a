"""Database-facing steps of the trial loop: stale-trial failing, the gated ask, retries.

The gate serialises "count finished+running, then ask" per study (PostgreSQL advisory lock
or a file lock for SQLite) so that `--n-trials N` gives exactly N finished trials.
"""

from __future__ import annotations

import logging
import time
import warnings

log = logging.getLogger("histosweep")
DB_RETRY_S = 60.0  # ride out a database restart this long before giving up


def fail_stale(study) -> None:
    """Fail trials whose worker died (heartbeat older than the grace period) and re-queue them."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_db(lambda: optuna.storages.fail_stale_trials(study))


def gated_ask(study, n_trials: int | None):
    """A new RUNNING trial; None if the running trials already fill N; False when N finished."""
    from storage import count_trials_by_state, study_gate

    def attempt():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            if n_trials is None:
                return study.ask()
            with study_gate(study._storage, study.study_name):
                c = count_trials_by_state(study._storage, study._study_id)
                finished = c["COMPLETE"] + c["PRUNED"]
                if finished >= n_trials:
                    return False
                if finished + c["RUNNING"] >= n_trials:
                    return None
                return study.ask()

    return retry_db(attempt)


def retry_db(fn, *, budget_s: float = DB_RETRY_S):
    """Call fn, retrying on lost database connections (server restart, idle drop)."""
    import sqlalchemy.exc

    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return fn()
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s",
                        type(exc.orig or exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

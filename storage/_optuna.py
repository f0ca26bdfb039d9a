"""Small, fast queries on Optuna's RDB schema that the public API answers slowly.

Counting trials by state is one GROUP BY instead of loading every trial (which grows with the
study); the study gate serialises "count, then ask" across workers on all machines so that
`--n-trials N` is exact. Exercise: `histosweep worker STUDY --n-trials N` on several machines.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from histosweep.storage._errors import StorageError

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _rdb(storage):
    """The RDBStorage under Optuna's cache wrapper."""
    return getattr(storage, "_backend", storage)


def _has_engine(storage) -> bool:
    return hasattr(_rdb(storage), "engine")


def count_trials_by_state(storage, study_id: int) -> dict[str, int]:
    import sqlalchemy as sa

    if not _has_engine(storage):  # gRPC proxy: no SQL, count through the storage API
        counts = dict.fromkeys(STATES, 0)
        for t in storage.get_all_trials(study_id, deepcopy=False):
            counts[t.state.name] += 1
        return counts
    engine = _rdb(storage).engine
    query = sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state")
    counts = dict.fromkeys(STATES, 0)
    with engine.connect() as conn:
        for state, n in conn.execute(query, {"sid": study_id}):
            counts[str(getattr(state, "name", state))] = int(n)
    return counts


def heartbeat_ages(storage, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial, by trial number; a trial with no
    heartbeat row yet (its worker died between the ask and the first beat) counts from its
    datetime_start (see start_ages)."""
    import sqlalchemy as sa

    if not _has_engine(storage):
        return {}
    engine = _rdb(storage).engine
    query = sa.text(
        "SELECT t.number, MAX(h.heartbeat) FROM trials t JOIN trial_heartbeats h "
        "ON h.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'RUNNING' "
        "GROUP BY t.number"
    )
    now_query = sa.text("SELECT CURRENT_TIMESTAMP")
    with engine.connect() as conn:
        now = _naive(conn.execute(now_query).scalar())
        rows = conn.execute(query, {"sid": study_id}).all()
    ages = {int(n): max(0.0, (now - _naive(ts)).total_seconds()) for n, ts in rows}
    return {**{n: age for _, (n, age) in start_ages(storage, study_id).items()}, **ages}


def start_ages(storage, study_id: int) -> dict[int, tuple[int, float]]:
    """trial_id -> (number, seconds since datetime_start) of RUNNING trials without any
    heartbeat row: Optuna's stale-trial check skips them, so nothing else would ever fail them.

    NOTE: Optuna writes datetime_start with the asking machine's local clock
    (datetime.now()), heartbeats with the database's; the age is measured on this machine's
    local clock, like datetime_start (workers' clocks and time zones should agree).
    """
    import sqlalchemy as sa

    if not _has_engine(storage):
        return {}
    query = sa.text(
        "SELECT t.trial_id, t.number, t.datetime_start FROM trials t WHERE t.study_id = :sid "
        "AND t.state = 'RUNNING' AND NOT EXISTS "
        "(SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
    )
    with _rdb(storage).engine.connect() as conn:
        rows = conn.execute(query, {"sid": study_id}).all()
    now = datetime.datetime.now()
    return {
        int(tid): (int(n), max(0.0, (now - _naive(ts)).total_seconds()) if ts is not None else 0.0)
        for tid, n, ts in rows
    }


def set_finished_user_attr(storage, trial_id: int, key: str, value) -> None:
    """Set a user attr on a trial that may be finished (Optuna refuses that): one upsert.

    Only for bookkeeping after the fact (`histosweep gc` records `checkpoints_deleted`); a
    process that cached the trial keeps its old copy, so readers of such attrs ask
    `trials_with_user_attr`.
    """
    import json

    import sqlalchemy as sa

    if not _has_engine(storage):
        raise StorageError("this needs the database itself, not the gRPC storage proxy: "
                           "pass --storage with the database URL")
    query = sa.text(
        "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:tid, :key, :val) "
        "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"
    )
    with _rdb(storage).engine.begin() as conn:
        conn.execute(query, {"tid": trial_id, "key": key, "val": json.dumps(value)})


def trials_with_user_attr(storage, study_id: int, key: str) -> set[int]:
    """trial_ids of the study's trials that hold user attr `key`, read from the database."""
    import sqlalchemy as sa

    if not _has_engine(storage):
        raise StorageError("this needs the database itself, not the gRPC storage proxy: "
                           "pass --storage with the database URL")
    query = sa.text(
        "SELECT a.trial_id FROM trial_user_attributes a JOIN trials t ON t.trial_id = a.trial_id "
        "WHERE t.study_id = :sid AND a.key = :key"
    )
    with _rdb(storage).engine.connect() as conn:
        return {int(r[0]) for r in conn.execute(query, {"sid": study_id, "key": key})}


def _naive(value) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=None) if value.tzinfo else value


@contextlib.contextmanager
def study_gate(storage, study_name: str) -> Iterator[None]:
    """Mutual exclusion per study across processes and machines.

    PostgreSQL: a session advisory lock (works across machines). SQLite: an fcntl lock on a
    file beside the database (SQLite is one machine by nature).
    """
    rdb = _rdb(storage)
    if not _has_engine(storage):  # gRPC proxy: no lock to take; --n-trials may overshoot by a few
        yield
        return
    url = str(rdb.url)
    if url.startswith("sqlite"):
        with _file_lock(_sqlite_lock_path(url, study_name)):
            yield
        return
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    import sqlalchemy as sa

    with rdb.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _sqlite_lock_path(url: str, study_name: str) -> Path:
    db = url.split("///", 1)[-1] or "memory"
    digest = hashlib.sha256(study_name.encode()).hexdigest()[:12]
    return Path(f"{db}.{digest}.lock")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

"""The one door to Optuna's internals: every private attribute, private import and raw SQL
statement on Optuna's tables that histosweep relies on lives here, each with why the public API
does not serve. An Optuna upgrade that moves one fails tests/storage/test_optuna_door.py first.

Small, fast queries on Optuna's RDB schema that the public API answers slowly: counting trials
by state is one GROUP BY instead of loading every trial (which grows with the study); the study
gate serialises "count, then ask" across workers on all machines so that `--n-trials N` is exact.
Exercise: `histosweep worker STUDY --n-trials N` on several machines.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from histosweep.storage._errors import StorageError

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _rdb(storage):
    """The RDBStorage under Optuna's cache wrapper."""
    # private: _CachedStorage has no public accessor for the storage it wraps
    return getattr(storage, "_backend", storage)


def study_storage(study):
    """The storage a study object reads and writes (what `optuna.load_study` was given)."""
    # private: Study has no public storage accessor; trial-level calls need the storage itself
    return study._storage


def study_id(study) -> int:
    """The id of a Study or FrozenStudy in its storage (the key of every storage call about it)."""
    # private: the public way (get_study_id_from_name) is a database round trip per call
    return study._study_id


def trial_id(trial) -> int:
    """The storage id of a Trial or FrozenTrial (not its number)."""
    # private: Trial/FrozenTrial expose only `number`; storage calls take the trial id
    return trial._trial_id


def frozen_trial(trial):
    """The stored FrozenTrial of a live Trial (its attrs as the database holds them now)."""
    return study_storage(trial.study).get_trial(trial_id(trial))


def heartbeat_enabled(storage) -> bool:
    """Whether the storage records heartbeats (open_storage(..., heartbeat=S))."""
    # private import: optuna.storages has no public is_heartbeat_enabled
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage))


def grace_period_s(storage) -> float:
    """Seconds after the last heartbeat when Optuna takes a trial for dead."""
    grace = getattr(_rdb(storage), "grace_period", None)  # public on RDBStorage, not on the cache
    return float(grace if grace is not None else 2 * storage.get_heartbeat_interval())


def link_artifact(storage, trial_id_: int, meta: dict) -> None:
    """List an artifact (already written to the store) on a trial, as upload_artifact does."""
    import json

    # private import: upload_artifact registers before it writes; we write first, then list it
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    storage.set_trial_system_attr(trial_id_, ARTIFACTS_ATTR_PREFIX + meta["artifact_id"],
                                  json.dumps(meta))


def linked_artifact_ids(frozen_trial_) -> list[str]:
    """Ids of the artifacts listed on a FrozenTrial (from its system attrs, no storage call)."""
    # private import: the attr prefix; get_all_artifact_meta costs a storage call per trial
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    return [k[len(ARTIFACTS_ATTR_PREFIX):] for k in frozen_trial_.system_attrs
            if k.startswith(ARTIFACTS_ATTR_PREFIX)]


def folder_store_path(store) -> str | None:
    """The folder of a FileSystemArtifactStore (None for any other store)."""
    # private: FileSystemArtifactStore keeps its folder only in _base_path
    path = getattr(store, "_base_path", None)
    return None if path is None else str(path)


def trial_number_qmc_sampler(*, seed: int | None, independent_sampler):
    """optuna's scrambled-Sobol QMCSampler whose point index is the trial's number.

    Optuna keeps the next index in a study attribute that it reads and then writes (its own
    comment: "only ensures that each sample_id is sampled at least once"), so two workers
    asking at the same moment get the same point. A trial number is unique in the study by the
    storage's own transaction: one shared sequence, never a repeat (enqueued trials leave gaps).
    """
    from optuna.samplers import QMCSampler

    class TrialNumberQMCSampler(QMCSampler):
        def sample_relative(self, study, trial, search_space):
            self._trial_number = trial.number
            return super().sample_relative(study, trial, search_space)

        # private hook: QMCSampler has no public way to choose the point index
        def _find_sample_id(self, study, search_space) -> int:
            return self._trial_number

    return TrialNumberQMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                 independent_sampler=independent_sampler,
                                 warn_independent_sampling=False)


def _has_engine(storage) -> bool:
    return hasattr(_rdb(storage), "engine")


def sql_engine(storage):
    """The SQLAlchemy engine under a (cached) RDBStorage; None for the gRPC proxy."""
    return getattr(_rdb(storage), "engine", None)


def trial_counts(study) -> dict[str, int]:
    """The study's trials by state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    return count_trials_by_state(study_storage(study), study_id(study))


def count_trials_by_state(storage, study_id: int) -> dict[str, int]:
    import sqlalchemy as sa

    if not _has_engine(storage):  # gRPC proxy: no SQL, count through the storage API
        counts = dict.fromkeys(STATES, 0)
        for t in storage.get_all_trials(study_id, deepcopy=False):
            counts[t.state.name] += 1
        return counts
    engine = _rdb(storage).engine
    # raw SQL: get_all_trials loads every trial to count them (slow at 1000s of trials)
    query = sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state")
    counts = dict.fromkeys(STATES, 0)
    with engine.connect() as conn:
        for state, n in conn.execute(query, {"sid": study_id}):
            counts[str(getattr(state, "name", state))] = int(n)
    return counts


@dataclass(frozen=True)
class Liveness:
    """How long a RUNNING trial has been silent: seconds since its last heartbeat row (the
    database's clock), or, with no row yet, since its datetime_start (see start_ages)."""

    trial_id: int
    number: int
    age_s: float
    beaten: bool  # it has a heartbeat row


def running_liveness(storage, study_id: int) -> list[Liveness]:
    """The Liveness of every RUNNING trial of the study (empty for the gRPC proxy: no SQL)."""
    import sqlalchemy as sa

    if not _has_engine(storage):
        return []
    # raw SQL: Optuna has no public read of heartbeat times (only fail_stale_trials uses them,
    # with one grace period for all trials; workers judge each trial by its owner's interval)
    query = sa.text(
        "SELECT t.trial_id, t.number, MAX(h.heartbeat) FROM trials t JOIN trial_heartbeats h "
        "ON h.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'RUNNING' "
        "GROUP BY t.trial_id, t.number"
    )
    now_query = sa.text("SELECT CURRENT_TIMESTAMP")
    with _rdb(storage).engine.connect() as conn:
        now = _naive(conn.execute(now_query).scalar())
        rows = conn.execute(query, {"sid": study_id}).all()
    beaten = [Liveness(int(tid), int(n), max(0.0, (now - _naive(ts)).total_seconds()), True)
              for tid, n, ts in rows]
    silent = [Liveness(tid, n, age, False)
              for tid, (n, age) in start_ages(storage, study_id).items()]
    return sorted(beaten + silent, key=lambda live: live.number)


def heartbeat_ages(storage, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial, by trial number; a trial with no
    heartbeat row yet (its worker died between the ask and the first beat) counts from its
    datetime_start (see start_ages)."""
    return {live.number: live.age_s for live in running_liveness(storage, study_id)}


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
    # raw SQL: "has no heartbeat row" is not visible through any public API
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
    # raw SQL: set_trial_user_attr refuses finished trials (UpdateFinishedTrialError)
    query = sa.text(
        "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:tid, :key, :val) "
        "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"
    )
    with _rdb(storage).engine.begin() as conn:
        conn.execute(query, {"tid": trial_id, "key": key, "val": json.dumps(value)})


def trials_with_user_attr(storage, study_id: int, key: str) -> set[int]:
    """trial_ids of the study's trials that hold user attr `key`, read from the database."""
    return set(user_attr_values(storage, study_id, key))


def user_attr_values(storage, study_id: int, key: str) -> dict[int, object]:
    """trial_id -> value of user attr `key` of the study's trials, read from the database."""
    import json

    import sqlalchemy as sa

    if not _has_engine(storage):
        raise StorageError("this needs the database itself, not the gRPC storage proxy: "
                           "pass --storage with the database URL")
    # raw SQL: cached storages keep stale copies of finished trials; this reads the database
    query = sa.text(
        "SELECT a.trial_id, a.value_json FROM trial_user_attributes a "
        "JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = :sid AND a.key = :key"
    )
    with _rdb(storage).engine.connect() as conn:
        return {int(tid): json.loads(value)
                for tid, value in conn.execute(query, {"sid": study_id, "key": key})}


def delete_study_system_attr(storage, study_id: int, key: str) -> None:
    """Remove a study system attr (export-best's lease when the export ends); through the gRPC
    proxy, where there is no SQL, it is set to None instead (readers take None as absent)."""
    import sqlalchemy as sa

    if not _has_engine(storage):
        storage.set_study_system_attr(study_id, key, None)
        return
    # raw SQL: Optuna can set a study system attr but has no call that removes one
    query = sa.text("DELETE FROM study_system_attributes WHERE study_id = :sid AND key = :key")
    with _rdb(storage).engine.begin() as conn:
        conn.execute(query, {"sid": study_id, "key": key})


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

    # raw SQL: a PostgreSQL advisory lock on Optuna's own connection; Optuna has no lock API
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

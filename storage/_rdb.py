"""Open the Optuna RDB storage with engine options that survive real deployments.

PostgreSQL: pre-ping + recycled pool so idle drops and server restarts are survived.
SQLite: a busy timeout so several local workers do not fail on "database is locked".
Heartbeats + RetryHeartbeatStaleTrialCallback re-queue the trials of dead workers.
"""

from __future__ import annotations

from typing import Any

from histosweep.storage._errors import StorageError
from histosweep.storage._url import is_grpc, is_sqlite, redact, redact_text, resolve_storage_url

DEFAULT_HEARTBEAT_S = 60
DEFAULT_MAX_RETRY = 3
GRPC_CONNECT_TIMEOUT_S = 10


def engine_options(url: str) -> dict[str, Any]:
    if is_sqlite(url):
        # NOTE: 60 s busy timeout: local workers write rarely but may collide on tell().
        return {"connect_args": {"timeout": 60}}
    return {
        "pool_pre_ping": True,  # detect connections the server dropped while we trained
        "pool_recycle": 300,  # never reuse a connection older than 5 minutes
        "pool_size": 2,  # one worker process needs few: main thread + heartbeat thread
        "max_overflow": 4,
        "connect_args": {"connect_timeout": 10},
    }


def open_storage(
    url: str | None = None,
    *,
    heartbeat: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = DEFAULT_MAX_RETRY,
    create: bool = True,
):
    """An optuna RDBStorage for `url` (resolved); heartbeats when `heartbeat` seconds given.

    create=False (commands that read an existing study): a SQLite file that does not exist is
    an error instead of a new empty database left behind (a typo in the path, the wrong folder).
    """
    import optuna
    import sqlalchemy.exc

    url = resolve_storage_url(url)
    if is_grpc(url):
        return _open_grpc(url)
    _check_sqlite_path(url, create=create)
    kwargs: dict[str, Any] = {"engine_kwargs": engine_options(url)}
    try:
        with _quiet_experimental():
            if heartbeat:
                kwargs.update(
                    heartbeat_interval=int(heartbeat),
                    grace_period=int(grace_period or 2 * heartbeat),
                    heartbeat_stale_trial_callback=retry_callback(max_retry),
                )
            storage = optuna.storages.RDBStorage(url, **kwargs)
        if is_sqlite(url):
            _sqlite_wal(storage.engine)
        return storage
    except sqlalchemy.exc.OperationalError as exc:
        reason = redact_text(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
        hint = (
            "check that the file and its folder are writable, on a local disk, and not locked"
            if is_sqlite(url)
            else "check the host, port, user and password, and that the server is running"
        )
        raise StorageError(f"cannot open storage {redact(url)}: {reason} ({hint})") from None
    except sqlalchemy.exc.DatabaseError as exc:  # e.g. a file that is not an SQLite database
        reason = redact_text(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
        raise StorageError(
            f"cannot use storage {redact(url)}: {reason} (is it the study database? "
            "give the right file or URL with --storage or $HISTOSWEEP_STORAGE)"
        ) from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise StorageError(f"bad storage URL {redact(url)}: {redact_text(str(exc))}") from None


def check_sqlite_folder(url: str | None) -> None:
    """Refuse, without writing anything, a SQLite URL whose folder is missing (or is a file):
    sqlite would only say "unable to open database file". For `create`, before the data audit."""
    _check_sqlite_path(resolve_storage_url(url), create=True)


def _check_sqlite_path(url: str, *, create: bool) -> None:
    """create=True: the folder must exist; create=False: the file must (a typo in the path, the
    wrong folder, is not a new empty database left behind)."""
    from histosweep.storage._atomic import not_a_folder

    path = _sqlite_file(url)
    if path is None:
        return
    path, folder = path.absolute(), path.absolute().parent
    if create and not folder.is_dir():
        why = not_a_folder(folder) or f"{folder} does not exist"
        raise StorageError(
            f"no folder for the SQLite database {path} (storage {redact(url)}): {why}; create "
            "the folder or fix the path in --storage or $HISTOSWEEP_STORAGE"
        )
    if not create and not path.is_file():
        missing = "" if folder.is_dir() else f"; its folder {folder} does not exist"
        raise StorageError(
            f"no SQLite database at {path} (storage {redact(url)}{missing}): create a study "
            "first (histosweep create STUDY --data DATA), or point --storage or "
            "$HISTOSWEEP_STORAGE at the study's database"
        )


def _sqlite_file(url: str):
    """The file a SQLite URL names; None for other URLs, :memory: and file: URIs."""
    from pathlib import Path

    import sqlalchemy.engine

    if not is_sqlite(url):
        return None
    database = sqlalchemy.engine.make_url(url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_wal(engine) -> None:
    """WAL journal + synchronous=NORMAL: readers stop blocking the writer and a commit costs one
    fsync instead of ~3 (bench/storage.py: 8 workers x 1000 trials 120 s -> 89 s)."""
    import sqlalchemy as sa

    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sa.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened during schema setup lack the pragma
    if ":memory:" not in str(engine.url):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # persistent in the file


def _open_grpc(url: str):
    """Optuna's gRPC storage proxy (`histosweep storage-proxy`). NOTE: no heartbeats through it,
    so a dead worker's trial is not retried; workers that need resume connect to the database."""
    address = url[len("grpc://") :].rstrip("/")
    host, _, port = address.partition(":")
    if "@" in address or "/" in address or not (port or "13000").isdigit():
        raise StorageError(
            f"bad storage URL {redact(url)!r}: a storage proxy is grpc://HOST:PORT, with no user, "
            "password or path (the proxy holds the database's credentials)"
        )
    host = host or "127.0.0.1"
    try:
        from optuna.storages import GrpcStorageProxy
    except ImportError:
        raise StorageError(f"storage {url} needs grpcio: pip install 'histosweep[grpc]'") from None
    with _quiet_experimental():
        proxy = GrpcStorageProxy(host=host, port=int(port or 13000))
    try:
        proxy.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        proxy.close()
        raise StorageError(
            f"no storage proxy answers at {url} within {GRPC_CONNECT_TIMEOUT_S} s: start it "
            "(histosweep storage-proxy) or check the host and port"
        ) from None
    return proxy


def retry_callback(max_retry: int | None = DEFAULT_MAX_RETRY):
    """Optuna 5's RetryHeartbeatStaleTrialCallback: re-queue a failed trial as WAITING."""
    import optuna

    with _quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


class _quiet_experimental:
    """Silence Optuna's ExperimentalWarning for the heartbeat arguments we rely on."""

    def __enter__(self):
        import warnings

        import optuna

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

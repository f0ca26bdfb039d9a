"""Shared fixtures: a throwaway PostgreSQL database, a tiny synthetic dataset, an isolated cache.

PostgreSQL tests skip when the server is unreachable, unless HISTOSWEEP_REQUIRE_POSTGRES=1
(set by .ci/run): then they fail, so CI can never pass by skipping the database.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PG_ADMIN_DSN = os.environ.get("HISTOSWEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("HISTOSWEEP_REQUIRE_POSTGRES") == "1"


def _pg_admin_connect():
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin DSN of a reachable PostgreSQL server (skip or fail when there is none)."""
    import psycopg2

    try:
        _pg_admin_connect().close()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL unreachable at {PG_ADMIN_DSN}: {str(exc).strip()}"
        if REQUIRE_PG:
            pytest.fail(message + " (HISTOSWEEP_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    return PG_ADMIN_DSN


@pytest.fixture()
def pg_url(pg_server: str):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"histosweep_test_{uuid.uuid4().hex[:12]}"
    conn = _pg_admin_connect()
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    yield f"{base}/{name}"
    conn = _pg_admin_connect()
    cur = conn.cursor()
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


@pytest.fixture()
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory) -> Path:
    """Keep every test's image cache out of the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["HISTOSWEEP_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the challenge layout (read-only for tests)."""
    from histosweep.data import synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, n_train=64, n_test=12, seed=0, short_side=96)
    return root

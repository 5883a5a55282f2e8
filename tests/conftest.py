"""Shared fixtures: store backends (memory, a real SQLite file, a real PostgreSQL
server) and both manager twins behind one awaitable view.

PostgreSQL comes from $PITSTOP_TEST_PG_URL; an unreachable server skips the
postgres tests, except under CI=true where it fails them. Each test gets its
own PostgreSQL schema (or database), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from twins import MakeTwin, Twin

import pitstop._policy
from pitstop import CheckpointManager, MemoryStore, SqlStore, Store, SyncCheckpointManager

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
_pg_down: str | None = None
"""Why PostgreSQL was unreachable, remembered so later tests do not wait again."""

STORE_BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SQL_BACKENDS = STORE_BACKENDS[1:]
TWINS = [pytest.param("sync", id="sync"), pytest.param("async", id="async")]


@pytest.fixture(autouse=True)
def _deltas_at_any_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Most tests build runs of a few nodes to exercise deltas, chains and their
    verification; by default such a small run is saved whole at every save
    (``CheckpointPolicy.snapshot_small``). So policies made in a test default to
    0 there, unless the test is marked ``small_snapshots`` (the tests of that
    default; the example and crash tests run it in their own processes)."""
    if request.node.get_closest_marker("small_snapshots") is None:
        monkeypatch.setattr(pitstop._policy, "SNAPSHOT_SMALL", 0)


def pg_url() -> str:
    url = os.environ.get("PITSTOP_TEST_PG_URL", DEFAULT_PG_URL)
    return url.replace("+asyncpg", "").replace("+psycopg", "")


def _pg_unavailable(reason: str) -> None:
    global _pg_down
    _pg_down = reason
    message = f"PostgreSQL at {pg_url()} is unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: postgres tests must run; set PITSTOP_TEST_PG_URL)")
    pytest.skip(message)


@contextmanager
def pg_admin() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test server (skips or fails when unreachable)."""
    if _pg_down is not None:
        _pg_unavailable(_pg_down)
    try:
        conn = psycopg.connect(pg_url(), autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _pg_unavailable(f"{type(exc).__name__}: {exc}")
        raise
    with conn:
        yield conn


def rows_of(target: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own to ``target`` (a SQLite path or
    a PostgreSQL URL), committed; the rows it returns."""
    if target.startswith("postgresql"):
        with psycopg.connect(target, autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description is not None else []
    lite = sqlite3.connect(target)
    try:
        with lite:
            return lite.execute(sql).fetchall()
    finally:
        lite.close()


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on the test server, dropped afterwards."""
    schema = f"pitstop_test_{uuid.uuid4().hex[:12]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def pg_database() -> Iterator[str]:
    """The URL of a fresh database on the test server, dropped afterwards."""
    name = f"pitstop_test_{uuid.uuid4().hex[:12]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield pg_url().rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An open, empty store of each backend."""
    if request.param == "memory":
        with MemoryStore() as memory:
            yield memory
    elif request.param == "sqlite":
        with SqlStore.sqlite(tmp_path / "pitstop.db") as sqlite:
            yield sqlite
    else:
        with pg_schema() as schema, SqlStore(pg_url(), options=f"-c search_path={schema}") as pg:
            yield pg


@pytest.fixture(params=SQL_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A target of an empty SQL database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "pitstop.db")
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def pg_db() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database of its own (skips/fails like the others)."""
    with pg_database() as url:
        yield url


@pytest.fixture(params=TWINS)
def twin(request: pytest.FixtureRequest) -> Iterator[MakeTwin]:
    """A factory of managers of one twin (sync or async); closes them afterwards."""
    made: list[CheckpointManager | SyncCheckpointManager] = []
    cls = SyncCheckpointManager if request.param == "sync" else CheckpointManager

    def make(*args: Any, **kwargs: Any) -> Twin:
        kwargs.setdefault("enabled", True)
        manager = cls(*args, **kwargs)
        made.append(manager)
        return Twin(manager)

    yield make
    for manager in made:
        manager._release_store()

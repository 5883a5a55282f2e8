"""Shared fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pitstop.storage._engine import normalize_url
from pitstop.storage.base import Store
from pitstop.storage.memory import MemoryStore
from pitstop.storage.sql import SqlStore

# ---------------------------------------------------------------------------
# Store backends: memory, sqlite (a real file), postgres (a real server).
#
# PostgreSQL comes from $PITSTOP_TEST_PG_URL; an unreachable server skips the
# postgres tests, except under CI=true where it fails them. Each `store` test
# gets its own PostgreSQL schema, so tests never see each other's rows.
# ---------------------------------------------------------------------------

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_PG_CONNECT_TIMEOUT = 3.0
_pg_down: str | None = None
"""Why PostgreSQL was unreachable, remembered so later tests do not wait again."""

STORE_BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SQL_BACKENDS = STORE_BACKENDS[1:]


def pg_url() -> str:
    """The PostgreSQL URL the tests use (plain postgresql:// gets the asyncpg driver)."""
    url = normalize_url(os.environ.get("PITSTOP_TEST_PG_URL", DEFAULT_PG_URL))
    return url.render_as_string(hide_password=False)


def _pg_unavailable(reason: str) -> None:
    global _pg_down
    _pg_down = reason
    shown = make_url(pg_url()).render_as_string(hide_password=True)
    message = f"PostgreSQL at {shown} is unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: postgres tests must run; set PITSTOP_TEST_PG_URL)")
    pytest.skip(message)


async def _pg_admin() -> AsyncEngine:
    """An engine on the test server, after checking it answers (skips or fails if not)."""
    if _pg_down is not None:
        _pg_unavailable(_pg_down)
    engine = create_async_engine(pg_url(), connect_args={"timeout": _PG_CONNECT_TIMEOUT})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError) as exc:
        await engine.dispose()
        _pg_unavailable(f"{type(exc).__name__}: {exc}")
    return engine


@asynccontextmanager
async def _pg_schema_store() -> AsyncIterator[SqlStore]:
    """A store whose tables live in a fresh schema, dropped afterwards."""
    admin = await _pg_admin()
    schema = f"pitstop_test_{uuid.uuid4().hex[:12]}"
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        settings = {"search_path": schema}
        async with SqlStore.from_url(pg_url(), connect_args={"server_settings": settings}) as store:
            yield store
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@asynccontextmanager
async def _pg_database() -> AsyncIterator[str]:
    """The URL of a fresh database on the test server, dropped afterwards."""
    admin = await _pg_admin()
    name = f"pitstop_test_{uuid.uuid4().hex[:12]}"
    try:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(pg_url()).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each backend."""
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    elif request.param == "sqlite":
        async with SqlStore.sqlite(tmp_path / "pitstop.db") as sqlite:
            yield sqlite
    else:
        async with _pg_schema_store() as pg:
            yield pg


@pytest.fixture(params=SQL_BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty SQL database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'pitstop.db'}"
        return
    async with _pg_database() as url:
        yield url


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database of its own (skips/fails like the others)."""
    async with _pg_database() as url:
        yield url

"""URL handling, engine setup and error wrapping for the SQL store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from .._errors import PitstopError, StoreError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"
BUSY_TIMEOUT_MS = 5000
BEGIN_OPTION = "pitstop_begin"
"""Execution option naming the statement that opens a SQLite transaction."""

_DRIVERS = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgres": POSTGRES_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}

_BACKEND_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)
# Driver errors SQLAlchemy did not wrap, recognised by module so that importing
# this file does not import asyncpg (an optional dependency).
_DRIVER_MODULES = ("asyncpg", "aiosqlite")


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and point it at the async driver pitstop supports for its database.

    Raises:
        ValueError: the URL cannot be parsed or names an unsupported database/driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError("not a database URL (expected e.g. sqlite:///file.db)") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}; "
            "use sqlite[+aiosqlite]:// or postgresql[+asyncpg]://"
        )
    if driver == SQLITE_DRIVER and parsed.database in (None, "", ":memory:"):
        # One shared connection cannot hold a transaction per concurrent save.
        raise ValueError("an in-memory SQLite URL is not supported; use MemoryStore instead")
    return parsed.set(drivername=driver)


def create_engine(url: URL, **engine_kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite ones get WAL, a busy timeout and explicit BEGINs."""
    engine = create_async_engine(url, **engine_kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # The sqlite3 module would BEGIN lazily and only before writes; we emit BEGIN
    # ourselves (see _sqlite_on_begin) so reads are snapshots and writers can
    # take the lock up front.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        # Timeout first: switching to WAL itself needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Writers pass "BEGIN IMMEDIATE": they wait (busy_timeout) for the write lock
    # at the start, instead of failing when a read transaction tries to upgrade.
    conn.exec_driver_sql(conn.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def safe_url(url: URL) -> str:
    """The URL as text with its password masked."""
    return url.render_as_string(hide_password=True)


@contextmanager
def wrap_errors(op: str, run_id: str | None, url: URL) -> Iterator[None]:
    """Re-raise backend failures as ``StoreError`` naming the operation and run.

    pitstop's own errors (and misuse errors) pass through unchanged.
    """
    try:
        yield
    except PitstopError:
        raise
    except Exception as exc:
        if not is_backend_error(exc):
            raise
        where = "" if run_id is None else f" for run {run_id!r}"
        raise StoreError(f"{op} failed{where} ({safe_url(url)}): {describe(exc, url)}") from exc


def is_backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from SQLAlchemy, a database driver or the OS."""
    return isinstance(exc, _BACKEND_ERRORS) or type(exc).__module__.startswith(_DRIVER_MODULES)


def describe(exc: BaseException, url: URL) -> str:
    """A short message for ``exc``: the driver's text, without SQL, parameters or password."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = f"{type(inner).__name__}: {inner}".strip()
    if url.password:
        text = text.replace(str(url.password), "***")
    return text if len(text) <= 500 else text[:497] + "..."

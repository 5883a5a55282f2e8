"""SQL store: SQLite (aiosqlite) and PostgreSQL (asyncpg) through SQLAlchemy's async engine."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import URL, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import CheckpointNotFound, CorruptCheckpoint, StaleBaseError, StoreError
from .._types import CheckpointInfo, RunInfo
from . import _models
from ._engine import BEGIN_OPTION, create_engine, normalize_url, safe_url, wrap_errors
from ._models import CHECKPOINTS as CP
from ._models import NODES, checkpoint_values, node_from_row, node_values, record_from_row
from ._queries import collect, fetch_latest_seq, newest_rows
from .base import CheckpointRecord, NodeRow, StoreContext, keep_range

# Every column but the state blob: listing checkpoints never reads payloads.
_HEADER = [c for c in CP.c if c.name != "state"]
# Any constant works; it only has to differ from hashtext() of likely run ids.
_SETUP_LOCK = 0x7069_7473


class SqlStore(StoreContext):
    """Checkpoints in SQLite or PostgreSQL; use as ``async with SqlStore.from_url(url):``.

    Every write is one transaction. SQLite runs in WAL mode and writers take the
    lock up front (``BEGIN IMMEDIATE``) so processes sharing a file queue up;
    PostgreSQL writers of one run queue on an advisory lock.
    """

    def __init__(self, url: str | URL, **engine_kwargs: Any) -> None:
        """Prepare a store; nothing connects before ``open()`` (or the first call).

        Args:
            url: A SQLAlchemy URL; plain ``sqlite://``/``postgresql://`` get the async driver.
            **engine_kwargs: Passed to ``create_async_engine``.

        Raises:
            ValueError: the URL names an unsupported database (or in-memory SQLite).
        """
        self._url = normalize_url(url)
        self._engine_kwargs = engine_kwargs
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._engine: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Self:
        """A store for a database URL (see ``__init__``)."""
        return cls(url, **engine_kwargs)

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], **engine_kwargs: Any) -> Self:
        """A store in the SQLite file at ``path``, creating its parent directories."""
        file = Path(path)
        if str(path) != ":memory:":  # rejected by __init__ with a clear message
            file.parent.mkdir(parents=True, exist_ok=True)
        return cls(URL.create("sqlite+aiosqlite", database=str(path)), **engine_kwargs)

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return safe_url(self._url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def open(self) -> None:
        """Connect, create missing tables and check the schema version; idempotent.

        Raises:
            SchemaVersionError: the database was written by a newer pitstop.
            StoreError: the database cannot be reached or read.
        """
        await self._open("open", None)

    async def _open(self, op: str, run_id: str | None) -> None:
        async with self._lock:
            if self._engine is not None:
                return
            engine = create_engine(self._url, **self._engine_kwargs)
            writer = engine.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
            try:
                with wrap_errors(op, run_id, self._url):
                    async with writer.begin() as conn:
                        if not self._is_sqlite:
                            # Concurrent first opens would race on CREATE TABLE.
                            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})"))
                        await conn.run_sync(_models.ensure_schema)
            except BaseException:
                await engine.dispose()
                raise
            self._engine, self._writer = engine, writer

    async def close(self) -> None:
        """Dispose of the engine and its connections; idempotent."""
        async with self._lock:
            engine, self._engine, self._writer = self._engine, None, None
            if engine is not None:
                await engine.dispose()

    def __del__(self) -> None:
        if getattr(self, "_engine", None) is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)

    async def _engines(self, op: str, run_id: str | None) -> tuple[AsyncEngine, AsyncEngine]:
        """The (reader, writer) engines, opening the store on first use."""
        if self._engine is None or self._writer is None:
            await self._open(op, run_id)
        if self._engine is None or self._writer is None:
            raise StoreError(f"{self!r} was closed while in use")
        return self._engine, self._writer

    @asynccontextmanager
    async def _write(self, op: str, run_id: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction, holding the run's write lock."""
        _, writer = await self._engines(op, run_id)
        with wrap_errors(op, run_id, self._url):
            async with writer.begin() as conn:
                if not self._is_sqlite:
                    lock = text("SELECT pg_advisory_xact_lock(hashtext(:run_id))")
                    await conn.execute(lock, {"run_id": run_id})
                yield conn

    @asynccontextmanager
    async def _read(self, op: str, run_id: str | None) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction seeing a single snapshot."""
        engine, _ = await self._engines(op, run_id)
        with wrap_errors(op, run_id, self._url):
            async with engine.connect() as conn:
                if not self._is_sqlite:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn

    async def save(
        self, record: CheckpointRecord, nodes: Sequence[NodeRow], *, base_seq: int | None
    ) -> int:
        """Write a checkpoint and its changed node rows in one transaction; return its seq.

        Raises:
            StaleBaseError: ``base_seq`` is not the run's latest seq; nothing was written.
            StoreError: the backend failed; nothing was written.
        """
        run_id = record.run_id
        # A node listed twice keeps its last row, as in the memory store.
        unique = {row.node_id: row for row in nodes}
        try:
            async with self._write("save", run_id) as conn:
                latest = await fetch_latest_seq(conn, run_id)
                if base_seq is not None and base_seq != latest:
                    raise StaleBaseError(run_id, base_seq, latest)
                seq = (latest or 0) + 1
                await conn.execute(insert(CP).values(checkpoint_values(record, seq)))
                if unique:
                    params = [node_values(run_id, seq, row) for row in unique.values()]
                    await conn.execute(insert(NODES), params)
        except StoreError as exc:
            # Another writer took the seq despite the lock (e.g. a foreign client).
            if base_seq is not None and isinstance(exc.__cause__, IntegrityError):
                raise StaleBaseError(run_id, base_seq, None) from exc.__cause__
            raise
        return seq

    async def load(
        self, run_id: str, seq: int | None = None
    ) -> tuple[CheckpointRecord, list[NodeRow]]:
        """The checkpoint (latest when ``seq`` is None) and, per node, its newest row <= seq.

        Raises:
            CheckpointNotFound: no such checkpoint.
        """
        query = select(CP).where(CP.c.run_id == run_id)
        query = query.where(CP.c.seq == seq) if seq is not None else query
        query = query.order_by(CP.c.seq.desc()).limit(1)
        async with self._read("load", run_id) as conn:
            found = (await conn.execute(query)).first()
            if found is None:
                raise CheckpointNotFound(run_id, seq)
            rows = await conn.execute(newest_rows(run_id, found.seq, self._is_sqlite))
            try:
                nodes = [node_from_row(r) for r in rows]
            except ValueError as exc:
                raise CorruptCheckpoint(run_id, found.seq, str(exc)) from exc
            return record_from_row(found, found.state), nodes

    async def latest_seq(self, run_id: str) -> int | None:
        async with self._read("latest_seq", run_id) as conn:
            return await fetch_latest_seq(conn, run_id)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        query = select(*_HEADER).where(CP.c.run_id == run_id).order_by(CP.c.seq)
        async with self._read("list_checkpoints", run_id) as conn:
            return [record_from_row(r, None).info() for r in await conn.execute(query)]

    async def list_runs(self) -> list[RunInfo]:
        runs = (
            select(
                CP.c.run_id,
                func.count().label("n"),
                func.min(CP.c.seq).label("first"),
                func.max(CP.c.seq).label("last"),
                func.sum(CP.c.size).label("total"),
            )
            .group_by(CP.c.run_id)
            .subquery()
        )
        query = select(runs, CP.c.created_at).join(
            CP, (CP.c.run_id == runs.c.run_id) & (CP.c.seq == runs.c.last)
        )
        async with self._read("list_runs", None) as conn:
            rows = list(await conn.execute(query))
        # Sorted here: the database's collation may not order like Python's str.
        return sorted(
            (RunInfo(r.run_id, r.n, r.first, r.last, r.created_at, int(r.total)) for r in rows),
            key=lambda info: info.run_id,
        )

    async def delete(self, run_id: str, seq: int | None = None) -> int:
        """Delete one checkpoint (or the whole run); return how many were removed.

        Raises:
            CheckpointNotFound: there was nothing to delete.
        """
        query = delete(CP).where(CP.c.run_id == run_id)
        query = query.where(CP.c.seq == seq) if seq is not None else query
        async with self._write("delete", run_id) as conn:
            removed = (await conn.execute(query)).rowcount
            if not removed:
                raise CheckpointNotFound(run_id, seq)
            await collect(conn, run_id)
            return removed

    async def prune(self, run_id: str, keep: int) -> list[int]:
        """Keep the newest ``keep`` checkpoints of a run; return the removed seqs, oldest first.

        Raises:
            ValueError: ``keep`` < 1.
        """
        keep_range((), keep)  # validate before touching the database
        async with self._write("prune", run_id) as conn:
            seqs = (await conn.execute(select(CP.c.seq).where(CP.c.run_id == run_id))).scalars()
            _, doomed = keep_range(list(seqs), keep)
            if doomed:
                await conn.execute(delete(CP).where(CP.c.run_id == run_id, CP.c.seq.in_(doomed)))
                await collect(conn, run_id)
            return doomed


def open_store(target: str | os.PathLike[str], **engine_kwargs: Any) -> SqlStore:
    """A store for a database URL, or for a SQLite file when ``target`` is a plain path.

    Raises:
        ValueError: the URL names an unsupported database.
    """
    if isinstance(target, str) and "://" in target:
        return SqlStore.from_url(target, **engine_kwargs)
    return SqlStore.sqlite(target, **engine_kwargs)

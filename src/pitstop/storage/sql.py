"""The store object users hold: SQLite or PostgreSQL, for both managers."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from .._context import AsyncClosing, Closing
from ._backends import Backend, Durability, PostgresBackend, SqliteBackend
from ._programs import Call
from ._threads import StoreThreads
from ._urls import parse_target

R = TypeVar("R")


class Store(Closing, AsyncClosing):
    """Where checkpoints live; one object serves the sync and the async manager.

    Use it as ``with store:`` or ``async with store:`` (or call ``open()`` and
    ``close()``); a manager given a path or URL opens and closes its own.
    Each operation is one transaction, run by a sync driver; the async manager
    hops once per transaction onto the store's own thread (a SQLite read that
    nothing can make wait runs inline: ``execute_now``).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._threads: StoreThreads | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """Where the store lives, with any password masked."""
        return self._backend.where

    @property
    def readonly(self) -> bool:
        return self._backend.readonly

    @property
    def hops(self) -> bool:
        """Whether async callers run operations on the store's thread."""
        return self._backend.hops

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def open(self) -> None:
        """Connect and check (or create, or migrate) the tables; idempotent.

        Raises:
            SchemaVersionError: the database was written by a newer pitstop.
            StoreError: it cannot be reached or read; or, read-only, it holds no
                up-to-date pitstop tables.
        """
        self._backend.open()

    def close(self) -> None:
        """Close connections and the store's thread; idempotent."""
        with self._lock:
            threads = self._threads
        if threads is not None:
            # Every transaction already asked for finishes first (from one of these
            # threads this raises, before anything is closed).
            threads.shutdown()
            with self._lock:
                if self._threads is threads:
                    self._threads = None
        self._backend.close()

    def execute(self, call: Call[R]) -> R:
        """Run one transaction program (opens the store on first use)."""
        result: R = self._backend.run(call)
        return result

    def execute_now(self, call: Call[R]) -> tuple[bool, R | None]:
        """Run ``call`` here and now if it cannot wait on a lock or the network (a
        SQLite read in WAL mode, the connection free): (True, its result); else
        (False, None), and an async caller hops with ``execute``."""
        done, result = self._backend.run_now(call)
        return done, result

    def hop(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Run ``fn(*args)`` on the store's thread(s) (one per pooled connection);
        from a running event loop. Its outcome arrives in the future returned."""
        with self._lock:
            threads = self._threads
            if threads is None:
                workers = getattr(self._backend, "pool_size", 1)
                threads = self._threads = StoreThreads(workers, "pitstop-store")
        return threads.submit(fn, *args)

    _entered = open

    async def aclose(self) -> None:
        """``close()`` for ``async with``."""
        self.close()


class SqlStore(Store):
    """Checkpoints in a SQLite file (stdlib sqlite3) or PostgreSQL (psycopg)."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        durability: Durability = "full",
        pool_size: int = 4,
        **connect_kwargs: Any,
    ) -> None:
        """Prepare a store; nothing connects before ``open()`` (or the first use).

        Args:
            target: a SQLite path, ``sqlite:///path`` or ``postgresql://user@host/db``.
            readonly: never write, create or migrate anything (inspection).
            durability: ``"full"`` (the default: a save has reached the disk when
                it returns; SQLite synchronous=FULL, PostgreSQL synchronous_commit
                on, or the server's stronger setting) or ``"normal"`` (survives a
                crash of the process that saves, may lose the last commits when the
                machine crashes or loses power, or on PostgreSQL when the server
                crashes; SQLite WAL synchronous=NORMAL, PostgreSQL synchronous_commit
                off).
            pool_size: PostgreSQL connections (and async threads) at most.
            **connect_kwargs: passed to ``psycopg.connect`` (PostgreSQL only).

        Raises:
            ValueError: an empty target, an unsupported scheme, or text that looks
                like a URL but does not parse.
        """
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        if not isinstance(readonly, bool):
            raise TypeError("readonly must be a bool")
        found = parse_target(target)
        backend: Backend
        if found.kind == "sqlite":
            if connect_kwargs:
                raise TypeError(f"unexpected arguments for SQLite: {sorted(connect_kwargs)}")
            backend = SqliteBackend(found.location, readonly=readonly, durability=durability)
        else:
            if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
                raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
            backend = PostgresBackend(found.location, readonly=readonly, pool_size=pool_size,
                                      durability=durability, **connect_kwargs)  # fmt: skip
        super().__init__(backend)

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None and backend.is_open:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A store for a database URL (see ``__init__``)."""
        return cls(url, **kwargs)

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], **kwargs: Any) -> Self:
        """A store in the SQLite file at ``path``, creating its parent directories."""
        if not kwargs.get("readonly"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(Path(path), **kwargs)


class MemoryStore(Store):
    """An in-process store for tests and short runs: SQLite in memory, same code paths."""

    def __init__(self) -> None:
        backend = SqliteBackend(None, readonly=False, durability="normal")
        backend.hops = False  # nothing blocks: async callers run it inline
        super().__init__(backend)


def open_store(target: str | os.PathLike[str], **kwargs: Any) -> SqlStore:
    """A store for a database URL, or for a SQLite file when ``target`` is a path.

    Raises:
        ValueError: see ``SqlStore``.
    """
    found = parse_target(target)
    if found.kind == "sqlite" and not kwargs.get("readonly"):
        Path(found.location).parent.mkdir(parents=True, exist_ok=True)
    return SqlStore(target, **kwargs)

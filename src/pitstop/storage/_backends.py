"""Backends: run a transaction program on a real driver (stdlib sqlite3, psycopg).

Both are synchronous and thread-safe. The sync manager calls them directly;
the async manager hops once per transaction onto the store's thread, so a
save is one hop whatever it writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from .._errors import PitstopError, StaleBaseError, StoreError
from . import _schema
from ._programs import (
    Batch,
    Call,
    Saved,
    Txn,
    after_writes,
    checksum_at,
    fenced_seq,
    fits_one_statement,
    lock_params,
    save,
    save_at_once,
    set_run,
    writes,
)
from ._queries import POSTGRES, SQLITE, Dialect

if TYPE_CHECKING:
    from .._core import SavePlan

BUSY_TIMEOUT_MS = 5000
CACHE_KIB = 16 * 1024
"""Upper bound of each SQLite connection's page cache (SQLite's default: 2 MiB). A
restore reads its snapshot blob through this cache: one of 10,000 nodes (~2.3 MB)
did not fit the default and was read again from the file at every restore, page by
page (0.44 ms of a ~5.5 ms restore; ~0.1 ms once it stayed cached). Pages are
allocated only as they are used."""
BIG_SNAPSHOT = 256 * 1024
"""A save whose snapshot may reach this size (``_big_snapshot``) folds the WAL into
the database before it writes."""
_ROW_BYTES = 48
"""What a snapshot row holds besides its output, at least (node id, status, times, ...)."""
Durability = Literal["full", "normal"]


def drive(
    cur: Any,
    dialect: Dialect,
    program: Txn[Any],
    sync: Callable[[], None] | None = None,
    errors: tuple[type[BaseException], ...] = (),
    new_cursor: Callable[[], Any] | None = None,
) -> Any:
    """Execute what ``program`` yields on a DB-API cursor; return what it returns.

    ``sync`` flushes a pipeline before a row count is read (psycopg's pipeline
    mode only knows it once the server answered). ``errors`` are the driver's
    database errors, which a "try" statement survives.
    """
    sql = dialect.sql
    result: Any = None
    while True:
        try:
            stmt = program.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(stmt, Batch) and sync is None:
            # No pipeline (SQLite, in process): one statement after another.
            result = []
            for s in stmt.stmts:
                cur.execute(sql[s.key], s.params)
                result.append(cur.fetchall())
        elif isinstance(stmt, Batch):
            # Every statement on a cursor of its own, sent before any answer is read.
            cursors = [(new_cursor or cur.connection.cursor)() for _ in stmt.stmts]
            for c, s in zip(cursors, stmt.stmts, strict=True):
                c.execute(sql[s.key], s.params)
            if sync is not None:
                sync()
            result = [c.fetchall() for c in cursors]
        elif stmt.mode == "try":
            cur.execute("SAVEPOINT pitstop_try")
            try:
                cur.execute(sql[stmt.key], stmt.params)
                if sync is not None:
                    sync()
                result = True
            except errors:
                cur.execute("ROLLBACK TO SAVEPOINT pitstop_try")
                result = False
            cur.execute("RELEASE SAVEPOINT pitstop_try")
        elif stmt.mode == "blob":
            if dialect.name != "sqlite":
                raise StoreError(f"{stmt.key}: blob reads are SQLite's (incremental blob I/O)")
            table, column = sql[stmt.key].split(".")
            with cur.connection.blobopen(table, column, stmt.params[0], readonly=True) as blob:
                result = blob.read()
        elif stmt.mode == "many":
            cur.executemany(sql[stmt.key], stmt.params)
            result = None
        else:
            cur.execute(sql[stmt.key], stmt.params)
            if stmt.mode == "rows":
                result = cur.fetchall()
            elif stmt.mode == "count":
                if sync is not None:
                    sync()
                result = cur.rowcount
            else:
                result = None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 500 else text[:497] + "..."


class wrap_errors:
    """Backend failures become StoreError naming the operation; pitstop errors pass.
    (Named like the function it replaced; nothing is swallowed.)

    A class, not a generator context manager: it is entered on every save, and
    this costs about a third of one (0.35 against 0.9 µs, timeit)."""

    __slots__ = ("call", "integrity", "where")

    def __init__(
        self, call: Call[Any], where: str, integrity: tuple[type[BaseException], ...]
    ) -> None:
        self.call, self.where, self.integrity = call, where, integrity

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:  # fmt: skip
        if exc is None or isinstance(exc, PitstopError):
            return False
        call, where = self.call, self.where
        if isinstance(exc, self.integrity):
            if call.name == "save":  # the seq was taken by a writer that bypassed our lock
                raise StaleBaseError(call.args[0].run_id, call.args[0].expected_hwm, None) from exc
            raise StoreError(f"{call.name} failed ({where}): {_describe(exc)}") from exc
        if isinstance(exc, (sqlite3.Error, OSError)) or (
            isinstance(exc, Exception) and type(exc).__module__.startswith("psycopg")
        ):
            raise StoreError(f"{call.name} failed ({where}): {_describe(exc)}") from exc
        return False


class SqliteBackend:
    """One sqlite3 connection (WAL, BEGIN IMMEDIATE for writers) behind a lock."""

    dialect = SQLITE
    hops = True

    def __init__(self, path: str | None, *, readonly: bool, durability: Durability) -> None:
        self.path = path  # None: in memory
        self.readonly = readonly
        self.durability = durability
        self.where = "memory" if path is None else f"sqlite:///{path}"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._cur: sqlite3.Cursor | None = None
        """The connection's one cursor: every transaction runs on it (a new cursor
        per statement or transaction is Python work on every save)."""
        self._wal = False
        """Whether the open connection reads in WAL mode (where readers never wait)."""

    def open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            self._conn = self._connect()
            self._cur = self._conn.cursor()

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        try:
            if path is None:
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            elif self.readonly:
                conn = self._connect_readonly(path)
            else:
                conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.where}: {_describe(exc)}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            if not self.readonly:
                conn.execute(f"PRAGMA synchronous = {self.durability.upper()}")
            self._ensure_schema(conn)
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            self._wal = str(mode).lower() == "wal"
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self.where}: {_describe(exc)}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _connect_readonly(path: str) -> sqlite3.Connection:
        if not os.path.exists(path):
            raise StoreError(f"no SQLite file at {path!r} (opened read-only)")
        uri = f"file:{quote(path)}?mode=ro"
        if not os.path.exists(path + "-wal"):
            # No writer is connected (a WAL file exists while one is) and every
            # commit is in the main file: read it as immutable, which creates no
            # -wal/-shm beside it and works in a directory we cannot write. Should
            # a writer fold its WAL in meanwhile, checksums catch a torn read.
            uri += "&immutable=1"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        try:
            cur = conn.cursor()
            version = _schema.read_version(cur, "sqlite")
            if not _schema.needs_write(version):
                return
            if self.readonly:
                raise _schema.refuse_readonly(version, self.where)
            if self.path is not None and version is None:
                # Only when pitstop creates its tables: WAL lets readers run beside a writer.
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                _schema.create_or_migrate(cur, "sqlite")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.where}: {_describe(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._cur = self._conn, None, None
        if conn is not None:
            conn.close()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def run(self, call: Call[Any]) -> Any:
        if self.readonly and call.write:
            raise StoreError(f"{call.name} needs a writable store; {self.where} is read-only")
        if self._conn is None:
            self.open()
        with self._lock:
            return self._run_locked(call)

    def run_now(self, call: Call[Any]) -> tuple[bool, Any]:
        """Run a read on the caller's thread if nothing can make it wait: (True, its
        result); else (False, None), and the caller hops as usual.

        The async manager asks this before hopping with a read. A read in WAL mode
        takes no lock a writer holds, and the restore's decode runs on the event
        loop anyway (it holds the GIL wherever it runs), so the hop bought the loop
        only the short SQL part, at the price of two thread wake-ups (~120 µs p50
        on the benchmark machine: more than a whole restore of 10 nodes). Not when
        the store is not open yet (opening may create tables), not outside WAL (a
        reader may wait up to busy_timeout there), and not while the connection is
        busy with another transaction (a save waiting on its fsync): then it hops.
        """
        if call.write or not self._wal or not self._lock.acquire(blocking=False):
            return False, None
        try:
            if self._conn is None:
                return False, None
            return True, self._run_locked(call)
        finally:
            self._lock.release()

    def _run_locked(self, call: Call[Any]) -> Any:
        with wrap_errors(call, self.where, (sqlite3.IntegrityError,)):
            conn, cur = self._conn, self._cur
            if conn is None or cur is None:
                raise StoreError(f"{self.where} was closed while in use")
            if call.write and _big_snapshot(call):
                # Fold the WAL into the database before a big snapshot (PASSIVE: never
                # waits for readers), not after it: once the WAL is folded whole, the
                # next write restarts it from its start and syncs its header first.
                # Folded first, that write is this snapshot's, a save that is slow
                # anyway; folded after, it was the next save's, which took 5-7x a
                # save's p50 (durability="normal", 10,000 nodes). The snapshot stays in
                # the WAL until the next big snapshot folds it; the saves in between
                # add a few pages each, so the WAL seldom reaches the autocheckpoint.
                # Only an optimisation: the save is the same whatever this does.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            # Writers take the lock up front: they queue (busy_timeout) instead of
            # failing when a read transaction would have to upgrade.
            cur.execute("BEGIN IMMEDIATE" if call.write else "BEGIN")
            try:
                if call.program is save:
                    result = self._save(cur, call.args[0])
                else:
                    result = drive(cur, SQLITE, call.program(*call.args),
                                   errors=(sqlite3.DatabaseError,))  # fmt: skip
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # COMMIT itself may fail (SQLITE_BUSY): end it
                    conn.execute("ROLLBACK")
                raise
            return result

    @staticmethod
    def _save(cur: sqlite3.Cursor, plan: SavePlan) -> Saved:
        """``save``'s parts, the same helpers in the same order, run straight on the
        cursor instead of driving the program: its generator, statement objects and
        the driver's dispatch cost 6-9 us of a small run's ~200 us save (FULL,
        interleaved with SqliteSaver; docs/performance.md). What follows the rows
        (blob refs, retention) runs as the program does."""
        sql = SQLITE.sql
        cur.execute(sql["run_lock"], lock_params(plan))
        found = cur.fetchall()
        seq = fenced_seq(plan, found)
        if seq is None:
            return Saved(None)
        for key, params, mode in writes(plan, seq, found):
            if mode == "many":
                cur.executemany(sql[key], params)
            else:
                cur.execute(sql[key], params)
        if plan.refs or plan.keep_last is not None:
            return Saved(seq, drive(cur, SQLITE, after_writes(plan, seq),
                                    errors=(sqlite3.DatabaseError,)))  # fmt: skip
        return Saved(seq)


def _big_snapshot(call: Call[Any]) -> bool:
    """Whether ``call`` is a save whose snapshot blob may reach ``BIG_SNAPSHOT`` (its
    plan counts the outputs' bytes; each row adds at least ``_ROW_BYTES``)."""
    if call.program is not save:
        return False
    plan = call.args[0]
    return bool(plan.snapshot) and (
        plan.header["size"] + _ROW_BYTES * len(plan.rows) >= BIG_SNAPSHOT
    )


# REPEATABLE READ even for one-statement saves: a save whose snapshot predates a
# concurrent delete or prune (which update the run row) fails on the run row's lock
# instead of trusting rows that are gone.
_ISOLATION = "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
_SESSION: dict[str, str] = {
    # "full": a commit waits for the server's WAL flush even where the server, the
    # database, the role or PGOPTIONS turned synchronous_commit off (a stronger
    # setting such as remote_apply is kept).
    "full": _ISOLATION + "SELECT set_config('synchronous_commit', 'on', false) "
    "WHERE current_setting('synchronous_commit') = 'off'",
    # "normal": a commit returns before its WAL is flushed: a crash of the server or
    # of its machine may lose the last commits (never half of one); a crash of this
    # process loses nothing that committed.
    "normal": _ISOLATION + "SET synchronous_commit = off",
}
"""What each new PostgreSQL connection runs first, by durability."""


class PostgresBackend:
    """A small pool of psycopg connections; writers lock the run's row."""

    dialect = POSTGRES
    hops = True

    def __init__(
        self,
        conninfo: str,
        *,
        readonly: bool,
        pool_size: int,
        durability: Durability = "full",
        **kwargs: Any,
    ) -> None:
        self.conninfo = conninfo
        self.readonly = readonly
        self.pool_size = pool_size
        self.durability = durability
        self.kwargs = kwargs
        self.where = _mask(conninfo)
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self._opened = False
        # The pool: idle connections (the last returned is the next taken) and how
        # many are in use, at most pool_size (a Condition on a plain lock: a
        # BoundedSemaphore and a LifoQueue cost ~5 us a save in Python-level locking).
        self._idle: list[Any] = []
        self._in_use = 0
        self._turn = threading.Condition(threading.Lock())
        self._cursors: dict[Any, Any] = {}
        """Each connection's cursor for one-statement saves (binary results)."""

    def _connect(self) -> Any:
        import psycopg

        conn = None
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, **self.kwargs)
            # One round trip, session settings (autocommit: no rollback undoes them);
            # never prepared (two commands cannot be, whatever prepare_threshold says).
            conn.execute(_SESSION[self.durability], prepare=False)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"cannot connect to {self.where}: {_describe(exc)}") from exc
        with self._lock:
            self._all.append(conn)
        return conn

    def open(self) -> None:
        with self._lock:
            if self._opened:
                return
        conn = self._connect()
        try:
            cur = conn.cursor()
            version = _schema.read_version(cur, "postgresql")
            if _schema.needs_write(version):
                if self.readonly:
                    raise _schema.refuse_readonly(version, self.where)
                with conn.transaction():
                    # Concurrent first opens would race on CREATE TABLE. READ COMMITTED:
                    # after waiting for the lock, see the tables another opener made.
                    cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    cur.execute("SELECT pg_advisory_xact_lock(7070747473)")
                    _schema.create_or_migrate(cur, "postgresql")
        except Exception as exc:
            self._discard(conn)
            if isinstance(exc, PitstopError):
                raise
            raise StoreError(f"cannot open {self.where}: {_describe(exc)}") from exc
        with self._turn:
            self._idle.append(conn)
        with self._lock:
            self._opened = True

    def _discard(self, conn: Any) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
            self._cursors.pop(conn, None)
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all, self._opened = self._all, [], False
            self._cursors = {}
        with self._turn:
            self._idle = []
        for conn in conns:
            conn.close()

    def _take(self, fresh: bool = False) -> tuple[Any, bool]:
        """An idle connection (unless ``fresh``), or a new one, and whether it was
        idle; waits while pool_size are in use."""
        with self._turn:
            while self._in_use >= self.pool_size:
                self._turn.wait()
            self._in_use += 1
            if self._idle and not fresh:
                return self._idle.pop(), True
        try:
            return self._connect(), False
        except BaseException:
            self._give_back(None)
            raise

    def _drop_idle(self) -> None:
        """Close every idle connection (one was found lost: the others likely are)."""
        with self._turn:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)

    def _give_back(self, conn: Any) -> None:
        with self._turn:
            self._in_use -= 1
            if conn is not None and not conn.closed:
                self._idle.append(conn)
            self._turn.notify()

    def _cursor(self, conn: Any) -> Any:
        cur = self._cursors.get(conn)
        if cur is None:
            with self._lock:
                cur = self._cursors[conn] = conn.cursor(binary=True)
        return cur

    @property
    def is_open(self) -> bool:
        return self._opened

    def run(self, call: Call[Any]) -> Any:
        if self.readonly and call.write:
            raise StoreError(f"{call.name} needs a writable store; {self.where} is read-only")
        self.open()
        conn, idle = self._take()
        try:
            return self._run_on(conn, call)
        except StoreError:
            if not (idle and conn.broken):
                raise
            # The connection was lost while it sat in the pool (the server restarted,
            # a proxy or firewall dropped it): the other idle ones likely were too.
            self._drop_idle()
            if not _may_run_again(call):
                raise
        conn, _ = self._take(fresh=True)
        try:
            return self._run_on(conn, call)
        except StaleBaseError:
            # The run's seq moved: by this save's first attempt, if it committed
            # before its answer was lost. Then its checkpoint is there, and the save
            # happened, once.
            plan = call.args[0]
            if call.program is save and self._landed(plan):
                return Saved(plan.record.seq)
            raise

    def _landed(self, plan: SavePlan) -> bool:
        """Whether the checkpoint ``plan`` makes (seq and checksum) is stored."""
        record = plan.record
        if record is None or plan.expected_hwm is None or record.seq != plan.expected_hwm + 1:
            return False
        conn, _ = self._take()
        found = self._run_on(conn, Call(checksum_at, (record.run_id, record.seq), False))
        return bool(found == record.checksum)

    def _run_on(self, conn: Any, call: Call[Any]) -> Any:
        """Run ``call`` on ``conn`` (taken from the pool); give it back, or drop it."""
        import psycopg

        ok = False
        try:
            raced = (psycopg.IntegrityError, psycopg.errors.SerializationFailure)
            errors = wrap_errors(call, self.where, raced)
            if call.program is save and fits_one_statement(call.args[0]):
                # One autocommit statement: one round trip, atomic by itself.
                with errors:
                    result = drive(self._cursor(conn), POSTGRES, save_at_once(*call.args))
                ok = True
                return result
            if not call.write and getattr(call.program, "one_step", False):
                with wrap_errors(call, self.where, raced):  # one use per context manager
                    done, result = self._read_once(conn, call)
                if done:
                    ok = True
                    return result
            # Pipeline mode: statements whose results the program does not read
            # (and BEGIN, COMMIT) travel together, so a save is two round trips.
            with errors, conn.pipeline() as pipeline, conn.transaction():
                cur = conn.cursor(binary=True)  # bytea as bytes, not hex text
                if not call.write:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                result = drive(cur, POSTGRES, call.program(*call.args), pipeline.sync,
                               (psycopg.DatabaseError,),
                               lambda: conn.cursor(binary=True))  # fmt: skip
            ok = True
            return result
        finally:
            if ok or (not conn.closed and conn.info.transaction_status == 0):
                self._give_back(conn)
            else:
                self._discard(conn)
                self._give_back(None)

    def run_now(self, call: Call[Any]) -> tuple[bool, Any]:
        """Never: every PostgreSQL operation waits on the network (async callers hop)."""
        return False, None

    def _read_once(self, conn: Any, call: Call[Any]) -> tuple[bool, Any]:
        """A ``one_step`` read program in one round trip: BEGIN (repeatable read, read
        only), the statement(s) it asks for, COMMIT and one sync, all pipelined (a
        restore at K=10: 0.56 against 0.97 ms for a transaction of its own around the
        batch, which costs two round trips and 14 waits on the connection against 9).
        ``(True, its result)``, or ``(False, None)`` when it asked for more after all:
        the caller then runs it again, whole, in a transaction of its own."""
        program = call.program(*call.args)
        try:
            first = next(program)
        except StopIteration as stop:
            return True, stop.value
        stmts = first.stmts if isinstance(first, Batch) else (first,)
        if all(s.mode == "rows" for s in stmts):
            with conn.pipeline() as pipeline:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursors = [conn.cursor(binary=True) for _ in stmts]
                for cur, s in zip(cursors, stmts, strict=True):
                    cur.execute(POSTGRES.sql[s.key], s.params)
                conn.execute("COMMIT")
                pipeline.sync()
                rows = [cur.fetchall() for cur in cursors]
            try:
                program.send(rows if isinstance(first, Batch) else rows[0])
            except StopIteration as stop:
                return True, stop.value
        program.close()
        return False, None


def _may_run_again(call: Call[Any]) -> bool:
    """Whether ``call`` may run again after its connection was lost under it: a read;
    a status change (it writes absolute values); a save that expects the run's
    high-water seq, which fences it (had the lost attempt committed, the second finds
    the seq moved; ``PostgresBackend.run`` then looks for its checkpoint). Not a
    run's first save from this manager (no fence: it could be stored twice), nor a
    delete or prune (a second run could report a wrong count)."""
    if not call.write or call.program is set_run:
        return True
    return call.program is save and call.args[0].expected_hwm is not None


def _mask(conninfo: str) -> str:
    """The conninfo with any password hidden."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", conninfo)


Backend = SqliteBackend | PostgresBackend

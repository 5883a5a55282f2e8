"""pitstop side by side with LangGraph's checkpoint savers: save, restore, file size.

How to run (about a minute on 2 cores; PostgreSQL as for the other benchmarks):

    .venv/bin/pip install -e ".[bench,dev]"      # the LangGraph savers
    benchmarks/run.sh peers                      # this file only, then its targets
    benchmarks/run.sh all                        # every benchmark, every target

By hand: ``PYTHONPATH=benchmarks .venv/bin/pytest benchmarks/bench_peers.py
-o python_files='bench_*.py' -p no:cacheprovider -p no:benchmark -p _plugin
--bench-json=.benchmarks/latest.json`` then ``.venv/bin/python
benchmarks/check_targets.py --peers .benchmarks/latest.json``. Without the
``bench`` extra this module skips.

The workload, the same for both: a workflow of K nodes (K = 10, 1,000,
10,000), each with a ~200-byte JSON output (a dict), saved in full once, then
one changed node per save.

- pitstop: ``SyncCheckpointManager`` / ``CheckpointManager`` with the default
  policy on ``SqlStore`` (a SQLite file, durability "full"; PostgreSQL, a
  schema of its own), after ``on_run_start(graph=K nodes)`` and a first full
  save. A save is ``on_node_start`` (untimed), then ``on_node_finish`` with the
  new output and ``save_checkpoint()``, timed together (the output is encoded
  in ``on_node_finish``). Extra variants, sync twin: durability "normal" on
  both backends (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit
  off) and ``CheckpointPolicy(keep_last=5)`` on SQLite.
- LangGraph: a checkpoint whose ``channel_values`` hold one channel per node
  (dict values, so PostgresSaver keeps each in ``checkpoint_blobs`` rather than
  inlining it into the checkpoint row) and whose ``channel_versions`` bump one
  channel per step (``saver.get_next_version``, untimed). Timed:
  ``create_checkpoint(previous, None, step)`` and ``put`` / ``aput`` with
  ``new_versions`` holding only the changed channel. ``create_checkpoint`` with
  ``channels=None`` reuses the values dict: cheaper than LangGraph's own loop,
  which rebuilds it from every channel, so the peer is timed at its best.
  SqliteSaver and AsyncSqliteSaver store the whole checkpoint (every channel
  value) in one row per put and ignore ``new_versions``; Postgres writes only
  the blobs ``new_versions`` names, plus a row holding every channel's version.

Each SQLite variant writes a file of its own under pytest's ``tmp_path``, each
PostgreSQL one a schema of its own in the session's database (both dropped).

Benches (results file rows, ``group`` = sqlite or postgres):

- ``peer_save``: every variant of both backends interleaved round by round,
  per K; p50 and p95 per save. pitstop rows record how many timed saves were
  the policy's periodic full snapshot (``snapshot_every=50``). A "raw insert"
  variant per backend (``RawInsert``: one row, one commit, same driver and
  durability) is interleaved with them as the floor, for scale.
- ``peer_restore``: latest of 20 saves (a full one, then 19 one-node saves),
  written by one writer per backend and library, read by the sync and async
  readers: pitstop ``restore_checkpoint()`` by a new manager per sample (one
  that did not write the run, as on resume; the previous one is freed before
  the clock starts, as LangGraph's previous result is freed after it stops),
  then ``.completed``; LangGraph ``get_tuple`` / ``aget_tuple`` on the latest,
  then ``channel_values``. Both results are held until the clock stopped (so
  freeing the K decoded outputs is timed for neither). Every sample checks that
  K outputs came back.
- ``peer_size``: SQLite file after 200 saves (the first full) at K=1,000, all
  connections closed (so the WAL is checkpointed); ``unit`` is "bytes" and
  p50 = p95 = the size of the file plus any -wal left.

The SQLite PRAGMAs each library runs with (read from its own connection) and
the package versions are in the results file under ``peers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
import pytest
from _harness import Recorder, Sample, Summary, interleave, percentile

from pitstop import CheckpointManager, CheckpointPolicy, SqlStore, SyncCheckpointManager

try:  # the bench extra; mypy without it (as in CI) sees Any
    from langchain_core.runnables import RunnableConfig  # type: ignore[import-not-found,unused-ignore]
    from langgraph.checkpoint.base import (  # type: ignore[import-not-found,unused-ignore]
        BaseCheckpointSaver,
        Checkpoint,
        CheckpointMetadata,
        create_checkpoint,
        empty_checkpoint,
    )
    from langgraph.checkpoint.postgres import PostgresSaver  # type: ignore[import-not-found,unused-ignore]
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # type: ignore[import-not-found,unused-ignore]
    from langgraph.checkpoint.sqlite import SqliteSaver  # type: ignore[import-not-found,unused-ignore]
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover
    pytest.skip(
        f"needs the bench extra (pip install -e '.[bench]'): {exc}", allow_module_level=True
    )

SIZES = [10, 1_000, 10_000]
SAVE_ROUNDS = {10: 400, 1_000: 300, 10_000: 150}
SAVE_WARMUP = 5
RESTORE_ROUNDS = {10: 300, 1_000: 100, 10_000: 40}
HISTORY = 20
"""Saves before the restore: one full, then one changed node each."""
SIZE_K, SIZE_SAVES = 1_000, 200
KEEP_LAST = 5
KEEP_NAME = f"pitstop sync keep_last={KEEP_LAST}"
PACKAGES = ["langgraph-checkpoint", "langgraph-checkpoint-sqlite",
            "langgraph-checkpoint-postgres", "aiosqlite", "psycopg", "psycopg-pool"]  # fmt: skip
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
T = TypeVar("T")


def _output(i: int, version: int) -> dict[str, Any]:
    """A node output: a dict of about 200 bytes of JSON."""
    word = f"{(i * 2654435761 + version * 40503) & 0xFFFFFFFF:08x}"
    return {"node": f"n{i}", "version": version, "ok": True, "text": word * 18}


def _graph(k: int) -> dict[str, tuple[str, ...]]:
    return {f"n{i}": () for i in range(k)}


class Subject(Protocol):
    """One library on one backend and twin, driven from the benchmark's sync code."""

    snapshots: int
    """Timed saves that were the policy's periodic full snapshot (pitstop)."""
    what: str
    """The class measured (a pitstop manager or a LangGraph saver)."""

    def first(self, k: int) -> None:
        """Untimed: K completed nodes (channels), saved in full."""

    def save(self, i: int, output: dict[str, Any]) -> int:
        """Node ``i`` changed to ``output``: nanoseconds of the timed part of its save."""

    def restore(self, k: int) -> int:
        """Nanoseconds of restoring the latest checkpoint; checks K outputs came back."""


class PitstopSync:
    def __init__(self, store: SqlStore, run_id: str, policy: CheckpointPolicy | None = None):
        self.store, self.run_id, self.snapshots = store, run_id, 0
        self.mgr = SyncCheckpointManager(run_id, store=store, enabled=True, policy=policy)
        self.what = "SyncCheckpointManager"
        self.reader: SyncCheckpointManager | None = None

    def first(self, k: int) -> None:
        m = self.mgr
        m.on_run_start(graph=_graph(k))
        for i in range(k):
            m.on_node_start(node_id=f"n{i}")
            m.on_node_finish(node_id=f"n{i}", output=_output(i, 0))
        assert m.save_checkpoint(trigger="first").nodes_written == k

    def save(self, i: int, output: dict[str, Any]) -> int:
        m, node = self.mgr, f"n{i}"
        m.on_node_start(node_id=node)
        t0 = time.perf_counter_ns()
        m.on_node_finish(node_id=node, output=output)
        info = m.save_checkpoint()
        ns = time.perf_counter_ns() - t0
        self.snapshots += info.snapshot
        assert info.snapshot or info.nodes_written == 1
        return ns

    def restore(self, k: int) -> int:
        # A new manager that did not write the run, as on resume; the last one's
        # state is freed before the clock starts (as LangGraph's last result is
        # freed after its clock stops).
        self.reader = None
        self.reader = SyncCheckpointManager(self.run_id, store=self.store, enabled=True)
        t0 = time.perf_counter_ns()
        cp = self.reader.restore_checkpoint()
        done = cp.completed
        ns = time.perf_counter_ns() - t0
        # Held until the clock stopped: freeing the K decoded outputs is not part
        # of a restore (LangGraph's result, too, is freed after its clock stops).
        assert len(done) == k
        return ns


class PitstopAsync:
    def __init__(self, store: SqlStore, run_id: str, loop: asyncio.AbstractEventLoop):
        self.store, self.run_id, self.loop, self.snapshots = store, run_id, loop, 0
        self.mgr = CheckpointManager(run_id, store=store, enabled=True)
        self.reader: CheckpointManager | None = None
        self.what = "CheckpointManager"

    def first(self, k: int) -> None:
        async def run() -> None:
            m = self.mgr
            await m.on_run_start(graph=_graph(k))
            for i in range(k):
                await m.on_node_start(node_id=f"n{i}")
                await m.on_node_finish(node_id=f"n{i}", output=_output(i, 0))
            assert (await m.save_checkpoint(trigger="first")).nodes_written == k

        self.loop.run_until_complete(run())

    def save(self, i: int, output: dict[str, Any]) -> int:
        async def timed() -> int:
            m, node = self.mgr, f"n{i}"
            await m.on_node_start(node_id=node)
            t0 = time.perf_counter_ns()
            await m.on_node_finish(node_id=node, output=output)
            info = await m.save_checkpoint()
            ns = time.perf_counter_ns() - t0
            self.snapshots += info.snapshot
            assert info.snapshot or info.nodes_written == 1
            return ns

        return self.loop.run_until_complete(timed())

    def restore(self, k: int) -> int:
        self.reader = None  # as PitstopSync.restore
        self.reader = reader = CheckpointManager(self.run_id, store=self.store, enabled=True)

        async def timed() -> int:
            t0 = time.perf_counter_ns()
            cp = await reader.restore_checkpoint()
            done = cp.completed
            ns = time.perf_counter_ns() - t0
            assert len(done) == k  # held until the clock stopped, as PitstopSync.restore
            return ns

        return self.loop.run_until_complete(timed())


class _LangGraph:
    """The state of a LangGraph thread: one channel per node, one version bumped per step."""

    snapshots = 0  # LangGraph has no periodic snapshot

    def __init__(self, saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
        self.saver, self.thread_id, self.step = saver, thread_id, -1
        self.latest: RunnableConfig = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ""}
        }
        self.config: RunnableConfig = self.latest
        self.cp: Checkpoint = empty_checkpoint()
        self.what = type(saver).__name__

    def _first(self, k: int) -> dict[str, str | int | float]:
        versions = self.cp["channel_versions"]
        for i in range(k):
            self.cp["channel_values"][f"n{i}"] = _output(i, 0)
            versions[f"n{i}"] = self.saver.get_next_version(None, None)
        return dict(versions)

    def _next(self, i: int, output: dict[str, Any]) -> tuple[CheckpointMetadata, dict[str, Any]]:
        """Untimed: channel ``n{i}`` takes ``output`` and a new version."""
        ch = f"n{i}"
        self.cp["channel_values"][ch] = output
        version = self.saver.get_next_version(self.cp["channel_versions"][ch], None)
        self.cp["channel_versions"][ch] = version
        self.step += 1
        meta: CheckpointMetadata = {"source": "loop", "step": self.step, "parents": {}}
        return meta, {ch: version}

    def _check(self, values: dict[str, Any], k: int) -> None:
        assert len(values) == k


class LangGraphSync(_LangGraph):
    def first(self, k: int) -> None:
        new = self._first(k)
        meta: CheckpointMetadata = {"source": "input", "step": -1, "parents": {}}
        self.config = self.saver.put(self.config, self.cp, meta, new)

    def save(self, i: int, output: dict[str, Any]) -> int:
        meta, new = self._next(i, output)
        t0 = time.perf_counter_ns()
        cp = create_checkpoint(self.cp, None, self.step)
        self.config = self.saver.put(self.config, cp, meta, new)
        ns = time.perf_counter_ns() - t0
        self.cp = cp
        return ns

    def restore(self, k: int) -> int:
        t0 = time.perf_counter_ns()
        found = self.saver.get_tuple(self.latest)
        assert found is not None
        values = found.checkpoint["channel_values"]
        ns = time.perf_counter_ns() - t0
        self._check(values, k)
        return ns


class LangGraphAsync(_LangGraph):
    def __init__(
        self, saver: BaseCheckpointSaver[Any], thread_id: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(saver, thread_id)
        self.loop = loop

    def first(self, k: int) -> None:
        new = self._first(k)
        meta: CheckpointMetadata = {"source": "input", "step": -1, "parents": {}}
        self.config = self.loop.run_until_complete(self.saver.aput(self.config, self.cp, meta, new))

    def save(self, i: int, output: dict[str, Any]) -> int:
        meta, new = self._next(i, output)

        async def timed() -> int:
            t0 = time.perf_counter_ns()
            cp = create_checkpoint(self.cp, None, self.step)
            self.config = await self.saver.aput(self.config, cp, meta, new)
            ns = time.perf_counter_ns() - t0
            self.cp = cp
            return ns

        return self.loop.run_until_complete(timed())

    def restore(self, k: int) -> int:
        async def timed() -> int:
            t0 = time.perf_counter_ns()
            found = await self.saver.aget_tuple(self.latest)
            assert found is not None
            values = found.checkpoint["channel_values"]
            ns = time.perf_counter_ns() - t0
            self._check(values, k)
            return ns

        return self.loop.run_until_complete(timed())


class RawInsert:
    """The floor under any save, for scale: the changed node's output (JSON, encoded
    untimed) inserted as one row and committed on the driver pitstop uses (stdlib
    sqlite3 in WAL mode with synchronous=FULL; psycopg in autocommit), nothing else:
    no lineage, no checksums, no bookkeeping."""

    snapshots = 0

    def __init__(self, conn: Any, what: str) -> None:
        self.conn, self.what, self.seq = conn, what, 0
        self.mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"

    def first(self, k: int) -> None:
        self.conn.execute("CREATE TABLE raw (run_id TEXT, seq INTEGER, output BLOB, "
                          "PRIMARY KEY (run_id, seq))".replace("BLOB", self._blob()))  # fmt: skip

    def _blob(self) -> str:
        return "BLOB" if self.mark == "?" else "bytea"

    def save(self, i: int, output: dict[str, Any]) -> int:
        data, self.seq = json.dumps(output).encode(), self.seq + 1
        sql = f"INSERT INTO raw VALUES ({self.mark}, {self.mark}, {self.mark})"
        t0 = time.perf_counter_ns()
        if self.mark == "?":
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(sql, ("save", self.seq, data))
            self.conn.execute("COMMIT")
        else:
            self.conn.execute(sql, ("save", self.seq, data))
        return time.perf_counter_ns() - t0

    def restore(self, k: int) -> int:  # pragma: no cover - a save floor only
        raise NotImplementedError


# --- opening the stores and savers ------------------------------------------------------------


class Rig:
    """Everything a test opens (files, schemas, connections), closed when it ends."""

    def __init__(self, tmp: Path, loop: asyncio.AbstractEventLoop, pg_url: str | None) -> None:
        self.tmp, self.loop, self.pg_url = tmp, loop, pg_url
        self.stack = contextlib.ExitStack()
        self.astack = contextlib.AsyncExitStack()
        self.schemas: list[str] = []

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.loop.run_until_complete(self.astack.aclose())
            self.stack.close()
        finally:
            if self.schemas and self.pg_url is not None:
                with psycopg.connect(self.pg_url, autocommit=True) as admin:
                    for schema in self.schemas:
                        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def schema(self) -> str:
        """A new schema in the session's PostgreSQL database, dropped at exit."""
        assert self.pg_url is not None
        name = f"peer_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        return name

    def pg_conninfo(self, schema: str) -> str:
        assert self.pg_url is not None
        return psycopg.conninfo.make_conninfo(self.pg_url, options=f"-c search_path={schema}")

    def pitstop_sqlite(self, name: str, durability: str = "full") -> SqlStore:
        store = SqlStore.sqlite(self.tmp / f"{name}.db", durability=durability)
        return self.stack.enter_context(store)

    def pitstop_pg(self, schema: str, durability: str = "full") -> SqlStore:
        assert self.pg_url is not None
        options = f"-c search_path={schema}"
        store = SqlStore.from_url(self.pg_url, options=options, durability=durability)
        return self.stack.enter_context(store)

    def raw_sqlite(self, name: str) -> RawInsert:
        conn = sqlite3.connect(self.tmp / f"{name}.db", isolation_level=None)
        self.stack.callback(conn.close)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return RawInsert(conn, "sqlite3")

    def raw_pg(self, schema: str) -> RawInsert:
        conn = psycopg.connect(self.pg_conninfo(schema), autocommit=True)
        self.stack.callback(conn.close)
        return RawInsert(conn, "psycopg")

    def sqlite_saver(self, name: str) -> SqliteSaver:
        return self.stack.enter_context(SqliteSaver.from_conn_string(str(self.tmp / f"{name}.db")))

    def async_sqlite_saver(self, name: str) -> AsyncSqliteSaver:
        path = str(self.tmp / f"{name}.db")
        return self.run(self.astack.enter_async_context(AsyncSqliteSaver.from_conn_string(path)))

    def pg_saver(self, schema: str) -> PostgresSaver:
        saver = self.stack.enter_context(PostgresSaver.from_conn_string(self.pg_conninfo(schema)))
        saver.setup()
        return saver

    def async_pg_saver(self, schema: str) -> AsyncPostgresSaver:
        conninfo = self.pg_conninfo(schema)
        saver = self.run(
            self.astack.enter_async_context(AsyncPostgresSaver.from_conn_string(conninfo))
        )
        self.run(saver.setup())
        return saver


def _pragmas(conn: Any) -> dict[str, Any]:
    """journal_mode and synchronous of an open sqlite3 connection (None: not readable)."""
    if conn is None:
        return {"journal_mode": None, "synchronous": None}
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": mode, "synchronous": SYNCHRONOUS.get(sync, sync)}


async def _apragmas(saver: AsyncSqliteSaver) -> dict[str, Any]:
    out = {}
    for name in ("journal_mode", "synchronous"):
        async with saver.conn.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
        assert row is not None
        out[name] = row[0]
    out["synchronous"] = SYNCHRONOUS.get(out["synchronous"], out["synchronous"])
    return out


def _store_conn(store: SqlStore) -> Any:
    """pitstop's own sqlite3 connection (private: read-only use, None if it moved)."""
    return getattr(getattr(store, "_backend", None), "_conn", None)


def _record_env(recorder: Recorder, pragmas: dict[str, dict[str, Any]]) -> None:
    peers = recorder.machine.setdefault("peers", {})
    versions = {}
    for dist in PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    peers["versions"] = versions
    peers.setdefault("sqlite_pragmas", {}).update(pragmas)


def _pg(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("pg_url")  # skips when PostgreSQL is unreachable
    return url


# --- the benchmarks -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
def test_peer_save(
    recorder: Recorder,
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    k: int,
) -> None:
    with Rig(tmp_path, loop, _pg(request)) as rig:
        full, full_async = rig.pitstop_sqlite("pitstop"), rig.pitstop_sqlite("pitstop-async")
        normal = rig.pitstop_sqlite("pitstop-normal", durability="normal")
        keep = rig.pitstop_sqlite("pitstop-keep")
        lg_sqlite, lg_asqlite = rig.sqlite_saver("lg-sync"), rig.async_sqlite_saver("lg-async")
        pg_sync, pg_async = rig.pitstop_pg(rig.schema()), rig.pitstop_pg(rig.schema())
        pg_normal = rig.pitstop_pg(rig.schema(), durability="normal")
        lg_pg, lg_apg = rig.pg_saver(rig.schema()), rig.async_pg_saver(rig.schema())
        subjects: dict[tuple[str, str], Subject] = {
            ("sqlite", "pitstop sync"): PitstopSync(full, "save"),
            ("sqlite", "pitstop async"): PitstopAsync(full_async, "save", loop),
            ("sqlite", "pitstop sync normal"): PitstopSync(normal, "save"),
            ("sqlite", KEEP_NAME): PitstopSync(keep, "save", CheckpointPolicy(keep_last=KEEP_LAST)),
            ("sqlite", "langgraph sync"): LangGraphSync(lg_sqlite, "save"),
            ("sqlite", "langgraph async"): LangGraphAsync(lg_asqlite, "save", loop),
            ("postgres", "pitstop sync"): PitstopSync(pg_sync, "save"),
            ("postgres", "pitstop async"): PitstopAsync(pg_async, "save", loop),
            ("postgres", "pitstop sync normal"): PitstopSync(pg_normal, "save"),
            ("postgres", "langgraph sync"): LangGraphSync(lg_pg, "save"),
            ("postgres", "langgraph async"): LangGraphAsync(lg_apg, "save", loop),
            ("sqlite", "raw insert"): rig.raw_sqlite("raw"),
            ("postgres", "raw insert"): rig.raw_pg(rig.schema()),
        }
        for subject in subjects.values():
            subject.first(k)
        if k == SIZES[0]:  # after the first writes: each library has set its connection up
            pragmas = {
                "pitstop (durability=full)": _pragmas(_store_conn(full)),
                "pitstop (durability=normal)": _pragmas(_store_conn(normal)),
                "SqliteSaver": _pragmas(lg_sqlite.conn),
                "AsyncSqliteSaver": rig.run(_apragmas(lg_asqlite)),
            }
            _record_env(recorder, pragmas)
        versions = itertools.count(1)

        def variant(subject: Subject) -> Sample:
            def sample() -> int:
                version = next(versions)
                i = version % k
                return subject.save(i, _output(i, version))

            return sample

        names = {f"{b} / {v}": (b, v) for b, v in subjects}
        after: dict[str, list[tuple[str, float]]] = {}
        summaries = interleave(
            {name: variant(subjects[key]) for name, key in names.items()},
            rounds=SAVE_ROUNDS[k],
            warmup=SAVE_WARMUP,
            after=after,
        )
        for name, (backend, v) in names.items():
            s = subjects[backend, v]
            recorder.add("peer_save", backend, k, "op", {v: summaries[name]},
                         saver=s.what, snapshots=s.snapshots,
                         **_by_predecessor(after[name]))  # fmt: skip


def _by_predecessor(samples: list[tuple[str, float]]) -> dict[str, Any]:
    """p50 and count of a variant's saves right after a LangGraph save, and of the rest.

    At K=10,000 a LangGraph put writes every channel's value (SQLite) or version
    (PostgreSQL) and takes 12-20 ms; whatever runs next finds the CPU caches full
    of its objects and, on the same backend, the database busy with its write. A
    put of either backend counts, so the split does not tell the two apart."""
    split: dict[str, list[float]] = {"langgraph": [], "other": []}
    for previous, seconds in samples:
        split["langgraph" if "langgraph" in previous else "other"].append(seconds)
    found: dict[str, Any] = {}
    for what, values in split.items():
        found[f"after_{what}_n"] = len(values)
        found[f"after_{what}_p50"] = percentile(values, 50) if values else None
    return found


def _fill(subject: Subject, k: int, saves: int) -> None:
    """A full save of K nodes, then ``saves - 1`` saves of one changed node each."""
    subject.first(k)
    for version in range(1, saves):
        i = version % k
        subject.save(i, _output(i, version))


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
def test_peer_restore(
    recorder: Recorder,
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    k: int,
) -> None:
    with Rig(tmp_path, loop, _pg(request)) as rig:
        sq, pg = rig.pitstop_sqlite("pitstop"), rig.pitstop_pg(rig.schema())
        lg_schema = rig.schema()
        lg_sqlite, lg_pg = rig.sqlite_saver("lg"), rig.pg_saver(lg_schema)
        for writer in (PitstopSync(sq, "r"), PitstopSync(pg, "r"),
                       LangGraphSync(lg_sqlite, "r"), LangGraphSync(lg_pg, "r")):  # fmt: skip
            _fill(writer, k, HISTORY)
        lg_asqlite, lg_apg = rig.async_sqlite_saver("lg"), rig.async_pg_saver(lg_schema)
        readers: dict[tuple[str, str], Subject] = {
            ("sqlite", "pitstop sync"): PitstopSync(sq, "r"),
            ("sqlite", "pitstop async"): PitstopAsync(sq, "r", loop),
            ("sqlite", "langgraph sync"): LangGraphSync(lg_sqlite, "r"),
            ("sqlite", "langgraph async"): LangGraphAsync(lg_asqlite, "r", loop),
            ("postgres", "pitstop sync"): PitstopSync(pg, "r"),
            ("postgres", "pitstop async"): PitstopAsync(pg, "r", loop),
            ("postgres", "langgraph sync"): LangGraphSync(lg_pg, "r"),
            ("postgres", "langgraph async"): LangGraphAsync(lg_apg, "r", loop),
        }

        def variant(reader: Subject) -> Sample:
            return lambda: reader.restore(k)

        names = {f"{b} / {v}": (b, v) for b, v in readers}
        summaries = interleave(
            {name: variant(readers[key]) for name, key in names.items()},
            rounds=RESTORE_ROUNDS[k],
            warmup=1,
        )
        for name, (backend, v) in names.items():
            recorder.add("peer_restore", backend, k, "op", {v: summaries[name]},
                         saver=readers[backend, v].what, history=HISTORY)  # fmt: skip


def test_peer_size(recorder: Recorder, tmp_path: Path) -> None:
    files: dict[str, tuple[Path, str]] = {}
    for name, policy in [
        ("pitstop sync", None),
        (KEEP_NAME, CheckpointPolicy(keep_last=KEEP_LAST)),
    ]:
        path = tmp_path / f"pitstop-{len(files)}.db"
        with SqlStore.sqlite(path) as store:  # closing the last connection checkpoints the WAL
            subject = PitstopSync(store, "size", policy)
            _fill(subject, SIZE_K, SIZE_SAVES)
        files[name] = (path, subject.what)
    path = tmp_path / "langgraph.db"
    with SqliteSaver.from_conn_string(str(path)) as saver:
        lg = LangGraphSync(saver, "size")
        _fill(lg, SIZE_K, SIZE_SAVES)
        saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files["langgraph sync"] = (path, lg.what)
    for name, (path, what) in files.items():
        size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        recorder.add("peer_size", "sqlite", SIZE_K, "bytes", {name: Summary(size, size, 1)},
                     saver=what, saves=SIZE_SAVES, bytes=size)  # fmt: skip

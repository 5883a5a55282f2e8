"""SqlStore / MemoryStore: targets, read-only opens, locks, schema versions,
the schema-1 migration, durability, and what importing pitstop loads."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pg_admin, rows_of

from pitstop import (
    CheckpointManager,
    CheckpointPolicy,
    CorruptCheckpoint,
    MemoryStore,
    SchemaVersionError,
    SqlStore,
    StaleBaseError,
    StoreError,
    SyncCheckpointManager,
)
from pitstop.storage import _models, _queries
from pitstop.storage._backends import BIG_SNAPSHOT, CACHE_KIB

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "target",
    [
        "",
        "   ",
        "sqlite:/x.db",
        "sqlite://x.db",
        "postgresql:/postgres@127.0.0.1:5432/test",
        "postgres//127.0.0.1/test",
        "mysql://root@localhost/db",
        ":memory:",
    ],
)
def test_store_typos_raise_instead_of_making_files(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        SqlStore(target)
    with pytest.raises(ValueError):
        SyncCheckpointManager("r", store=target, enabled=True)
    with pytest.raises(ValueError):
        CheckpointManager("r", store=target, enabled=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "where"),
    [("x.db", "x.db"), ("sqlite:///x.db", "x.db"), ("sub/y.db", "sub/y.db")],
)
def test_good_targets(
    target: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SyncCheckpointManager("r", store=target, enabled=True) as m:
        m.save_checkpoint()
    assert (tmp_path / where).is_file()


def test_run_ids_are_checked_at_construction() -> None:
    for bad in ("", "a\x00b", "lone \ud800"):
        with pytest.raises(ValueError):
            SyncCheckpointManager(bad)
    with pytest.raises(TypeError):
        SyncCheckpointManager(7)  # type: ignore[arg-type]


def test_disabled_manager_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SyncCheckpointManager("r") as m:
        assert m.can_resume() is False
        m.on_run_start(graph={"a": []})
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        m.on_run_end(success=True)
    assert list(tmp_path.iterdir()) == []


def test_import_and_disabled_manager_load_no_database_modules() -> None:
    code = (
        "import sys, pitstop\n"
        "m = pitstop.SyncCheckpointManager('r')\n"
        "a = pitstop.CheckpointManager('r')\n"
        "m.on_run_start(graph={'a': []}); m.on_node_start(node_id='a')\n"
        "m.on_node_finish(node_id='a', output=[1]); m.on_run_end(success=True)\n"
        "assert m.can_resume() is False\n"
        "import asyncio; assert asyncio.run(a.can_resume()) is False\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('sqlalchemy', 'sqlmodel', 'pydantic', 'pydantic_core', 'sqlite3', '_sqlite3', "
        "'psycopg', 'asyncpg', 'aiosqlite'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_statements_name_only_model_columns() -> None:
    tables = {name: set(t.c.keys()) for name, t in _models.TABLES.items()}
    assert set(_queries.RUN_COLS) <= tables[_queries.RUNS]
    assert set(_queries.HEADER_COLS) | {"state", "retired"} <= tables[_queries.CHECKPOINTS]
    assert set(_queries.NODE_COLS) | {"run_id"} <= tables[_queries.NODES]


def _sqlite_tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        return [r[0] for r in rows]


def _journal(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_readonly_open_of_a_foreign_file_changes_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.close()
    before = app.read_bytes()
    store = SqlStore(app, readonly=True)
    with pytest.raises(StoreError, match="no pitstop tables"):
        store.open()
    assert app.read_bytes() == before
    assert _sqlite_tables(app) == ["users"] and _journal(app) == "delete"


def test_readonly_open_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no SQLite file"):
        SqlStore(tmp_path / "nope.db", readonly=True).open()
    assert list(tmp_path.iterdir()) == []


def _write_run(path: Path) -> None:
    with SyncCheckpointManager(
        "r", store=path, enabled=True, policy=CheckpointPolicy(every_n_nodes=1)
    ) as m:
        for n in "ab":
            m.on_node_start(node_id=n)
            m.on_node_finish(node_id=n, output=n)


def test_readonly_store_reads_a_read_only_file(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    _write_run(db)
    db.chmod(0o444)
    try:
        with SqlStore(db, readonly=True) as store:
            m = SyncCheckpointManager("r", store=store, enabled=True)
            assert m.load_checkpoint().completed == {"a": "a", "b": "b"}
            with pytest.raises(StoreError, match="read-only"):
                m.save_checkpoint()
    finally:
        db.chmod(0o644)


def test_readonly_reads_create_no_files(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    _write_run(db)  # closed: WAL folded in, no -wal/-shm left
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == ["p.db"]
    with SqlStore(db, readonly=True) as store:
        assert SyncCheckpointManager("r", store=store, enabled=True).load_checkpoint().seq == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_opening_and_reading_never_wait_for_a_writer(tmp_path: Path) -> None:
    """Another process's open write transaction blocks neither open, list nor restore."""
    db = tmp_path / "p.db"
    _write_run(db)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "c.execute(\"UPDATE pitstop_runs SET error = 'x'\")\n"
         "print('locked', flush=True); time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with SyncCheckpointManager("r", store=db, enabled=True) as m:
            assert [i.seq for i in m.list_checkpoints()] == [1, 2]
            assert m.restore_checkpoint().completed == {"a": "a", "b": "b"}
            assert m.can_resume() is True
        assert time.monotonic() - started < 2.0
    finally:
        holder.kill()
        holder.communicate()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    _write_run(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE pitstop_schema SET version = 99")
    conn.close()
    with pytest.raises(SchemaVersionError) as err:
        SqlStore(db).open()
    assert (err.value.found, err.value.supported) == (99, 4)


def _fixture_database(path: Path, fixture: str) -> None:
    """A SQLite file at ``path`` holding the fixture dump ``DATA / fixture`` (an old schema)."""
    conn = sqlite3.connect(path)
    conn.executescript((DATA / fixture).read_text())
    conn.close()


def test_schema_1_database_migrates_and_restores(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _fixture_database(db, "v1_store.sql")
    with pytest.raises(StoreError, match="schema 1"):
        SqlStore(db, readonly=True).open()  # a read-only open never migrates
    with SyncCheckpointManager("etl", store=db, enabled=True) as m:
        assert m.can_resume() is True
        cp = m.restore_checkpoint()
        assert cp.completed == {
            "a": {"node": "a", "rows": [1, 2, 3]},
            "b": {"node": "b", "rows": [1, 2, 3]},
        }
        assert cp.interrupted == ("c",) and cp.state == {"cursor": 7}
        assert cp.metadata == {"v": 1} and cp.info.label == "mid-c"
        assert set(m.load_checkpoint(1).completed) == {"a"}
        assert [i.parent_seq for i in m.list_checkpoints()] == [None, 1, 2]
        m.on_node_start(node_id="c")
        m.on_node_finish(node_id="c", output="done")
        assert m.save_checkpoint().seq == 4
        assert set(m.load_checkpoint().completed) == {"a", "b", "c"}
    with SyncCheckpointManager("other", store=db, enabled=True) as m:
        node = m.restore_checkpoint().nodes["x"]
        assert node.output == [1.5, "two"] and node.started_at == 1700000000.25


def test_migration_keeps_damage_damaged(tmp_path: Path) -> None:
    from pitstop import CorruptCheckpoint

    db = tmp_path / "old.db"
    _fixture_database(db, "v1_store.sql")
    with sqlite3.connect(db) as conn:  # flip a byte of a schema-1 output before migrating
        conn.execute("UPDATE pitstop_node_states SET output = CAST('{\"node\":\"X\"}' AS BLOB) "
                     "WHERE run_id = 'etl' AND node_id = 'a'")  # fmt: skip
    conn.close()
    with (
        SyncCheckpointManager("etl", store=db, enabled=True) as m,
        pytest.raises(CorruptCheckpoint),
    ):
        m.restore_checkpoint()
    with SyncCheckpointManager("other", store=db, enabled=True) as m:
        assert m.restore_checkpoint().completed == {"x": [1.5, "two"]}


@pytest.mark.parametrize(
    ("damage", "unloadable"),
    [
        # seq 2's header: only seq 2 failed in version 1
        ("UPDATE pitstop_checkpoints SET metadata = CAST('{\"v\":2}' AS BLOB) WHERE seq = 2", {2}),
        # 'b' as written at seq 1, replaced by seq 2: only seq 1 read it
        ("UPDATE pitstop_node_states SET attempt = 9 WHERE node_id = 'b' AND seq = 1", {1}),
        # 'c' as written at seq 3: only seq 3 reads it
        ("UPDATE pitstop_node_states SET attempt = 9 WHERE node_id = 'c' AND seq = 3", {3}),
    ],
    ids=["header", "superseded-row", "latest-row"],
)
def test_migration_fails_exactly_what_version_1_could_not_load(
    tmp_path: Path, damage: str, unloadable: set[int]
) -> None:
    """Damage harms the checkpoints that read it, as in version 1, and no others."""
    db = tmp_path / "old.db"
    _fixture_database(db, "v1_store.sql")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(damage.replace("WHERE", "WHERE run_id = 'etl' AND"))
    conn.close()
    with SyncCheckpointManager("etl", store=db, enabled=True) as m:
        for seq in (1, 2, 3):
            if seq in unloadable:
                with pytest.raises(CorruptCheckpoint):
                    m.load_checkpoint(seq)
            else:
                assert m.load_checkpoint(seq).seq == seq


def test_durability_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqlStore(tmp_path / "a.db", durability="off")  # type: ignore[arg-type]
    for mode, expected in (("full", 2), ("normal", 1)):
        with SqlStore(tmp_path / f"{mode}.db", durability=mode) as store:  # type: ignore[arg-type]
            conn = store._backend._conn  # type: ignore[union-attr]
            assert conn is not None
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "mode, server, expected",
    [("full", "on", "on"), ("full", "off", "on"), ("full", "remote_apply", "remote_apply"),
     ("normal", "on", "off"), ("normal", "off", "off")],
)  # fmt: skip
def test_postgres_durability_applies_to_every_connection(
    pg_db: str, app: str, mode: str, server: str, expected: str
) -> None:
    # durability="normal" is synchronous_commit off on each pooled connection, also
    # on one that replaces a lost one. "full" keeps the session's setting unless it
    # is off (here set off or stronger by the connection's options, as a server,
    # database, role or PGOPTIONS default would): then it is on.
    options = f"-c synchronous_commit={server}"
    with SqlStore(pg_db, durability=mode, pool_size=2, application_name=app,  # type: ignore[arg-type]
                  options=options) as store:  # fmt: skip
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.on_node_finish(node_id="a", output=1)
        assert m.save_checkpoint().seq == 1
        backend: Any = store._backend
        for renewed in (False, True):
            if renewed:
                _idle_connections(store, 2)
                assert _terminate(app) == 2
                m.on_node_finish(node_id="b", output=2)
                assert m.save_checkpoint().seq == 2  # ran again on a new connection
            taken = [backend._take()[0] for _ in range(2)]
            try:
                for conn in taken:
                    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == expected
            finally:
                for conn in taken:
                    backend._give_back(conn)
        assert SyncCheckpointManager("r", store=store, enabled=True).restore_checkpoint().seq == 2


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["full", "normal"])
def test_postgres_session_settings_work_when_every_statement_is_prepared(
    pg_db: str, mode: str
) -> None:
    # prepare_threshold=0 prepares every statement; the settings a connection runs
    # first are two commands, which no prepared statement can hold.
    with SqlStore(pg_db, durability=mode, prepare_threshold=0) as store:  # type: ignore[arg-type]
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.on_node_finish(node_id="a", output=1)
        assert m.save_checkpoint().seq == 1
        cp = SyncCheckpointManager("r", store=store, enabled=True).restore_checkpoint()
        assert cp.completed == {"a": 1}


def _lose(target: str, seq: int) -> None:
    """What a crash that loses a save's commit leaves: none of the rows it wrote (a
    save writes its checkpoint row, its snapshot or node rows; not the run's row,
    unless the run's fields changed, and these saves change none of them)."""
    for table in ("pitstop_checkpoints", "pitstop_snapshots", "pitstop_node_states"):
        rows_of(target, f"DELETE FROM {table} WHERE run_id = 'r' AND seq = {seq}")


@pytest.mark.parametrize("snapshot_small", [0, 4096], ids=["deltas", "snapshots"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_save_after_its_base_commit_was_lost_is_stale(
    backend: str, snapshot_small: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Under durability="normal" a crash may lose the newest commits whole, and their
    # seqs come again. A manager that outlived the crash must not save on top of
    # what is there now: neither when its base is gone (the high-water seq went
    # back), nor when another writer has since saved a different checkpoint at its
    # base's seq (the high-water seq is the same again: only the base's checksum
    # tells). It gets StaleBaseError, and the other writer's checkpoint stays.
    target = (str(tmp_path / "p.db") if backend == "sqlite"
              else request.getfixturevalue("pg_db"))  # fmt: skip
    policy = CheckpointPolicy(snapshot_small=snapshot_small)
    with SqlStore(target, durability="normal") as store:
        m = SyncCheckpointManager("r", store=store, enabled=True, policy=policy)
        m.on_run_start(graph={"a": (), "b": (), "c": (), "x": ()})
        m.on_node_finish(node_id="a", output=1)
        assert m.save_checkpoint().snapshot
        m.on_node_finish(node_id="b", output=2)
        assert m.save_checkpoint().snapshot is (snapshot_small > 0)
        _lose(target, 2)
        m.on_node_finish(node_id="c", output=3)
        with pytest.raises(StaleBaseError) as caught:  # the base is gone
            m.save_checkpoint()
        assert (caught.value.expected, caught.value.found) == (2, 1)

        o = SyncCheckpointManager("r", store=store, enabled=True, policy=policy)
        assert o.restore_checkpoint().completed == {"a": 1}
        o.on_node_finish(node_id="x", output=99)
        assert o.save_checkpoint().seq == 2  # seq 2 again, another checkpoint
        with pytest.raises(StaleBaseError, match="seq 2, this manager's base, now holds") as caught:
            m.save_checkpoint()
        assert (caught.value.expected, caught.value.found, caught.value.replaced) == (2, 2, 2)

        cp = SyncCheckpointManager("r", store=store, enabled=True).restore_checkpoint()
        assert (cp.seq, cp.completed) == (2, {"a": 1, "x": 99})
        m.restore_checkpoint()  # what the error says to do: then it saves again
        assert m.save_checkpoint().seq == 3


def test_sqlite_page_cache_holds_a_big_snapshot(tmp_path: Path) -> None:
    # SQLite's default page cache (2 MiB) is smaller than the snapshot of 10,000
    # nodes: every restore read it again from the file. Writers and readers alike.
    assert CACHE_KIB * 1024 > 4 * 2**20
    path = tmp_path / "a.db"
    with SqlStore(path) as store:
        SyncCheckpointManager("r", store=store, enabled=True).save_checkpoint()
        with SqlStore(path, readonly=True) as reader:
            reader.open()
            for s in (store, reader):
                conn = s._backend._conn  # type: ignore[union-attr]
                assert conn is not None
                assert conn.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB


def _wal_restarts(path: Path) -> int:
    """The checkpoint sequence number in the header of ``path``'s WAL: SQLite adds 1
    each time a write restarts the WAL from its start (and syncs the new header)."""
    return int.from_bytes(Path(f"{path}-wal").read_bytes()[12:16], "big")


def test_a_big_snapshot_restarts_the_wal_in_its_own_save(tmp_path: Path) -> None:
    # The WAL is folded into the database before a big snapshot, not after it, so
    # the restart that follows a full fold (a header sync) is the snapshot's, a slow
    # save anyway, and not the next small save's.
    path = tmp_path / "a.db"
    policy = CheckpointPolicy(snapshot_every=3)
    with (
        SqlStore(path) as store,
        SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m,
    ):
        m.on_run_start(graph={f"n{i:03}": () for i in range(600)})
        for i in range(600):
            m.on_node_finish(node_id=f"n{i:03}", output="x" * 500)
        assert m.save_checkpoint().size >= BIG_SNAPSHOT
        seen = []
        for v in range(9):
            m.on_node_finish(node_id="n000", output=str(v))
            before = _wal_restarts(path)
            info = m.save_checkpoint()
            seen.append((info.snapshot, _wal_restarts(path) - before))
        assert seen == [(False, 0), (False, 0), (True, 1)] * 3


def test_unclosed_sql_store_warns(tmp_path: Path) -> None:
    store = SqlStore(tmp_path / "a.db")
    store.open()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del store
        import gc

        gc.collect()


def test_memory_store_is_private_to_each_instance() -> None:
    with MemoryStore() as one, MemoryStore() as two:
        SyncCheckpointManager("r", store=one, enabled=True).save_checkpoint()
        assert SyncCheckpointManager("r", store=two, enabled=True).can_resume() is False
        assert SyncCheckpointManager("r", store=one, enabled=True).can_resume() is True


@pytest.mark.postgres
def test_concurrent_first_opens_of_a_fresh_postgres_database(pg_db: str) -> None:
    code = (
        "import sys\nfrom pitstop import SyncCheckpointManager\n"
        "with SyncCheckpointManager(sys.argv[2], store=sys.argv[1], enabled=True) as m:\n"
        "    m.save_checkpoint()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_db, f"w{i}"], stderr=subprocess.PIPE)
        for i in range(6)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    with SqlStore(pg_db, readonly=True) as store:
        for i in range(6):
            assert SyncCheckpointManager(f"w{i}", store=store, enabled=True).can_resume()


@pytest.mark.postgres
def test_postgres_schema_is_created_once_and_survives_reopen(pg_db: str) -> None:
    with SyncCheckpointManager("r", store=pg_db, enabled=True) as m:
        m.save_checkpoint()
    with SqlStore(pg_db, readonly=True) as store:
        assert SyncCheckpointManager("r", store=store, enabled=True).load_checkpoint().seq == 1


@pytest.mark.postgres
def _copy_into_postgres(fixture: str, pg_db: str) -> None:
    """The tables, rows and indexes of a SQLite fixture of ``DATA``, as they are, in
    PostgreSQL (an old schema there, for its migration)."""
    import psycopg

    lite = sqlite3.connect(":memory:")
    lite.executescript((DATA / fixture).read_text())
    with psycopg.connect(pg_db, autocommit=True) as pg:
        tables = lite.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        # (The references' foreign key needs the blob table first.)
        for name, sql in sorted(tables.fetchall(), key=lambda t: t[0] == "pitstop_blob_refs"):
            pg.execute(sql.replace("BLOB", "BYTEA").replace("FLOAT", "DOUBLE PRECISION"))
            rows = lite.execute(f"SELECT * FROM {name}").fetchall()
            if rows:
                marks = ", ".join(["%s"] * len(rows[0]))
                with pg.cursor() as cur:
                    cur.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
        for (index,) in lite.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ):
            pg.execute(index)
    lite.close()


_PLACED = (
    "SELECT c.seq, c.snapshot IS NOT NULL, s.seq IS NOT NULL FROM pitstop_checkpoints c "
    "LEFT JOIN pitstop_snapshots s ON s.run_id = c.run_id AND s.seq = c.seq "
    "WHERE c.run_id = 'small' ORDER BY c.seq"
)
"""Run 'small''s checkpoints: seq, snapshot in the row, snapshot in pitstop_snapshots."""


def test_schema_1_database_migrates_on_postgres(pg_db: str) -> None:
    """The same v1 data, copied into PostgreSQL tables of schema 1, migrates there too."""
    _copy_into_postgres("v1_store.sql", pg_db)
    with SyncCheckpointManager("etl", store=pg_db, enabled=True) as m:
        cp = m.restore_checkpoint()
        assert set(cp.completed) == {"a", "b"} and cp.interrupted == ("c",)
        assert cp.state == {"cursor": 7}
        assert [i.parent_seq for i in m.list_checkpoints()] == [None, 1, 2]
        m.on_node_start(node_id="c")
        m.on_node_finish(node_id="c", output="done")
        assert m.save_checkpoint().seq == 4


@pytest.mark.small_snapshots
def test_schema_3_database_migrates_on_postgres(pg_db: str) -> None:
    """The schema 3 data, copied into PostgreSQL tables of schema 3, migrates there
    too: its snapshots stay in pitstop_snapshots and restore; a new one goes in its row."""
    import psycopg

    _copy_into_postgres("v3_store.sql", pg_db)
    with SyncCheckpointManager("small", store=pg_db, enabled=True) as m:
        assert m.restore_checkpoint().completed == {"x": [1, 2], "y": {"y": True}}
        m.on_node_finish(node_id="z", output="z")
        assert m.save_checkpoint().snapshot
    with SyncCheckpointManager("etl", store=pg_db, enabled=True) as m:
        assert m.restore_checkpoint().interrupted == ("load",)
    with psycopg.connect(pg_db, autocommit=True) as pg:
        assert pg.execute("SELECT version FROM pitstop_schema").fetchone() == (4,)
        placed = pg.execute(_PLACED).fetchall()
        assert placed == [(1, False, True), (2, False, True), (3, True, False)]


def test_schema_2_database_migrates_and_restores(tmp_path: Path) -> None:
    """A store written by pitstop 0.1 before serialization v2 (schema 2, JSON outputs)."""
    db = tmp_path / "v2.db"
    _fixture_database(db, "v2_store.sql")
    with pytest.raises(StoreError, match="schema 2, older than 4"):
        SqlStore(db, readonly=True).open()
    with SyncCheckpointManager("etl", store=db, enabled=True) as m:
        assert m.can_resume() is True
        cp = m.restore_checkpoint()
        assert cp.completed == {
            "extract": {"rows": [1, 2, 3], "source": "s3://bucket/x"},
            "transform": [{"id": i, "v": i * 1.5} for i in range(5)],
        }
        assert cp.failed == {"load": "RuntimeError: db down"} and cp.state == {"cursor": 2}
        assert [i.serializer for i in m.list_checkpoints()] == ["json"] * 4
        m.on_node_start(node_id="load")
        m.on_node_finish(node_id="load", output=(3, "rows"))  # typed: a tuple stays a tuple
        info = m.save_checkpoint()
        assert info.seq == 5 and not info.snapshot
    with SyncCheckpointManager("etl", store=db, enabled=True) as m:
        # A format 4 delta (xxh3-128 digests) on a chain of format 2 (sha256): each
        # checkpoint verifies under its own format's hash.
        assert [i.schema_version for i in m.list_checkpoints()] == [2, 2, 2, 2, 4]
        cp = m.load_checkpoint()
        assert cp.completed["load"] == (3, "rows") and cp.completed["extract"]["rows"] == [1, 2, 3]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM pitstop_schema").fetchone() == (4,)
    conn.close()


@pytest.mark.small_snapshots
def test_schema_3_database_migrates_and_restores(tmp_path: Path) -> None:
    """A store written before snapshots moved into their checkpoint's row (schema 3):
    its snapshots, all in pitstop_snapshots, still restore, and new small ones go in
    the row."""
    import datetime as dt

    db = tmp_path / "v3.db"
    _fixture_database(db, "v3_store.sql")
    with pytest.raises(StoreError, match="schema 3, older than 4"):
        SqlStore(db, readonly=True).open()
    with SyncCheckpointManager("etl", store=db, enabled=True) as m:
        cp = m.restore_checkpoint()
        assert cp.completed == {"extract": {"rows": [1, 2, 3], "at": dt.date(2026, 11, 26)},
                                "transform": (1.5, "two")}  # fmt: skip
        assert cp.interrupted == ("load",) and cp.state == {"cursor": 2}
        assert m.load_checkpoint(1).state == {"cursor": 1}
        m.on_node_start(node_id="load")
        m.on_node_finish(node_id="load", output=3)
        assert m.save_checkpoint().seq == 3
    with SyncCheckpointManager("small", store=db, enabled=True) as m:
        assert m.restore_checkpoint().completed == {"x": [1, 2], "y": {"y": True}}
        assert set(m.load_checkpoint(1).completed) == {"x"}
        m.on_node_start(node_id="z")
        m.on_node_finish(node_id="z", output="z")
        info = m.save_checkpoint()
        assert info.seq == 3 and info.snapshot
    with SyncCheckpointManager("small", store=db, enabled=True) as m:
        assert m.restore_checkpoint().completed == {"x": [1, 2], "y": {"y": True}, "z": "z"}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT version FROM pitstop_schema").fetchone() == (4,)
        # The new snapshot is in its row; the old ones stay where schema 3 put them.
        placed = conn.execute(_PLACED).fetchall()
        assert placed == [(1, 0, 1), (2, 0, 1), (3, 1, 0)]
    finally:
        conn.close()


def _rows_filtered(plan: object) -> int:
    """Rows a PostgreSQL plan (EXPLAIN ANALYZE, FORMAT JSON) read and threw away."""
    if isinstance(plan, list):
        return sum(map(_rows_filtered, plan))
    if not isinstance(plan, dict):
        return 0
    own = int(plan.get("Rows Removed by Filter", 0)) + int(plan.get("Heap Fetches", 0))
    return own + sum(_rows_filtered(v) for v in plan.values() if isinstance(v, (list, dict)))


@pytest.mark.postgres
def test_a_postgres_save_checks_its_base_by_key_not_by_the_run_history(pg_db: str) -> None:
    # The base check once counted `seq IN (parent, root)` among the run's rows, which
    # the planner ran as a scan of every checkpoint of the run: saves grew with history.
    with SqlStore(pg_db) as store, SyncCheckpointManager("r", store=store, enabled=True) as m:
        m.on_run_start(graph={"a": ()})
        for i in range(150):
            m.on_node_finish(node_id="a", output=i)
            m.save_checkpoint()
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("BEGIN")
        sql, params = _queries.POSTGRES.sql["run_lock"], (149, 1, 149, "r")
        [(plan,)] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()
        assert _rows_filtered(plan) < 10, plan
        # The high-water seq; the base's parent and root both found; the base's checksum.
        row = conn.execute(
            "SELECT checksum FROM pitstop_checkpoints WHERE run_id = 'r' AND seq = 149"
        ).fetchone()
        assert row is not None and len(row[0]) == 32
        assert conn.execute(sql, params).fetchall() == [(150, 2, row[0])]
        conn.execute("ROLLBACK")


@pytest.mark.postgres
def test_every_shape_of_a_one_statement_save_checks_its_base_apart_from_the_seq(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each shape, saved on an older base (a restore of seq 1, while the run's
    # high-water seq is higher), so the base's seq and the high-water seq differ:
    # it saves with its base's checksum and is stale with any other one.
    from pitstop.storage import _programs

    used: list[str] = []
    key_of = _queries.save_at_once_key

    def spy(kind: _queries.SaveKind, rows: int, run: bool) -> str:
        used.append(key_of(kind, rows, run))
        return used[-1]

    monkeypatch.setattr(_programs, "save_at_once_key", spy)
    policy = CheckpointPolicy(snapshot_small=0, snapshot_every=1000)
    outcomes: dict[str, set[str]] = {}
    with SqlStore(pg_db) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True, policy=policy)
        m.on_run_start(graph={f"n{i}": () for i in range(3)})
        m.save_checkpoint()
        m.on_node_start(node_id="n0")
        m.save_checkpoint()
        shapes = [(rows, False, False) for rows in (0, 1, 2)] + [(3, True, False), (3, True, True)]
        for rows, snapshot, big in shapes:
            for run_changed in (True, False):
                for checksum in ("kept", "other"):
                    every = CheckpointPolicy(snapshot_small=0, snapshot_every=1)
                    w = SyncCheckpointManager("r", store=store, enabled=True,
                                              policy=every if snapshot else policy)  # fmt: skip
                    w.restore_checkpoint(1)
                    core: Any = w._core
                    if not run_changed:
                        core.run_written = core.run_fields()
                    for i in range(rows):
                        w.on_node_finish(
                            node_id=f"n{i}", output=os.urandom(5000).hex() if big else i
                        )
                    if checksum == "other":
                        core.base_checksum = "0" * 32
                    used.clear()
                    try:
                        info = w.save_checkpoint()
                        assert info.snapshot is snapshot
                        outcome = "saved" if info.parent_seq == 1 else f"parent {info.parent_seq}"
                    except StaleBaseError:
                        outcome = "stale"
                    outcomes.setdefault(used[0], set()).add(f"{checksum}: {outcome}")
        assert set(outcomes) == set(_queries.SAVE_AT_ONCE), sorted(outcomes)  # all ten
        assert all(o == {"kept: saved", "other: stale"} for o in outcomes.values()), outcomes
        reader = SyncCheckpointManager("r", store=store, enabled=True)
        for info in reader.list_checkpoints():
            reader.load_checkpoint(info.seq)  # every checkpoint written verifies


def test_a_sqlite_save_checks_its_base_by_key(tmp_path: Path) -> None:
    with (
        SqlStore.sqlite(tmp_path / "p.db") as store,
        SyncCheckpointManager("r", store=store, enabled=True) as m,
    ):
        m.save_checkpoint()
    conn = sqlite3.connect(tmp_path / "p.db")
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + _queries.SQLITE.sql["run_lock"], (1, 1, 1, "r")
        ).fetchall()
    finally:
        conn.close()
    details = [row[-1] for row in plan]
    # Every read of pitstop_checkpoints seeks its key: no scan of the run's rows.
    reads = [d for d in details if "pitstop_checkpoints" in d]
    assert len(reads) == 4, details
    assert all(d.startswith("SEARCH") for d in reads), details
    assert sum("seq=?" in d for d in reads) == 3, details


_TABLES = ("pitstop_runs", "pitstop_checkpoints", "pitstop_snapshots", "pitstop_node_states",
           "pitstop_blobs", "pitstop_blob_refs")  # fmt: skip


def _saves_of_every_shape(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Deltas, small and big snapshots, state, run-row changes, a blob, retention, a
    save after a restore and a stale one; then every row of every table."""
    graph = {"a": (), "b": (), "c": ()}
    policy = CheckpointPolicy(snapshot_every=3, keep_last=3)
    big = random.Random(7).randbytes(_queries.SNAPSHOT_IN_ROW + 1024)  # zstd cannot shrink it
    with SqlStore.sqlite(path) as store:
        with SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m:
            m.on_run_start(graph=graph)
            m.save_checkpoint()
            m.on_node_start(node_id="a")
            m.on_node_finish(node_id="a", output={"a": 1})
            m.save_checkpoint(label="one row")
            m.on_node_finish(node_id="b", output=list(range(20_000)))  # a blob (dedup)
            m.save_checkpoint(state={"s": 1}, metadata={"k": "v"})
            m.on_node_error(node_id="c", error="boom")
            m.on_run_end(success=False, error=RuntimeError("boom"))  # the run row changes
            m.on_run_start(graph=graph)
            m.on_node_finish(node_id="c", output=big)  # the next snapshot is too big for its row
            for _ in range(4):
                m.save_checkpoint()
        with SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m:
            m.restore_checkpoint()
            m.on_node_start(node_id="a")
            m.save_checkpoint()  # after a restore: the run row is written again
            with SyncCheckpointManager("r", store=store, enabled=True) as other:
                other.restore_checkpoint()
                other.save_checkpoint()
            with pytest.raises(StaleBaseError):
                m.save_checkpoint()
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in _TABLES}
    finally:
        conn.close()


def test_sqlite_runs_the_save_program_straight_and_writes_what_it_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SqliteBackend._save`` runs ``save``'s parts on its cursor instead of driving the
    program: for the same saves, at the same clock, every table ends up the same.
    (Both run the same helpers, so this checks how the straight run uses them; what
    the helpers decide is the conformance and integrity suites' part.)"""
    from pitstop.storage import _backends, _programs

    ticks = iter(range(10**9))
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0 + next(ticks))
    direct = _saves_of_every_shape(tmp_path / "direct.db")
    ran: list[int] = []

    def program(cur: sqlite3.Cursor, plan: Any) -> Any:
        ran.append(1)
        return _backends.drive(cur, _queries.SQLITE, _programs.save(plan),
                               errors=(sqlite3.DatabaseError,))  # fmt: skip

    monkeypatch.setattr(_backends.SqliteBackend, "_save", staticmethod(program))
    ticks = iter(range(10**9))
    driven = _saves_of_every_shape(tmp_path / "driven.db")
    assert len(ran) == 11  # every save went through the program this time
    assert driven == direct
    # Every table holds rows at the end: each kind of write was compared.
    assert all(direct[t] for t in _TABLES), {t: len(rows) for t, rows in direct.items()}


@pytest.mark.postgres
def test_every_shape_of_a_one_statement_postgres_save(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pitstop.storage import _programs

    used: list[str] = []

    def spy(kind: _queries.SaveKind, rows: int, run: bool) -> str:
        used.append(_queries.save_at_once_key(kind, rows, run))
        return used[-1]

    monkeypatch.setattr(_programs, "save_at_once_key", spy)
    graph = {"a": (), "b": (), "c": ()}
    every3 = CheckpointPolicy(snapshot_every=3)
    with SqlStore(pg_db) as store:
        with SyncCheckpointManager("r", store=store, enabled=True, policy=every3) as m:
            m.on_run_start(graph=graph)
            m.save_checkpoint()  # the first: a transaction (the high-water seq is unknown)
            m.on_node_start(node_id="a")
            m.save_checkpoint()  # d1: one row
            m.on_node_finish(node_id="a", output={"a": 1})
            m.on_node_start(node_id="b")
            m.save_checkpoint()  # d2: two rows
            m.save_checkpoint(state={"s": 1})  # i0: the third since the snapshot, small
            m.on_node_error(node_id="b", error="boom")
            m.on_node_start(node_id="c")
            m.save_checkpoint()  # d2
            m.on_run_end(success=False, error=RuntimeError("boom"))  # d0r: the save on failure
            m.on_run_start(graph=graph)  # a new attempt: the run row changes again
            m.on_node_finish(node_id="c", output=3)
            m.save_checkpoint()  # i0r
            m.on_node_start(node_id="b")
            m.save_checkpoint()  # d1
        assert used == ["save_at_once.d1", "save_at_once.d2", "save_at_once.i0", "save_at_once.d2",
                        "save_at_once.d0r", "save_at_once.i0r", "save_at_once.d1"]  # fmt: skip
        every9 = CheckpointPolicy(snapshot_every=9)
        with SyncCheckpointManager("r", store=store, enabled=True, policy=every9) as m:
            cp = m.restore_checkpoint()
            assert cp.completed == {"a": {"a": 1}, "c": 3} and cp.interrupted == ("b",)
            assert cp.state == {"s": 1}
            m.on_node_error(node_id="b", error="again")
            m.save_checkpoint()  # d1r: after a restore the run row is written again
            m.on_node_finish(node_id="b", output=2)
            m.on_node_start(node_id="a")
            m.on_run_start(graph=graph)  # another attempt
            m.save_checkpoint()  # d2r
            m.on_run_start(graph=graph)
            m.save_checkpoint()  # d0r
            m.save_checkpoint(state={"s": 2})  # d0
        assert used[7:] == ["save_at_once.d1r", "save_at_once.d2r", "save_at_once.d0r",
                            "save_at_once.d0"], used  # fmt: skip
        with SyncCheckpointManager("r", store=store, enabled=True) as m:
            cp = m.restore_checkpoint()
            assert cp.completed == {"b": 2, "c": 3} and cp.interrupted == ("a",)
            assert cp.state == {"s": 2} and cp.info.run_id == "r"
            info = m.run_info()  # as the last run-row write (d0r) left it
            assert info is not None and (info.status.value, info.attempt) == ("running", 4)
        # Snapshots too big for their row (SNAPSHOT_IN_ROW) write pitstop_snapshots too.
        big = {f"n{i:02}": f"{i}" * 500 for i in range(_queries.SNAPSHOT_IN_ROW // 500)}
        every1 = CheckpointPolicy(snapshot_every=1)
        with SyncCheckpointManager("big", store=store, enabled=True, policy=every1) as m:
            m.on_run_start(graph={node: () for node in big})
            for node, out in big.items():
                m.on_node_finish(node_id=node, output=out)
            m.save_checkpoint()  # a transaction (a new run)
            m.save_checkpoint()  # s0
            m.on_run_end(success=False, error=RuntimeError("late"))  # s0r
        assert used[11:] == ["save_at_once.s0", "save_at_once.s0r"], used
        with SyncCheckpointManager("big", store=store, enabled=True) as m:
            assert m.restore_checkpoint().completed == big
    assert set(used) == set(_queries.SAVE_AT_ONCE)  # every statement ran


@pytest.mark.postgres
def test_postgres_pool_bounds_its_connections_under_many_threads(pg_db: str) -> None:
    import threading

    errors: list[BaseException] = []
    with SqlStore(pg_db, pool_size=2) as store:
        backend = store._backend

        def work(n: int) -> None:
            try:
                with SyncCheckpointManager(f"w{n}", store=store, enabled=True) as m:
                    for i in range(15):
                        m.on_node_finish(node_id="a", output=i)
                        m.save_checkpoint()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        opened = len(backend._all)  # type: ignore[union-attr]
        assert 1 <= opened <= 2  # never more connections than the pool's size
        for n in range(8):
            m = SyncCheckpointManager(f"w{n}", store=store, enabled=True)
            assert m.restore_checkpoint().completed == {"a": 14}
    assert backend._all == []  # type: ignore[union-attr]


def test_a_postgres_read_is_one_round_trip_in_a_read_only_repeatable_read_snapshot(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one_step read's statements go in one pipeline between BEGIN ISOLATION LEVEL
    # REPEATABLE READ, READ ONLY and COMMIT; an unmarked read runs in a transaction
    # of its own; a marked read that asks for more after all runs again, whole, in
    # one; a failing read gives the connection back clean.

    from pitstop.storage._programs import Batch, Call, Stmt, one_step

    mode = "current_setting('transaction_isolation'), current_setting('transaction_read_only')"
    monkeypatch.setitem(_queries.POSTGRES.sql, "t_mode", f"SELECT {mode}, now()")
    monkeypatch.setitem(_queries.POSTGRES.sql, "t_fail", "SELECT 1 / 0")
    starts: list[str] = []

    @one_step
    def batch() -> Any:
        starts.append("batch")
        first, second = yield Batch((Stmt("t_mode"), Stmt("t_mode")))
        return first[0], second[0]

    def two_steps() -> Any:
        starts.append("two")
        first = yield Stmt("t_mode")
        second = yield Stmt("t_mode")
        return first[0], second[0]

    @one_step
    def marked_but_two_steps() -> Any:
        starts.append("marked")
        return (yield from two_steps())

    @one_step
    def failing() -> Any:
        yield Batch((Stmt("t_mode"), Stmt("t_fail")))

    with SqlStore(pg_db, pool_size=1) as store:
        backend = store._backend
        again = ["marked", "two", "marked", "two"]
        for program, runs in ((batch, ["batch"]), (two_steps, ["two"]),
                              (marked_but_two_steps, again)):  # fmt: skip
            starts.clear()
            first, second = store.execute(Call(program, (), False))
            assert first[:2] == ("repeatable read", "on")
            assert first == second  # now(): one transaction for both statements
            assert starts == runs  # the marked one asked for more: it ran again, whole
        with pytest.raises(StoreError, match="division by zero"):
            store.execute(Call(failing, (), False))
        assert backend._in_use == 0  # type: ignore[union-attr]
        first, _ = store.execute(Call(batch, (), False))  # the pool still serves
        assert first[:2] == ("repeatable read", "on")


def test_only_reads_that_ask_once_are_marked_one_step() -> None:
    # What PostgreSQL runs in one round trip must not need a second.
    from pitstop.adapters import _langgraph_sql as LG
    from pitstop.storage import _programs as P

    marked = [P.load, P.run_info, P.list_runs, P.blob_stats, P.list_checkpoints,
              LG.langgraph_tables, LG.langgraph_list]  # fmt: skip
    assert all(getattr(fn, "one_step", False) for fn in marked)
    for fn in (P.save, P.delete, P.prune, P.set_run, LG.langgraph_get, LG.langgraph_put):
        assert not getattr(fn, "one_step", False), fn.__name__


@pytest.fixture
def app() -> str:
    """An application_name of the test's own, to find its connections on the server."""
    import uuid

    return f"pitstop-lost-{uuid.uuid4().hex[:10]}"


def _terminate(app: str) -> int:
    """Terminate every server backend of connections named ``app``; how many."""
    with pg_admin() as admin:
        row = admin.execute(
            # With a timeout it returns once each backend has exited (PostgreSQL 14+):
            # the test's next call then surely finds its connection lost.
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = %s) t",
            (app,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_postgres_pooled_connections_lost_while_idle_are_replaced(
    pg_db: str, twin: str, app: str
) -> None:
    # The server restarted, or a proxy dropped idle connections: a read or a fenced
    # save on such a pooled connection runs again, once, on a new one.
    import asyncio

    async def call(m: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        found = getattr(m, name)(*args, **kwargs)
        return (await found) if asyncio.iscoroutine(found) else found

    async def story() -> None:
        with SqlStore(pg_db, pool_size=2, application_name=app) as store:
            cls = SyncCheckpointManager if twin == "sync" else CheckpointManager
            m = cls("r", store=store, enabled=True)
            for node in ("a", "b"):
                await call(m, "on_node_finish", node_id=node, output=node)
                await call(m, "save_checkpoint")
                assert _terminate(app) >= 1
            assert (await call(m, "load_checkpoint")).completed == {"a": "a", "b": "b"}
            assert _terminate(app) >= 1
            reader = cls("r", store=store, enabled=True)
            restored = await call(reader, "restore_checkpoint")
            assert restored.completed == {"a": "a", "b": "b"}
            await call(reader, "on_node_finish", node_id="c", output="c")
            info = await call(reader, "save_checkpoint")
            assert info.nodes_written == 1
            assert [c.seq for c in await call(reader, "list_checkpoints")] == [1, 2, 3]

    asyncio.run(story())


def _idle_connections(store: SqlStore, n: int) -> None:
    """Leave ``n`` connections idle in the store's pool."""
    backend: Any = store._backend
    taken = [backend._take()[0] for _ in range(n)]
    for conn in taken:
        backend._give_back(conn)
    assert len(backend._idle) == n


def test_postgres_calls_that_may_not_run_twice_fail_once_and_the_pool_renews(
    pg_db: str, app: str
) -> None:
    # A delete, or a run's first save from a manager (no expected seq fences it),
    # is not run again; it fails with StoreError, and every other idle connection,
    # lost too, is dropped with it: the next call works.
    with SqlStore(pg_db, pool_size=3, application_name=app) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.on_node_finish(node_id="a", output=1)
        _idle_connections(store, 3)
        assert _terminate(app) == 3
        with pytest.raises(StoreError, match="save failed"):
            m.save_checkpoint()
        assert m.save_checkpoint().nodes_written == 1  # "a" was kept pending
        m.on_node_finish(node_id="b", output=2)
        m.save_checkpoint()
        _idle_connections(store, 3)
        assert _terminate(app) == 3
        with pytest.raises(StoreError, match="delete failed"):
            m.delete(1)
        assert m.delete(1) == 1
        assert [c.seq for c in m.list_checkpoints()] == [2]


def test_postgres_save_with_retention_runs_again_on_a_new_connection(pg_db: str, app: str) -> None:
    # keep_last makes the save a transaction of several statements (not the
    # one-statement save): it runs again whole.
    with SqlStore(pg_db, pool_size=2, application_name=app) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True,
                                  policy=CheckpointPolicy(keep_last=2))  # fmt: skip
        for i in range(4):
            m.on_node_finish(node_id=f"n{i}", output=i)
            if i:
                _idle_connections(store, 2)
                assert _terminate(app) == 2
            assert m.save_checkpoint().seq == i + 1
        assert [c.seq for c in m.list_checkpoints()] == [3, 4]
        assert m.load_checkpoint().completed == {f"n{i}": i for i in range(4)}


def test_postgres_save_whose_answer_was_lost_after_its_commit_happened_once(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The save committed, then its connection died before the answer came back:
    # the second attempt finds the run's seq moved by its own checkpoint (same seq,
    # same checksum) and reports the save done, once.
    from pitstop.storage import _backends
    from pitstop.storage._programs import save

    real = _backends.PostgresBackend._run_on
    armed = [True]

    def answer_lost(self: Any, conn: Any, call: Any) -> Any:
        result = real(self, conn, call)
        if call.program is save and armed and call.args[0].expected_hwm is not None:
            armed.clear()
            with self._turn:  # take it back from the pool, as if still in use
                self._idle.remove(conn)
                self._in_use += 1
            with pg_admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
            try:
                with _backends.wrap_errors(call, self.where, ()):
                    conn.execute("SELECT 1")  # the lost answer
            finally:
                self._discard(conn)
                self._give_back(None)
        return result

    monkeypatch.setattr(_backends.PostgresBackend, "_run_on", answer_lost)
    with SqlStore(pg_db, pool_size=2) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.on_node_finish(node_id="a", output=1)
        assert m.save_checkpoint().seq == 1
        m.on_node_finish(node_id="b", output=2)
        assert m.save_checkpoint().seq == 2
        assert not armed  # the answer was lost, and the save ran again
        m.on_node_finish(node_id="c", output=3)
        assert m.save_checkpoint().seq == 3
        assert [(c.seq, c.parent_seq) for c in m.list_checkpoints()] == [(1, None), (2, 1), (3, 2)]
        assert m.load_checkpoint().completed == {"a": 1, "b": 2, "c": 3}

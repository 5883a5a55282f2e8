"""SqlStore specifics: URLs, SQLite setup, schema versions, errors, concurrency, cost."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from pitstop._errors import SchemaVersionError, StoreError
from pitstop.storage import _models
from pitstop.storage._queries import latest_query
from pitstop.storage.base import CheckpointRecord, NodeRow, Store
from pitstop.storage.sql import SqlStore, open_store

Statement = tuple[str, bool, int]


def record(run_id: str = "run-1", state: bytes | None = b"{}") -> CheckpointRecord:
    return CheckpointRecord(
        run_id, 0, None, 1.0, "node", None, None, 1, "json", b"{}", state, "sum", 2, 1
    )


def node(node_id: str, output: bytes = b"1") -> NodeRow:
    return NodeRow(node_id, "completed", 1, None, 1.0, 2.0, (), "json", output, "sum")


@contextmanager
def statements(store: SqlStore) -> Iterator[list[Statement]]:
    """Record (sql, executemany, parameter sets) of every statement the store sends."""
    assert store._engine is not None
    seen: list[Statement] = []

    def log(*args: Any) -> None:
        sql, params, many = args[2], args[3], args[5]
        seen.append((sql, many, len(params) if many else 1))

    target = store._engine.sync_engine
    event.listen(target, "before_cursor_execute", log)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", log)


async def raw(url: str, sql: str) -> None:
    """Run one statement on the database behind the store's back."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:s3cret@db:5433/x", "postgresql+asyncpg://u:***@db:5433/x"),
        ("postgres://u:s3cret@db/x", "postgresql+asyncpg://u:***@db/x"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_urls_get_the_async_driver_and_hide_the_password(given: str, expected: str) -> None:
    store = open_store(given)
    assert store.url == expected
    assert "s3cret" not in repr(store)


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/x", "postgresql+psycopg://u@h/x", "sqlite+pysqlite:///x.db", "::", "sqlite://"],
)
def test_unsupported_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        SqlStore.from_url(url)
    with pytest.raises(ValueError, match="MemoryStore"):
        SqlStore.sqlite(":memory:")


async def test_plain_paths_are_sqlite_files_with_parents_created(tmp_path: Path) -> None:
    for target in (tmp_path / "a" / "b" / "c.db", str(tmp_path / "d" / "e.db")):
        async with open_store(target) as store:
            assert store.url == f"sqlite+aiosqlite:///{target}"
            await store.save(record(), [], base_seq=None)
        assert Path(target).is_file()


async def test_sqlite_runs_in_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    async with SqlStore.sqlite(path) as store:
        assert store._engine is not None
        async with store._engine.connect() as conn:
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert timeout == 5000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_latest_seq_reads_the_primary_key(tmp_path: Path) -> None:
    async with SqlStore.sqlite(tmp_path / "plan.db") as store:
        assert store._engine is not None
        sql = str(latest_query("r").compile(store._engine, compile_kwargs={"literal_binds": True}))
        async with store._engine.connect() as conn:
            plan = " ".join(r[-1] for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "INDEX" in plan and "run_id=?" in plan
    assert "TEMP B-TREE" not in plan and "SCAN" not in plan


def test_tables_are_on_a_private_registry() -> None:
    ours = {"pitstop_checkpoints", "pitstop_node_states", "pitstop_schema"}
    assert set(_models.METADATA.tables) == ours
    assert not ours & set(SQLModel.metadata.tables)
    assert _models.METADATA is not SQLModel.metadata


async def test_schema_version_is_written(store_url: str) -> None:
    async with SqlStore.from_url(store_url) as store:
        assert store._engine is not None
        async with store._engine.connect() as conn:
            found = (await conn.execute(text("SELECT id, version FROM pitstop_schema"))).all()
    assert [tuple(r) for r in found] == [(1, _models.SCHEMA_VERSION)]


async def test_newer_schema_version_refuses_to_open(store_url: str) -> None:
    async with SqlStore.from_url(store_url):
        pass
    await raw(store_url, "UPDATE pitstop_schema SET version = 99")
    store = SqlStore.from_url(store_url)
    with pytest.raises(SchemaVersionError) as info:
        await store.open()
    assert (info.value.found, info.value.supported) == (99, _models.SCHEMA_VERSION)
    with pytest.raises(SchemaVersionError):  # lazily, on first use, too
        await store.latest_seq("r")
    await store.close()


async def test_older_schema_is_migrated_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqlStore.from_url(store_url) as store:
        await store.save(record(), [node("a")], base_seq=None)
    await raw(store_url, "UPDATE pitstop_schema SET version = 0")
    ran: list[int] = []

    def to_v1(conn: Connection) -> None:
        ran.append(conn.execute(text("SELECT count(*) FROM pitstop_checkpoints")).scalar_one())

    def too_new(conn: Connection) -> None:
        raise AssertionError("a migration beyond SCHEMA_VERSION ran")

    monkeypatch.setattr(_models, "MIGRATIONS", [(1, to_v1), (_models.SCHEMA_VERSION + 1, too_new)])
    for _ in range(2):
        async with SqlStore.from_url(store_url) as store:
            assert (await store.load("run-1"))[0].seq == 1
    assert ran == [1]


async def test_failed_migration_changes_nothing(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqlStore.from_url(store_url):
        pass
    await raw(store_url, "UPDATE pitstop_schema SET version = 0")

    def broken(conn: Connection) -> None:
        conn.execute(text("DELETE FROM pitstop_schema"))
        raise RuntimeError("migration bug")

    monkeypatch.setattr(_models, "MIGRATIONS", [(1, broken)])
    with pytest.raises(RuntimeError, match="migration bug"):
        await SqlStore.from_url(store_url).open()
    monkeypatch.setattr(_models, "MIGRATIONS", [])
    await raw(store_url, "UPDATE pitstop_schema SET version = version + 10")
    with pytest.raises(SchemaVersionError) as info:  # the row survived: 0 + 10
        await SqlStore.from_url(store_url).open()
    assert info.value.found == 10


async def test_open_is_lazy_idempotent_and_close_is_idempotent(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "lazy.db")
    assert await store.save(record(), [], base_seq=None) == 1  # opens on first use
    engine = store._engine
    await store.open()
    assert store._engine is engine
    await store.close()
    await store.close()
    assert store._engine is None
    async with store:  # reopens after a close
        assert await store.latest_seq("run-1") == 1


async def test_unclosed_store_warns(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "leak.db")
    await store.open()
    engine = store._engine
    assert engine is not None
    with pytest.warns(ResourceWarning, match="unclosed SqlStore"):
        del store
        gc.collect()
    await engine.dispose()


async def test_closed_or_never_opened_store_does_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with SqlStore.sqlite(tmp_path / "ok.db"):
            pass
        SqlStore.sqlite(tmp_path / "never.db")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_two_stores_on_one_sqlite_file_serialize_their_saves(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SqlStore.sqlite(path) as one, SqlStore.sqlite(path) as two:

        async def saves(store: Store, tag: str) -> list[int]:
            return [
                await store.save(record(), [node(f"{tag}{i}", b"x" * 10_000)], base_seq=None)
                for i in range(25)
            ]

        first, second = await asyncio.gather(saves(one, "a"), saves(two, "b"))
        assert sorted(first + second) == list(range(1, 51))
        _, rows = await two.load("run-1")
        assert len(rows) == 50


async def test_corrupted_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database\x00" * 512)
    store = SqlStore.sqlite(path)
    with pytest.raises(StoreError, match="open failed") as info:
        await store.open()
    assert isinstance(info.value.__cause__, SQLAlchemyError | sqlite3.Error)
    assert store._engine is None  # nothing left open, so nothing to warn about


async def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = SqlStore.from_url(
        "postgresql://postgres:hunter2@127.0.0.1:1/test", connect_args={"timeout": 2}
    )
    with pytest.raises(StoreError) as info:
        await store.latest_seq("r")
    assert info.value.__cause__ is not None
    assert "hunter2" not in str(info.value) and "latest_seq" in str(info.value)
    await store.close()


async def test_backend_errors_are_wrapped_with_their_cause(store_url: str) -> None:
    async with SqlStore.from_url(store_url) as store:
        await store.save(record(), [node("a")], base_seq=None)
        await raw(store_url, "DROP TABLE pitstop_node_states")
        with pytest.raises(StoreError, match=r"save failed for run 'run-1'") as saving:
            await store.save(record(), [node("a")], base_seq=1)
        assert isinstance(saving.value.__cause__, SQLAlchemyError)
        with pytest.raises(StoreError, match=r"load failed for run 'run-1'") as loading:
            await store.load("run-1")
        assert isinstance(loading.value.__cause__, SQLAlchemyError)
        assert await store.latest_seq("run-1") == 1  # the failed save wrote nothing


async def test_save_cost_does_not_grow_with_the_run(store_url: str) -> None:
    async with SqlStore.from_url(store_url) as store:
        shapes: list[list[Statement]] = []
        for run_id, k in (("small", 10), ("big", 10_000)):
            rows = [node(f"n{i}") for i in range(k)]
            with statements(store) as seen:
                await store.save(record(run_id), rows, base_seq=None)
            # All k node rows go in one executemany.
            assert [(m, n) for _, m, n in seen if m] == [(True, k)]
            with statements(store) as seen:
                await store.save(record(run_id), [node("n1", b"new")], base_seq=1)
            shapes.append(seen)
        assert shapes[0] == shapes[1]
        assert len(shapes[0]) <= 4  # (lock,) latest seq, checkpoint, nodes


async def test_listing_checkpoints_does_not_read_the_state_blob(store_url: str) -> None:
    async with SqlStore.from_url(store_url) as store:
        await store.save(record(state=b"s" * 100_000), [], base_seq=None)
        with statements(store) as seen:
            infos = await store.list_checkpoints("run-1")
        assert [i.seq for i in infos] == [1]
        selects = [sql for sql, _, _ in seen if "pitstop_checkpoints" in sql]
        assert selects and not any("state" in sql for sql in selects)

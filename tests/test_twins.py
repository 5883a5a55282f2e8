"""What differs between the twins: threads and event loops, the per-manager
writer queue, and that hooks without a due save touch neither."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from twins import MakeTwin

from pitstop import (
    CheckpointManager,
    CheckpointPolicy,
    MemoryStore,
    StaleBaseError,
    Store,
    SyncCheckpointManager,
)


def test_sync_twin_from_many_threads(store: Store) -> None:
    policy = CheckpointPolicy(every_n_nodes=5)
    with SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m:

        def work(worker: int) -> None:
            for i in range(25):
                node = f"w{worker}-{i}"
                m.on_node_start(node_id=node)
                m.on_node_finish(node_id=node, output=[worker, i])

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m.save_checkpoint()
        cp = m.load_checkpoint()
        assert len(cp.completed) == 200 and cp.completed["w3-7"] == [3, 7]
        infos = m.list_checkpoints()
        assert [i.seq for i in infos] == list(range(1, len(infos) + 1))
        assert len(infos) >= 40  # every 5th node saved, none lost to a race


async def test_sync_twin_inside_a_running_loop(tmp_path: Path) -> None:
    """A sync runner called from async code (or Jupyter): no await, no new loop."""
    loop = asyncio.get_running_loop()
    with SyncCheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        assert m.save_checkpoint().seq == 1
        assert m.restore_checkpoint().completed == {"a": 1}
    assert asyncio.get_running_loop() is loop


def test_sync_twin_needs_no_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the sync twin created an event loop")

    monkeypatch.setattr(asyncio, "new_event_loop", refuse)
    monkeypatch.setattr(asyncio, "run", refuse)
    with SyncCheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        m.save_checkpoint()
        assert m.restore_checkpoint().completed == {"a": 1}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_async_twin_across_event_loops(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``asyncio.run`` per hook (a sync runner wrapping the async twin) works."""
    target = str(tmp_path / "p.db") if backend == "sqlite" else request.getfixturevalue("pg_db")
    m = CheckpointManager("r", store=target, enabled=True, policy=CheckpointPolicy(every_n_nodes=1))
    for n in "abc":
        asyncio.run(m.on_node_start(node_id=n))
        asyncio.run(m.on_node_finish(node_id=n, output=n))
    cp = asyncio.run(m.restore_checkpoint())
    assert cp.completed == {"a": "a", "b": "b", "c": "c"} and cp.seq == 3
    asyncio.run(m.aclose())


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pitstop")]


async def test_hooks_without_a_save_start_no_thread(tmp_path: Path) -> None:
    async with CheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
        await m.on_run_start(graph={"a": [], "b": ["a"]})
        for n in "ab":
            await m.on_node_start(node_id=n)
            await m.on_node_finish(node_id=n, output=n)
        assert m._store is None and store_threads() == []
        await m.save_checkpoint()
        assert len(store_threads()) == 1


async def test_concurrent_saves_queue_up(store: Store, twin: MakeTwin) -> None:
    """One writer queue per manager: concurrent saves and restores never race."""
    m = twin("r", store=store)
    for i in range(10):
        await m.on_node_start(node_id=f"n{i}")
        await m.on_node_finish(node_id=f"n{i}", output=i)
    if m.is_sync:
        results: list[object] = []

        def save() -> None:
            results.append(m.m.save_checkpoint())

        threads = [threading.Thread(target=save) for _ in range(8)]
        threads += [threading.Thread(target=m.m.restore_checkpoint) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
    else:
        saves = [m.save_checkpoint() for _ in range(8)]
        infos = await asyncio.gather(*saves)
        assert sorted(i.seq for i in infos) == list(range(1, 9))
        await asyncio.gather(m.restore_checkpoint(), m.save_checkpoint(), m.restore_checkpoint())
    info = await m.save_checkpoint()  # the bookkeeping agrees with the store: no StaleBaseError
    assert len((await m.load_checkpoint(info.seq)).completed) == 10


async def test_failed_save_keeps_changes_pending(tmp_path: Path, twin: MakeTwin) -> None:
    db = tmp_path / "p.db"
    m = twin("r", store=db)
    await m.on_node_start(node_id="a")
    await m.on_node_finish(node_id="a", output=1)
    await m.save_checkpoint()
    await m.on_node_start(node_id="b")
    await m.on_node_finish(node_id="b", output=2)
    # A foreign writer takes seq 2 behind pitstop's back: the save fails...
    conn = sqlite3.connect(db)
    with conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(pitstop_checkpoints)")]
        values = ", ".join("2" if c == "seq" else c for c in cols)
        conn.execute(f"INSERT INTO pitstop_checkpoints ({', '.join(cols)}) "
                     f"SELECT {values} FROM pitstop_checkpoints WHERE seq = 1")  # fmt: skip
    with pytest.raises(StaleBaseError):
        await m.save_checkpoint()
    with conn:
        conn.execute("DELETE FROM pitstop_checkpoints WHERE seq = 2")
    conn.close()
    # ... and the next one still writes what changed.
    info = await m.save_checkpoint()
    assert info.seq == 2 and info.nodes_written == 1
    assert (await m.load_checkpoint()).completed == {"a": 1, "b": 2}


def _threads_of_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(operation, thread name) of every transaction a SQLite store runs."""
    from pitstop.storage._backends import SqliteBackend

    seen: list[tuple[str, str]] = []
    real = SqliteBackend._run_locked

    def spy(self: SqliteBackend, call: object) -> object:
        seen.append((getattr(call, "name", "?"), threading.current_thread().name))
        return real(self, call)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteBackend, "_run_locked", spy)
    return seen


async def test_async_sqlite_reads_run_inline_and_writes_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A WAL read takes no lock a writer holds, and its decode runs on the loop anyway:
    # the hop would only add two thread wake-ups. A write waits on its fsync: it hops.
    seen = _threads_of_runs(monkeypatch)
    main = threading.current_thread().name
    with _sqlite(tmp_path) as st:
        async with CheckpointManager("r", store=st, enabled=True) as m:
            await m.on_node_finish(node_id="a", output=1)
            await m.save_checkpoint()
            assert (await m.restore_checkpoint()).completed == {"a": 1}
            assert [i.seq for i in await m.list_checkpoints()] == [1]
            assert await m.can_resume() is True
    ops = {name: thread for name, thread in seen}
    assert ops["save"].startswith("pitstop-store") and ops["save"] != main
    assert {ops["load"], ops["list_checkpoints"], ops["run_info"]} == {main}, seen


def _sqlite(tmp_path: Path) -> Store:
    from pitstop import SqlStore

    return SqlStore.sqlite(tmp_path / "p.db")


async def test_async_sqlite_read_hops_while_the_connection_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another transaction holds the store's connection (a save waiting on its fsync):
    # the read must not wait for it on the event loop; it queues on the store's thread.
    seen = _threads_of_runs(monkeypatch)
    with _sqlite(tmp_path) as st:
        async with CheckpointManager("r", store=st, enabled=True) as m:
            await m.on_node_finish(node_id="a", output=1)
            await m.save_checkpoint()
            lock = st._backend._lock
            lock.acquire()
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            ticker = asyncio.create_task(tick())
            restore = asyncio.create_task(m.restore_checkpoint())
            await asyncio.sleep(0.1)  # the loop runs while the read waits for the connection
            assert not restore.done() and ticks >= 5
            lock.release()
            assert (await restore).completed == {"a": 1}
            ticker.cancel()
    assert seen[-1][0] == "load" and seen[-1][1].startswith("pitstop-store")


async def test_async_sqlite_reads_hop_outside_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In rollback-journal mode a reader can wait (up to busy_timeout) on a writer.
    db = tmp_path / "p.db"
    with SyncCheckpointManager("r", store=db, enabled=True) as sm:
        sm.on_node_finish(node_id="a", output=1)
        sm.save_checkpoint()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    conn.close()
    seen = _threads_of_runs(monkeypatch)
    async with CheckpointManager("r", store=db, enabled=True) as m:
        await m.can_resume()  # opens the store (on its thread, like any first use)
        assert (await m.restore_checkpoint()).completed == {"a": 1}
    assert seen[-1][0] == "load" and seen[-1][1].startswith("pitstop-store"), seen


def test_each_twin_method_takes_exactly_its_programs_parameters() -> None:
    import inspect

    from pitstop._ops import ManagerBase
    from pitstop._program import twin_method

    for name, program in ManagerBase._OPS.items():
        want = [(p.name, p.kind, p.default) for p in inspect.signature(program).parameters.values()]
        for twin in (SyncCheckpointManager, CheckpointManager):
            method = getattr(twin, name)
            # The generated code itself, not the signature functools.wraps points at.
            got = inspect.signature(method, follow_wrapped=False).parameters.values()
            assert [(p.name, p.kind, p.default) for p in got] == want, (twin.__name__, name)
            assert method.__qualname__ == f"{twin.__name__}.{name}"
            assert inspect.iscoroutinefunction(method) is (twin is CheckpointManager)

    def shadows(self: object, *, running: int) -> None: ...
    def star(self: object, *nodes: str) -> None: ...

    with pytest.raises(TypeError, match="'running' shadows"):
        twin_method("x", shadows, "def {name}({params}): pass")
    with pytest.raises(TypeError, match="variadic positional parameters: unsupported"):
        twin_method("x", star, "def {name}({params}): pass")


def test_arguments_that_do_not_fit_raise_at_the_call_on_both_twins() -> None:
    with MemoryStore() as store:
        for twin in (SyncCheckpointManager, CheckpointManager):
            m = twin("r", store=store, enabled=True)
            # Raised by the call itself: no coroutine is made (nor left un-awaited).
            with pytest.raises(TypeError, match=r"save_checkpoint\(\) got an unexpected keyword"):
                m.save_checkpoint(trigerr="x")  # type: ignore[call-arg]
            with pytest.raises(TypeError, match=r"on_node_start\(\) takes 1 positional argument"):
                m.on_node_start("a")  # type: ignore[call-arg]

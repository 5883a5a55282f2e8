"""The async manager's PostgreSQL saves awaited on the event loop (no thread hop).

A save that is one statement runs on the loop's own psycopg async connection;
anything else, or a save while that connection is busy, hops to the store's
threads as before. Real server, real connections (``pg_stat_activity``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import pg_admin, pg_schema, pg_url

from pitstop import CheckpointManager, SqlStore, StaleBaseError, StoreError, SyncCheckpointManager

pytestmark = pytest.mark.postgres


@pytest.fixture
def app() -> str:
    """An application_name of this test's own, to find its connections on the server."""
    return f"pitstop-native-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(app: str) -> Iterator[SqlStore]:
    with pg_schema() as schema:
        store = SqlStore(pg_url(), options=f"-c search_path={schema}", application_name=app)
        with store:
            yield store


def connections(app: str) -> int:
    """The server's connections of this test's store."""
    with pg_admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def hops(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the operations that hopped to the store's threads (the real hop runs)."""
    seen: list[str] = []
    real: Callable[..., Any] = store.hop

    def spy(fn: Callable[..., Any], *args: Any) -> Any:
        seen.append(args[0].name)
        return real(fn, *args)

    monkeypatch.setattr(store, "hop", spy)
    return seen


async def finish(m: CheckpointManager, node: str, output: Any) -> None:
    await m.on_node_start(node_id=node)
    await m.on_node_finish(node_id=node, output=output)


def outputs(store: SqlStore, run: str) -> dict[str, Any]:
    reader = SyncCheckpointManager(run, store=store, enabled=True)
    return dict(reader.load_checkpoint().completed)


async def test_saves_after_the_first_run_on_the_loop_without_a_hop(
    store: SqlStore, hops: list[str]
) -> None:
    async with CheckpointManager("r", store=store, enabled=True) as m:
        await m.on_run_start(graph={f"n{i}": () for i in range(6)})
        await finish(m, "n0", {"v": 0})
        first = await m.save_checkpoint()  # a new run: its seq is not known yet, it hops
        assert hops == ["save"]
        for i in range(1, 6):
            await finish(m, f"n{i}", {"v": i})
            info = await m.save_checkpoint()
            assert info.seq == first.seq + i
    assert hops == ["save"]
    assert outputs(store, "r") == {f"n{i}": {"v": i} for i in range(6)}


async def test_a_save_while_the_loops_connection_is_busy_hops(
    store: SqlStore, hops: list[str]
) -> None:
    managers = [CheckpointManager(f"r{j}", store=store, enabled=True) for j in range(3)]
    for j, m in enumerate(managers):
        await finish(m, "a", j)
        await m.save_checkpoint()
    hops.clear()
    for i in range(5):
        for j, m in enumerate(managers):
            await finish(m, f"n{i}", (j, i))
        saved = await asyncio.gather(*(m.save_checkpoint() for m in managers))
        assert [s.nodes_written for s in saved] == [1, 1, 1]
    # One of each three concurrent saves had the loop's connection; the others hopped.
    assert hops == ["save"] * 10
    for j in range(3):
        assert outputs(store, f"r{j}") == {"a": j, **{f"n{i}": (j, i) for i in range(5)}}


async def test_a_stale_base_on_the_loop_raises_and_the_connection_serves_on(
    store: SqlStore, hops: list[str]
) -> None:
    first = CheckpointManager("r", store=store, enabled=True)
    await finish(first, "a", 1)
    await first.save_checkpoint()
    second = CheckpointManager("r", store=store, enabled=True)
    await second.restore_checkpoint()
    await finish(second, "b", 2)
    await second.save_checkpoint()
    hops.clear()
    await finish(first, "c", 3)
    with pytest.raises(StaleBaseError):
        await first.save_checkpoint()
    await finish(second, "d", 4)
    await second.save_checkpoint()
    assert hops == []  # both saves ran on the loop's connection
    assert outputs(store, "r") == {"a": 1, "b": 2, "d": 4}


def test_each_loop_has_a_connection_closed_with_its_loop_or_the_store(
    store: SqlStore, app: str, hops: list[str]
) -> None:
    async def session(n: int) -> None:
        async with CheckpointManager("r", store=store, enabled=True) as m:
            if n:
                await m.restore_checkpoint()
            await finish(m, f"n{n}", n)
            await m.save_checkpoint()
            await finish(m, f"m{n}", n)
            await m.save_checkpoint()

    asyncio.run(session(0))
    pool = connections(app) - 1  # the sync pool's, and the first loop's own
    assert pool >= 1
    asyncio.run(session(1))  # the first loop is closed: its connection goes
    assert connections(app) == pool + 1
    asyncio.run(session(2))
    assert connections(app) == pool + 1
    # Of the saves only the run's first hopped (after a restore the seq is known);
    # restores hop (reads are not awaited on the loop).
    assert hops == ["save", "load", "load"]
    assert outputs(store, "r") == {"n0": 0, "m0": 0, "n1": 1, "m1": 1, "n2": 2, "m2": 2}
    store.close()
    assert connections(app) == 0


async def test_a_cancelled_save_on_the_loop_finishes_and_bookkeeping_stays_in_step(
    store: SqlStore, hops: list[str]
) -> None:
    async with CheckpointManager("r", store=store, enabled=True) as m:
        await finish(m, "a", 0)
        await m.save_checkpoint()
        hops.clear()
        for i in range(20):
            await finish(m, f"n{i}", i)
            task = asyncio.ensure_future(m.save_checkpoint())
            for _ in range(i % 4):
                await asyncio.sleep(0)  # cancel at different points of the save
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        info = await m.save_checkpoint()  # no StaleBaseError: the manager saw every commit
        assert hops == []
    assert outputs(store, "r") == {"a": 0, **{f"n{i}": i for i in range(20)}}
    reader = SyncCheckpointManager("r", store=store, enabled=True)
    assert reader.load_checkpoint().seq == info.seq


async def test_a_lost_connection_fails_one_save_and_the_next_reconnects(
    store: SqlStore, app: str
) -> None:
    async with CheckpointManager("r", store=store, enabled=True) as m:
        await finish(m, "a", 0)
        await m.save_checkpoint()
        await finish(m, "b", 1)
        await m.save_checkpoint()  # on the loop's connection, now open
        with pg_admin() as admin:  # the connection that ran the last save: the loop's
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s ORDER BY state_change DESC LIMIT 1",
                (app,),
            ).fetchone()
        assert killed == (True,)
        await finish(m, "c", 2)
        with pytest.raises(StoreError):
            await m.save_checkpoint()
        info = await m.save_checkpoint()  # a new connection; "c" was kept pending
        assert info.nodes_written == 1
    assert outputs(store, "r") == {"a": 0, "b": 1, "c": 2}

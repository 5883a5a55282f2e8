"""Save and restore latency against workflow size K, on SQLite and in memory.

- ``save_one``: K completed nodes already saved once; each round marks ONE node
  finished again with a new output and saves (the store writes 1 node row).
  The target: at K=10,000 within 2x of K=10 (save cost follows what changed).
- ``save_full``: the first save of a run, all K nodes (for information).
- ``restore``: latest checkpoint of a run with 20 checkpoints (one full save
  and 19 deltas each changing K/10 nodes), so the "newest row per node <= seq"
  query has older versions to skip.

SQLite runs on a real file under pytest's tmp_path (WAL, the store's defaults).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from _runners import pedantic
from pytest_benchmark.fixture import BenchmarkFixture

from pitstop import CheckpointInfo, CheckpointManager, MemoryStore, Store
from pitstop.storage.sql import open_store

SIZES = [10, 1_000, 10_000]
BACKENDS = ["sqlite", "memory"]
HISTORY = 20
"""Checkpoints in the run a restore benchmark reads."""

SAVE_ROUNDS = 200
FULL_ROUNDS = {10: 100, 1_000: 30, 10_000: 10}
RESTORE_ROUNDS = {10: 200, 1_000: 50, 10_000: 15}


def _output(i: int, version: int) -> dict[str, object]:
    """A small node output (about 40 bytes of JSON)."""
    return {"i": i, "version": version, "rows": [i, i + 1]}


async def _complete_all(mgr: CheckpointManager, k: int) -> None:
    """Run start with K independent nodes, then every node started and finished."""
    await mgr.on_run_start(graph={f"n{i}": () for i in range(k)})
    for i in range(k):
        await mgr.on_node_start(node_id=f"n{i}")
        await mgr.on_node_finish(node_id=f"n{i}", output=_output(i, 0))


@pytest.fixture
def loop_store(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Store]:
    """An opened store for the test's ``backend`` parameter, closed afterwards."""
    backend: str = request.node.callspec.params["backend"]
    store: Store = MemoryStore() if backend == "memory" else open_store(tmp_path / "bench.db")
    loop.run_until_complete(store.open())
    try:
        yield store
    finally:
        loop.run_until_complete(store.close())


@asynccontextmanager
async def _manager(store: Store | str, run_id: str) -> AsyncIterator[CheckpointManager]:
    async with CheckpointManager(run_id, store=store, enabled=True) as mgr:
        yield mgr


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_save_one(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    backend: str,
    k: int,
) -> None:
    # SQLite through the manager's own path handling (store="file.db"), as users do.
    target_store: Store | str = MemoryStore() if backend == "memory" else str(tmp_path / "s.db")
    mgr = CheckpointManager("bench-save", store=target_store, enabled=True)
    benchmark.group = f"save 1 changed node, {backend}"
    benchmark.extra_info.update(kind="save_one", backend=backend, k=k)
    try:
        loop.run_until_complete(_complete_all(mgr, k))
        first = loop.run_until_complete(mgr.save_checkpoint(trigger="first"))
        assert first.nodes_written == k
        counter = itertools.count(1)

        async def one_changed() -> CheckpointInfo:
            version = next(counter)
            i = version % k
            await mgr.on_node_finish(node_id=f"n{i}", output=_output(i, version))
            return await mgr.save_checkpoint()

        def target() -> CheckpointInfo:
            return loop.run_until_complete(one_changed())

        info = pedantic(benchmark, target, rounds=SAVE_ROUNDS, warmup_rounds=10)
        assert info.nodes_written == 1
    finally:
        loop.run_until_complete(mgr.aclose())


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_save_full(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    loop_store: Store,
    backend: str,
    k: int,
) -> None:
    benchmark.group = f"first (full) save, {backend}"
    benchmark.extra_info.update(kind="save_full", backend=backend, k=k)
    runs = itertools.count()
    managers: list[CheckpointManager] = []

    def fresh_run() -> None:
        # Untimed: a new run with K completed nodes and nothing saved yet.
        mgr = CheckpointManager(f"bench-full-{next(runs)}", store=loop_store, enabled=True)
        loop.run_until_complete(_complete_all(mgr, k))
        managers[:] = [mgr]

    def target() -> CheckpointInfo:
        return loop.run_until_complete(managers[-1].save_checkpoint(trigger="first"))

    info = pedantic(benchmark, target, rounds=FULL_ROUNDS[k], setup=fresh_run)
    assert info.nodes_written == k


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_restore(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    loop_store: Store,
    backend: str,
    k: int,
) -> None:
    benchmark.group = f"restore latest of {HISTORY}, {backend}"
    benchmark.extra_info.update(kind="restore", backend=backend, k=k, history=HISTORY)
    writer = CheckpointManager("bench-restore", store=loop_store, enabled=True)
    step = max(1, k // 10)

    async def build_history() -> None:
        await _complete_all(writer, k)
        await writer.save_checkpoint(trigger="first")
        for version in range(1, HISTORY):
            for j in range(step):
                i = (version * step + j) % k
                await writer.on_node_finish(node_id=f"n{i}", output=_output(i, version))
            await writer.save_checkpoint()

    loop.run_until_complete(build_history())
    # A second manager, as a resuming process would have.
    reader = CheckpointManager("bench-restore", store=loop_store, enabled=True)

    def target() -> int:
        return loop.run_until_complete(reader.restore_checkpoint()).seq

    seq = pedantic(benchmark, target, rounds=RESTORE_ROUNDS[k], warmup_rounds=1)
    assert seq == HISTORY
    assert len(loop.run_until_complete(reader.restore_checkpoint()).nodes) == k

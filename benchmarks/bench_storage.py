"""Save and restore latency against workflow size K, through both managers.

Backends: ``memory`` (``MemoryStore``), ``sqlite`` (a real file under pytest's
``tmp_path``, the store's defaults: WAL, synchronous=FULL) and ``postgres``
(a schema of its own in the session's database). Each backend runs the sync
twin (``SyncCheckpointManager``, timed around the call) and the async twin
(``CheckpointManager``, timed around the ``await`` inside the module's loop).

- ``save_one``: a run of K completed nodes, saved once; each round finishes
  ONE node again with a new output (untimed) and times ``save_checkpoint()``.
  All six managers (2 twins x 3 K) of a backend share its store and are
  interleaved round by round. The target: at K=10,000 the p50 is within 2x of
  the p50 at K=10 (a save costs what changed, not the workflow size). The
  default policy makes every 50th save a compacted snapshot of all K nodes;
  how many of the timed rounds were snapshots is recorded.
- ``save_full``: the first save of a fresh run, all K nodes (for information).
- ``restore``: ``restore_checkpoint()`` of the latest of 20 checkpoints (one
  full save, then 19 deltas each changing K/10 nodes) by managers that did not
  write them, as a resuming process would; twins interleaved.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from _harness import Recorder, Sample, interleave

from pitstop import (
    Checkpoint,
    CheckpointInfo,
    CheckpointManager,
    MemoryStore,
    SqlStore,
    Store,
    SyncCheckpointManager,
)

SIZES = [10, 1_000, 10_000]
BACKENDS = ["memory", "sqlite", "postgres"]
TWINS = ["sync", "async"]
HISTORY = 20
"""Checkpoints in the run a restore reads."""

SAVE_ROUNDS = {"memory": 300, "sqlite": 150, "postgres": 150}
SAVE_WARMUP = 5
FULL_ROUNDS = {10: 30, 1_000: 10, 10_000: 5}
RESTORE_ROUNDS = {10: 200, 1_000: 30, 10_000: 8}


def _output(i: int, version: int) -> dict[str, Any]:
    """A small node output (about 40 bytes of JSON)."""
    return {"i": i, "version": version, "rows": [i, i + 1]}


def _graph(k: int) -> dict[str, tuple[str, ...]]:
    return {f"n{i}": () for i in range(k)}


class Driver(Protocol):
    """One twin's manager, driven from the benchmark's sync code."""

    def complete_all(self, k: int) -> None:
        """Run start with K independent nodes, then every node started and finished."""

    def finish(self, node_id: str, output: Any) -> None: ...

    def save(self, trigger: str = "manual") -> tuple[int, CheckpointInfo]:
        """Nanoseconds of ``save_checkpoint``, and what it returned."""

    def restore(self) -> tuple[int, Checkpoint]:
        """Nanoseconds of ``restore_checkpoint()``, and what it returned."""


class SyncDriver:
    def __init__(self, store: Store, run_id: str) -> None:
        self.mgr = SyncCheckpointManager(run_id, store=store, enabled=True)

    def complete_all(self, k: int) -> None:
        self.mgr.on_run_start(graph=_graph(k))
        for i in range(k):
            self.mgr.on_node_start(node_id=f"n{i}")
            self.mgr.on_node_finish(node_id=f"n{i}", output=_output(i, 0))

    def finish(self, node_id: str, output: Any) -> None:
        self.mgr.on_node_finish(node_id=node_id, output=output)

    def save(self, trigger: str = "manual") -> tuple[int, CheckpointInfo]:
        t0 = time.perf_counter_ns()
        info = self.mgr.save_checkpoint(trigger=trigger)
        return time.perf_counter_ns() - t0, info

    def restore(self) -> tuple[int, Checkpoint]:
        t0 = time.perf_counter_ns()
        cp = self.mgr.restore_checkpoint()
        return time.perf_counter_ns() - t0, cp


class AsyncDriver:
    def __init__(self, store: Store, run_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.mgr = CheckpointManager(run_id, store=store, enabled=True)
        self.loop = loop

    def complete_all(self, k: int) -> None:
        async def run() -> None:
            await self.mgr.on_run_start(graph=_graph(k))
            for i in range(k):
                await self.mgr.on_node_start(node_id=f"n{i}")
                await self.mgr.on_node_finish(node_id=f"n{i}", output=_output(i, 0))

        self.loop.run_until_complete(run())

    def finish(self, node_id: str, output: Any) -> None:
        self.loop.run_until_complete(self.mgr.on_node_finish(node_id=node_id, output=output))

    def save(self, trigger: str = "manual") -> tuple[int, CheckpointInfo]:
        async def timed() -> tuple[int, CheckpointInfo]:
            t0 = time.perf_counter_ns()
            info = await self.mgr.save_checkpoint(trigger=trigger)
            return time.perf_counter_ns() - t0, info

        return self.loop.run_until_complete(timed())

    def restore(self) -> tuple[int, Checkpoint]:
        async def timed() -> tuple[int, Checkpoint]:
            t0 = time.perf_counter_ns()
            cp = await self.mgr.restore_checkpoint()
            return time.perf_counter_ns() - t0, cp

        return self.loop.run_until_complete(timed())


def _driver(twin: str, store: Store, run_id: str, loop: asyncio.AbstractEventLoop) -> Driver:
    if twin == "sync":
        return SyncDriver(store, run_id)
    return AsyncDriver(store, run_id, loop)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """An open, empty store of the test's backend, closed afterwards."""
    if backend == "memory":
        with MemoryStore() as memory:
            yield memory
        return
    if backend == "sqlite":
        with SqlStore.sqlite(tmp_path / "bench.db") as sqlite:
            yield sqlite
        return
    import psycopg

    url: str = request.getfixturevalue("pg_url")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            with SqlStore(url, options=f"-c search_path={schema}") as pg:
                yield pg
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_save_one(
    recorder: Recorder, loop: asyncio.AbstractEventLoop, store: Store, backend: str
) -> None:
    drivers: dict[tuple[str, int], Driver] = {}
    for twin in TWINS:
        for k in SIZES:
            d = _driver(twin, store, f"bench-save-{twin}-{k}", loop)
            d.complete_all(k)
            assert d.save("first")[1].nodes_written == k
            drivers[twin, k] = d
    versions = itertools.count(1)
    calls: dict[tuple[str, int], int] = dict.fromkeys(drivers, 0)
    snapshots: dict[tuple[str, int], int] = dict.fromkeys(drivers, 0)

    def variant(key: tuple[str, int]) -> Sample:
        d, k = drivers[key], key[1]

        def sample() -> int:
            version = next(versions)
            i = version % k
            d.finish(f"n{i}", _output(i, version))  # untimed: the one changed node
            ns, info = d.save()
            calls[key] += 1
            if info.snapshot:  # the policy's periodic compacted snapshot: all K nodes
                assert info.nodes_written == k
                snapshots[key] += calls[key] > SAVE_WARMUP
            else:
                assert info.nodes_written == 1
            return ns

        return sample

    names = {f"{twin} K={k}": (twin, k) for twin, k in drivers}
    summaries = interleave(
        {name: variant(key) for name, key in names.items()},
        rounds=SAVE_ROUNDS[backend],
        warmup=SAVE_WARMUP,
    )
    for name, (twin, k) in names.items():
        recorder.add("save_one", backend, k, "op", {twin: summaries[name]},
                     snapshots=snapshots[twin, k])  # fmt: skip


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
def test_save_full(
    recorder: Recorder, loop: asyncio.AbstractEventLoop, store: Store, backend: str, k: int
) -> None:
    runs = itertools.count()

    def variant(twin: str) -> Sample:
        def sample() -> int:
            d = _driver(twin, store, f"bench-full-{twin}-{k}-{next(runs)}", loop)
            d.complete_all(k)  # untimed: a fresh run with K completed nodes
            ns, info = d.save("first")
            assert info.nodes_written == k
            return ns

        return sample

    summaries = interleave({t: variant(t) for t in TWINS}, rounds=FULL_ROUNDS[k], warmup=1)
    recorder.add("save_full", backend, k, "op", summaries)


@pytest.mark.parametrize("k", SIZES, ids=lambda k: f"K={k}")
def test_restore(
    recorder: Recorder, loop: asyncio.AbstractEventLoop, store: Store, backend: str, k: int
) -> None:
    run_id = f"bench-restore-{k}"
    writer = SyncDriver(store, run_id)
    writer.complete_all(k)
    writer.save("first")
    step = max(1, k // 10)
    for version in range(1, HISTORY):
        for j in range(step):
            i = (version * step + j) % k
            writer.finish(f"n{i}", _output(i, version))
        info = writer.save()[1]
        # A delta of `step` rows, or a snapshot once the deltas since the last one
        # would pass max(64, K/4) rows (then it holds all K).
        assert info.nodes_written == (k if info.snapshot else step)
    readers = {t: _driver(t, store, run_id, loop) for t in TWINS}

    def variant(reader: Driver) -> Sample:
        def sample() -> int:
            ns, cp = reader.restore()
            assert cp.seq == HISTORY
            assert len(cp.nodes) == k
            return ns

        return sample

    summaries = interleave(
        {t: variant(r) for t, r in readers.items()}, rounds=RESTORE_ROUNDS[k], warmup=1
    )
    recorder.add("restore", backend, k, "op", summaries, history=HISTORY)

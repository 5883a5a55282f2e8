"""What an enabled hook that does not save costs a sync runner, per node.

Per node, ``on_node_start`` then ``on_node_finish(output=<small dict>)``, on an
enabled manager over a ``MemoryStore`` with the default policy (no save is ever
due; the store is never opened). Side by side, interleaved round by round:

- ``bare``: the same two calls straight on the manager's core
  (``m._core.node_started(node_id)``, ``m._core.node_finished(node_id, output)``):
  the bookkeeping itself, the floor any hook pays (the baseline);
- ``sync_twin``: ``SyncCheckpointManager``'s hooks (the target: at most 2 µs
  more than ``bare`` per node, p50);
- ``run_until_complete``, ``asyncio_run``: for context, what a user's sync
  wrapper around the async ``CheckpointManager`` pays when it drives each hook
  with ``loop.run_until_complete(...)`` on one reused loop, or ``asyncio.run(...)``.

A sample runs the same ``NODES`` nodes (the same ids every round, so the
bookkeeping stays the same size) and is reported per node.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _harness import Recorder, Sample, interleave

from pitstop import CheckpointManager, MemoryStore, SyncCheckpointManager

NODES = 50
"""Nodes per sample."""
ROUNDS = 400
WARMUP = 20


def _output(i: int) -> dict[str, Any]:
    """A small node output (about 40 bytes of JSON)."""
    return {"i": i, "ok": True, "rows": [i, i + 1]}


class RunUntilCompleteHooks:
    """A user's sync wrapper: each hook runs the async manager's coroutine on one loop."""

    def __init__(self, mgr: CheckpointManager, loop: asyncio.AbstractEventLoop) -> None:
        self._mgr = mgr
        self._loop = loop

    def on_node_start(self, *, node_id: str) -> None:
        self._loop.run_until_complete(self._mgr.on_node_start(node_id=node_id))

    def on_node_finish(self, *, node_id: str, output: Any = None) -> None:
        self._loop.run_until_complete(self._mgr.on_node_finish(node_id=node_id, output=output))


class AsyncioRunHooks:
    """A user's sync wrapper that calls ``asyncio.run`` for every hook."""

    def __init__(self, mgr: CheckpointManager) -> None:
        self._mgr = mgr

    def on_node_start(self, *, node_id: str) -> None:
        asyncio.run(self._mgr.on_node_start(node_id=node_id))

    def on_node_finish(self, *, node_id: str, output: Any = None) -> None:
        asyncio.run(self._mgr.on_node_finish(node_id=node_id, output=output))


def test_sync_hook_cost(recorder: Recorder, loop: asyncio.AbstractEventLoop) -> None:
    work = [(f"n{i}", _output(i)) for i in range(NODES)]
    store = MemoryStore()  # never opened by the hooks: nothing is due
    twin = SyncCheckpointManager("bench-hooks-twin", store=store, enabled=True)
    bare = SyncCheckpointManager("bench-hooks-bare", store=store, enabled=True)
    amgr = CheckpointManager("bench-hooks-ruc", store=store, enabled=True)
    amgr_run = CheckpointManager("bench-hooks-run", store=store, enabled=True)
    twin.on_run_start()
    bare.on_run_start()
    loop.run_until_complete(amgr.on_run_start())
    loop.run_until_complete(amgr_run.on_run_start())
    core = bare._core

    def bare_sample() -> int:
        t0 = time.perf_counter_ns()
        for node_id, output in work:
            core.node_started(node_id)
            core.node_finished(node_id, output)
        return time.perf_counter_ns() - t0

    def hooks_sample(
        hooks: SyncCheckpointManager | RunUntilCompleteHooks | AsyncioRunHooks,
    ) -> Sample:
        def sample() -> int:
            t0 = time.perf_counter_ns()
            for node_id, output in work:
                hooks.on_node_start(node_id=node_id)
                hooks.on_node_finish(node_id=node_id, output=output)
            return time.perf_counter_ns() - t0

        return sample

    variants = {
        "bare": bare_sample,
        "sync_twin": hooks_sample(twin),
        "run_until_complete": hooks_sample(RunUntilCompleteHooks(amgr, loop)),
        "asyncio_run": hooks_sample(AsyncioRunHooks(amgr_run)),
    }
    summaries = interleave(variants, rounds=ROUNDS, warmup=WARMUP, per=NODES)
    recorder.add("hooks", "per node", NODES, "node", summaries)

    # Every variant did the same bookkeeping, and none of them saved anything.
    for mgr in (twin, bare, amgr, amgr_run):
        assert mgr._core.rows["n0"].attempt == WARMUP + ROUNDS
        assert mgr._core.hwm is None
    assert not store._backend.is_open

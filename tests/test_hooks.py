"""RunnerHooks: bookkeeping, automatic-save policies, and zero cost when disabled."""

import asyncio
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import pitstop
from pitstop import (
    CheckpointEvent,
    CheckpointManager,
    CheckpointPolicy,
    GraphMismatch,
    MemoryStore,
    NodeStatus,
    StoreError,
)
from pitstop.storage.base import CheckpointRecord, NodeRow

GRAPH = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


class FailingStore(MemoryStore):
    """A real MemoryStore whose saves fail while `broken` is set."""

    broken = True

    async def save(
        self, record: CheckpointRecord, nodes: Sequence[NodeRow], *, base_seq: int | None
    ) -> int:
        if self.broken:
            raise StoreError("disk full")
        return await super().save(record, nodes, base_seq=base_seq)


async def run_graph(mgr: CheckpointManager, order: str = "abcd") -> None:
    await mgr.on_run_start(graph=GRAPH)
    for n in order:
        await mgr.on_node_start(node_id=n)
        await mgr.on_node_finish(node_id=n, output=n.upper())


def mk(policy: CheckpointPolicy, store: MemoryStore | None = None, **kw: Any) -> CheckpointManager:
    return CheckpointManager("r", store=store or MemoryStore(), enabled=True, policy=policy, **kw)


async def triggers(mgr: CheckpointManager) -> list[tuple[str, str | None]]:
    return [(i.trigger, i.node) for i in await mgr.list_checkpoints()]


async def test_hooks_fill_bookkeeping_without_writing() -> None:
    store = MemoryStore()
    mgr = mk(CheckpointPolicy(preserve=True), store)
    await mgr.on_run_start(graph=GRAPH)
    await mgr.on_node_start(node_id="a")
    await mgr.on_node_finish(node_id="a", output=1)
    await mgr.on_node_start(node_id="b")
    await mgr.on_node_error(node_id="b", error=ValueError("bad"))
    await mgr.on_node_start(node_id="b")
    await mgr.on_node_start(node_id="c")
    assert await store.list_runs() == []  # hooks never write on their own
    cp = await mgr.restore_checkpoint(seq=(await mgr.save_checkpoint()).seq)
    assert cp.completed == {"a": 1}
    assert cp.interrupted == ("b", "c") and cp.pending == ("d",)
    assert cp.attempts == {"a": 1, "b": 2, "c": 1, "d": 0}
    assert cp.nodes["b"].error is None and cp.nodes["a"].finished_at is not None


async def test_failed_node_records_error() -> None:
    mgr = mk(CheckpointPolicy())
    await mgr.on_node_start(node_id="x")
    await mgr.on_node_error(node_id="x", error=KeyError("k"))
    cp = await mgr.restore_checkpoint(seq=(await mgr.save_checkpoint()).seq)
    assert cp.failed == {"x": "KeyError: 'k'"}


async def test_every_n_nodes() -> None:
    mgr = mk(CheckpointPolicy(every_n_nodes=2))
    await run_graph(mgr)
    assert await triggers(mgr) == [("every_n_nodes", "b"), ("every_n_nodes", "d")]


async def test_after_each_level() -> None:
    mgr = mk(CheckpointPolicy(after_each_level=True))
    await run_graph(mgr)
    assert await triggers(mgr) == [("level:0", "a"), ("level:1", "c"), ("level:2", "d")]


async def test_before_named_nodes_saves_before_the_node_runs() -> None:
    mgr = mk(CheckpointPolicy(before_nodes=frozenset({"d"})))
    await run_graph(mgr)
    infos = await mgr.list_checkpoints()
    assert [(i.trigger, i.node) for i in infos] == [("before_node", "d")]
    cp = await mgr.restore_checkpoint(seq=infos[0].seq)
    assert cp.pending == ("d",) and set(cp.completed) == {"a", "b", "c"}


async def test_every_seconds() -> None:
    mgr = mk(CheckpointPolicy(every_seconds=0.05))
    await mgr.on_run_start(graph=GRAPH)
    await mgr.on_node_finish(node_id="a", output=1)
    await asyncio.sleep(0.06)
    await mgr.on_node_finish(node_id="b", output=2)
    assert await triggers(mgr) == [("every_seconds", "b")]


async def test_pause_saves_with_reason_as_label() -> None:
    mgr = mk(CheckpointPolicy())
    await mgr.on_run_pause(reason="operator")
    infos = await mgr.list_checkpoints()
    assert [(i.trigger, i.label) for i in infos] == [("pause", "operator")]
    quiet = mk(CheckpointPolicy(on_pause=False))
    await quiet.on_run_pause(reason="operator")
    assert await quiet.list_checkpoints() == []


async def test_success_deletes_unless_preserve() -> None:
    events: list[CheckpointEvent] = []
    mgr = mk(CheckpointPolicy(every_n_nodes=1), observers=[events.append])
    await run_graph(mgr)
    assert len(await mgr.list_checkpoints()) == 4
    await mgr.on_run_end(success=True)
    assert await mgr.list_checkpoints() == []
    assert events[-1].name == "checkpoint.prune" and events[-1].removed == (1, 2, 3, 4)
    kept = mk(CheckpointPolicy(every_n_nodes=1, preserve=True))
    await run_graph(kept)
    await kept.on_run_end(success=True)
    assert len(await kept.list_checkpoints()) == 4


async def test_failure_saves_a_final_checkpoint() -> None:
    mgr = mk(CheckpointPolicy())
    await run_graph(mgr, order="ab")
    await mgr.on_node_start(node_id="c")
    await mgr.on_node_error(node_id="c", error=RuntimeError("boom"))
    await mgr.on_run_end(success=False, error=RuntimeError("boom"))
    cp = await mgr.restore_checkpoint()
    assert cp.info.trigger == "run_failed"
    assert cp.completed == {"a": "A", "b": "B"} and cp.failed == {"c": "RuntimeError: boom"}


async def test_save_error_fail_fast_raises_from_the_hook() -> None:
    mgr = mk(CheckpointPolicy(every_n_nodes=1), FailingStore())
    await mgr.on_run_start(graph=GRAPH)
    with pytest.raises(StoreError, match="disk full"):
        await mgr.on_node_finish(node_id="a", output=1)


async def test_save_error_log_and_continue_keeps_changes_for_next_save(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    events: list[CheckpointEvent] = []
    mgr = mk(CheckpointPolicy(every_n_nodes=1, on_error="log"), store, observers=[events.append])
    await mgr.on_run_start(graph=GRAPH)
    await mgr.on_node_finish(node_id="a", output=1)  # save fails, run goes on
    assert [e.name for e in events] == ["checkpoint.error"]
    assert isinstance(events[0].error, StoreError)
    assert "disk full" in caplog.text
    store.broken = False
    await mgr.on_node_finish(node_id="b", output=2)
    cp = await mgr.restore_checkpoint()
    assert cp.completed == {"a": 1, "b": 2}  # a's change was not lost
    with pytest.raises(StoreError):  # explicit saves always raise
        store.broken = True
        await mgr.save_checkpoint()


async def test_resume_emits_event_and_checks_graph() -> None:
    store = MemoryStore()
    first = mk(CheckpointPolicy(every_n_nodes=1), store)
    await run_graph(first, order="ab")
    events: list[CheckpointEvent] = []
    second = mk(CheckpointPolicy(), store, observers=[events.append])
    await second.restore_checkpoint()
    await second.on_run_start(graph=GRAPH)
    assert [e.name for e in events] == ["checkpoint.load", "checkpoint.resume"]
    third = mk(CheckpointPolicy(), store)
    await third.restore_checkpoint()
    with pytest.raises(GraphMismatch) as err:
        await third.on_run_start(graph={**GRAPH, "e": ["d"], "c": []})
    assert err.value.added == ("e",) and err.value.changed == ("c",)


async def test_level_policy_after_resume_counts_restored_nodes() -> None:
    store = MemoryStore()
    first = mk(CheckpointPolicy(every_n_nodes=1), store)
    await run_graph(first, order="ab")
    second = mk(CheckpointPolicy(after_each_level=True), store)
    cp = await second.restore_checkpoint()
    await second.on_run_start(graph=GRAPH)
    for n in cp.to_run:
        await second.on_node_start(node_id=n)
        await second.on_node_finish(node_id=n, output=n)
    new = [i for i in await second.list_checkpoints() if i.seq > cp.seq]
    assert [i.trigger for i in new] == ["level:1", "level:2"]
    final = await second.restore_checkpoint()
    assert final.nodes["b"].status is NodeStatus.COMPLETED and final.nodes["b"].attempt == 1


# --- zero overhead: a disabled manager runs no pitstop code at all -----------------

PITSTOP_DIR = str(Path(pitstop.__file__).parent)


async def guarded_runner(mgr: CheckpointManager, n: int) -> list[int]:
    out = []
    for i in range(n):
        if mgr.enabled:
            await mgr.on_node_start(node_id=f"n{i}")
        out.append(i * 2)
        if mgr.enabled:
            await mgr.on_node_finish(node_id=f"n{i}", output=i * 2)
    return out


def pitstop_calls(mgr: CheckpointManager) -> list[str]:
    calls: list[str] = []

    def profiler(frame: types.FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_call") and frame.f_code.co_filename.startswith(PITSTOP_DIR):
            calls.append(frame.f_code.co_qualname)

    loop = asyncio.new_event_loop()
    try:
        coro = guarded_runner(mgr, 20)
        sys.setprofile(profiler)
        try:
            result = loop.run_until_complete(coro)
        finally:
            sys.setprofile(None)
    finally:
        loop.close()
    assert result == [i * 2 for i in range(20)]
    return calls


def test_disabled_manager_calls_no_pitstop_function() -> None:
    assert pitstop_calls(CheckpointManager("r", store=MemoryStore())) == []


def test_profiler_sees_pitstop_calls_when_enabled() -> None:
    # The check above can fail: the same profiler catches the hooks when enabled.
    calls = pitstop_calls(CheckpointManager("r", store=MemoryStore(), enabled=True))
    assert "HooksMixin.on_node_start" in calls and "HooksMixin.on_node_finish" in calls


async def test_manager_reused_for_a_new_run_starts_clean() -> None:
    mgr = mk(CheckpointPolicy(preserve=True))
    await run_graph(mgr)
    await mgr.save_checkpoint(state={"round": 1})
    await mgr.on_run_end(success=True)
    await mgr.on_run_start(graph=GRAPH)
    await mgr.on_node_start(node_id="a")
    await mgr.on_node_finish(node_id="a", output="again")
    info = await mgr.save_checkpoint()
    assert info.nodes_written == 4  # full snapshot of the new run
    cp = await mgr.restore_checkpoint()
    assert cp.completed == {"a": "again"} and cp.state is None
    assert cp.attempts["a"] == 1 and set(cp.pending) == {"b", "c", "d"}


class PruneFailingStore(MemoryStore):
    async def prune(self, run_id: str, keep: int) -> list[int]:
        raise StoreError("prune failed")


async def test_failed_retention_is_reported_and_does_not_fail_the_save(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[CheckpointEvent] = []
    policy = CheckpointPolicy(every_n_nodes=1, keep_last=1)
    mgr = mk(policy, PruneFailingStore(), observers=[events.append])
    await mgr.on_run_start(graph=GRAPH)
    await mgr.on_node_finish(node_id="a", output=1)
    info = await mgr.save_checkpoint()
    assert info.seq == 2
    errors = [(e.trigger, e.seq) for e in events if e.name == "checkpoint.error"]
    assert errors == [("retention", 1), ("retention", 2)]
    assert "prune failed" in caplog.text
    assert [i.seq for i in await mgr.list_checkpoints()] == [1, 2]

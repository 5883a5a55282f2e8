"""Hooks: automatic-save policies, resume events and graph checks, errors in
policy saves, observers, and zero cost when disabled. Both twins, memory store."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from twins import MakeTwin, Twin

import pitstop
from pitstop import (
    CheckpointEvent,
    CheckpointManager,
    CheckpointPolicy,
    GraphMismatch,
    MemoryStore,
    NodeStatus,
    StoreError,
    SyncCheckpointManager,
)
from pitstop.storage._programs import Call

GRAPH = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


class FailingStore(MemoryStore):
    """A real MemoryStore whose saves fail while ``broken`` is set."""

    broken = True

    def execute(self, call: Call[Any]) -> Any:
        if self.broken and call.name == "save":
            raise StoreError("disk full")
        return super().execute(call)


async def run_graph(m: Twin, order: str = "abcd") -> None:
    await m.on_run_start(graph=GRAPH)
    for n in order:
        await m.on_node_start(node_id=n)
        await m.on_node_finish(node_id=n, output=n.upper())


async def triggers(m: Twin) -> list[tuple[str, str | None]]:
    return [(i.trigger, i.node) for i in await m.list_checkpoints()]


@pytest.fixture
def memory() -> Any:
    with MemoryStore() as store:
        yield store


async def test_hooks_fill_bookkeeping_without_writing(twin: MakeTwin, memory: MemoryStore) -> None:
    m = twin("r", store=memory)
    await run_graph(m, "ab")
    assert await m.run_info() is None  # nothing written until a save
    await m.save_checkpoint()
    cp = await m.load_checkpoint()
    assert cp.completed == {"a": "A", "b": "B"} and set(cp.pending) == {"c", "d"}


async def test_every_n_nodes(twin: MakeTwin, memory: MemoryStore) -> None:
    m = twin("r", store=memory, policy=CheckpointPolicy(every_n_nodes=2))
    await run_graph(m)
    assert await triggers(m) == [("every_n_nodes", "b"), ("every_n_nodes", "d")]


async def test_after_each_level(twin: MakeTwin, memory: MemoryStore) -> None:
    m = twin("r", store=memory, policy=CheckpointPolicy(after_each_level=True))
    await run_graph(m)
    assert await triggers(m) == [("level:0", "a"), ("level:1", "c"), ("level:2", "d")]


async def test_before_named_nodes_saves_before_the_node_runs(
    twin: MakeTwin, memory: MemoryStore
) -> None:
    m = twin("r", store=memory, policy=CheckpointPolicy(before_nodes=frozenset({"d"})))
    await run_graph(m)
    infos = await m.list_checkpoints()
    assert [(i.trigger, i.node) for i in infos] == [("before_node", "d")]
    cp = await m.load_checkpoint(infos[0].seq)
    assert cp.pending == ("d",) and set(cp.completed) == {"a", "b", "c"}


async def test_every_seconds(twin: MakeTwin, memory: MemoryStore) -> None:
    m = twin("r", store=memory, policy=CheckpointPolicy(every_seconds=0.05))
    await m.on_run_start(graph=GRAPH)
    await m.on_node_finish(node_id="a", output=1)
    time.sleep(0.06)
    await m.on_node_finish(node_id="b", output=2)
    assert await triggers(m) == [("every_seconds", "b")]


async def test_pause_without_save_policy_records_status_only(
    twin: MakeTwin, memory: MemoryStore
) -> None:
    quiet = twin("q", store=memory, policy=CheckpointPolicy(on_pause=False, every_n_nodes=1))
    await run_graph(quiet, "a")
    await quiet.on_run_pause(reason="operator")
    assert len(await quiet.list_checkpoints()) == 1
    run = await quiet.run_info()
    assert run is not None and run.status == "paused"


async def test_resume_emits_event_and_checks_graph(twin: MakeTwin, memory: MemoryStore) -> None:
    first = twin("r", store=memory, policy=CheckpointPolicy(every_n_nodes=1))
    await run_graph(first, order="ab")
    events: list[CheckpointEvent] = []
    second = twin("r", store=memory, observers=[events.append])
    await second.restore_checkpoint()
    await second.on_run_start(graph=GRAPH)
    assert [e.name for e in events] == ["checkpoint.load", "checkpoint.resume"]
    third = twin("r", store=memory)
    await third.restore_checkpoint()
    with pytest.raises(GraphMismatch) as err:
        await third.on_run_start(graph={**GRAPH, "e": ["d"], "c": []})
    assert err.value.added == ("e",) and err.value.changed == ("c",)


async def test_level_policy_after_resume_counts_restored_nodes(
    twin: MakeTwin, memory: MemoryStore
) -> None:
    first = twin("r", store=memory, policy=CheckpointPolicy(every_n_nodes=1))
    await run_graph(first, order="ab")
    second = twin("r", store=memory, policy=CheckpointPolicy(after_each_level=True))
    cp = await second.restore_checkpoint()
    await second.on_run_start(graph=GRAPH)
    for n in cp.to_run:
        await second.on_node_start(node_id=n)
        await second.on_node_finish(node_id=n, output=n)
    new = [i for i in await second.list_checkpoints() if i.seq > cp.seq]
    assert [i.trigger for i in new] == ["level:1", "level:2"]
    final = await second.load_checkpoint()
    assert final.nodes["b"].status is NodeStatus.COMPLETED and final.nodes["b"].attempt == 1


async def test_policy_save_error_fails_fast_by_default(twin: MakeTwin) -> None:
    with FailingStore() as store:
        m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
        await m.on_run_start(graph=GRAPH)
        await m.on_node_start(node_id="a")
        with pytest.raises(StoreError, match="disk full"):
            await m.on_node_finish(node_id="a", output=1)


async def test_policy_save_error_logged_keeps_changes_for_next_save(
    twin: MakeTwin, caplog: pytest.LogCaptureFixture
) -> None:
    with FailingStore() as store:
        events: list[CheckpointEvent] = []
        policy = CheckpointPolicy(every_n_nodes=1, on_error="log")
        m = twin("r", store=store, policy=policy, observers=[events.append])
        await run_graph(m, "ab")  # both saves fail, the run goes on
        assert [e.name for e in events] == ["checkpoint.error", "checkpoint.error"]
        assert "disk full" in caplog.text
        store.broken = False
        await m.save_checkpoint()
        assert set((await m.load_checkpoint()).completed) == {"a", "b"}


async def test_a_broken_observer_never_breaks_a_save(twin: MakeTwin, memory: MemoryStore) -> None:
    def broken(event: CheckpointEvent) -> None:
        raise RuntimeError("observer bug")

    seen: list[str] = []
    m = twin("r", store=memory, observers=[broken, lambda e: seen.append(e.name)])
    await m.save_checkpoint()
    assert seen == ["checkpoint.save"]


async def test_default_store_is_a_sqlite_file_in_cwd(
    twin: MakeTwin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    m = twin("r")
    await m.save_checkpoint()
    await m.close()
    assert (tmp_path / pitstop.DEFAULT_STORE).is_file()


# --- zero overhead: a disabled manager runs no pitstop code at all -----------------

PITSTOP_DIR = str(Path(pitstop.__file__).parent)


def _profiled(run: Any) -> list[str]:
    calls: list[str] = []

    def profiler(frame: types.FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_call") and frame.f_code.co_filename.startswith(PITSTOP_DIR):
            calls.append(frame.f_code.co_qualname)

    sys.setprofile(profiler)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    assert result == [i * 2 for i in range(20)]
    return calls


def async_calls(m: CheckpointManager) -> list[str]:
    async def runner() -> list[int]:
        out = []
        for i in range(20):
            if m.enabled:
                await m.on_node_start(node_id=f"n{i}")
            out.append(i * 2)
            if m.enabled:
                await m.on_node_finish(node_id=f"n{i}", output=i * 2)
        return out

    loop = asyncio.new_event_loop()
    try:
        coro = runner()
        return _profiled(lambda: loop.run_until_complete(coro))
    finally:
        loop.close()


def sync_calls(m: SyncCheckpointManager) -> list[str]:
    def runner() -> list[int]:
        out = []
        for i in range(20):
            if m.enabled:
                m.on_node_start(node_id=f"n{i}")
            out.append(i * 2)
            if m.enabled:
                m.on_node_finish(node_id=f"n{i}", output=i * 2)
        return out

    return _profiled(runner)


def test_disabled_manager_calls_no_pitstop_function() -> None:
    with MemoryStore() as store:
        assert async_calls(CheckpointManager("r", store=store)) == []
        assert sync_calls(SyncCheckpointManager("r", store=store)) == []


def test_profiler_sees_pitstop_calls_when_enabled() -> None:
    # The check above can fail: the same profiler catches the hooks when enabled.
    with MemoryStore() as store:
        calls = async_calls(CheckpointManager("r", store=store, enabled=True))
        assert "ManagerBase._on_node_start" in calls and "RunCore.node_finished" in calls
        calls = sync_calls(SyncCheckpointManager("r", store=store, enabled=True))
        assert "on_node_start" in calls  # the twin's method, generated (_program.twin_method)
        assert "RunCore.node_started" in calls

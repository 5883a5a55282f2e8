"""CheckpointManager against every backend (the `store` fixture: memory, sqlite, postgres)."""

from typing import Any

import pytest

from pitstop import (
    CheckpointEvent,
    CheckpointingDisabled,
    CheckpointManager,
    CheckpointNotFound,
    CheckpointPolicy,
    CorruptCheckpoint,
    JsonSerializer,
    NodeState,
    NodeStatus,
    PickleSerializer,
    SchemaVersionError,
    SerializationError,
    Store,
)
from pitstop._codec import FORMAT_VERSION


def mk(store: Store, run_id: str = "run", **kw: Any) -> CheckpointManager:
    return CheckpointManager(run_id, store=store, enabled=True, **kw)


async def test_save_and_restore_explicit_nodes_state_and_metadata(store: Store) -> None:
    mgr = mk(store, metadata={"owner": "team"})
    info = await mgr.save_checkpoint(
        nodes=[
            NodeState("a", NodeStatus.COMPLETED, output={"rows": 3}, attempt=1),
            NodeState("b", NodeStatus.RUNNING, attempt=2, deps=("a",)),
            NodeState("c", NodeStatus.FAILED, attempt=1, error="ValueError: x", deps=("a",)),
            NodeState("d", NodeStatus.PENDING, deps=("b", "c")),
        ],
        state={"cursor": 42},
        metadata={"step": 1},
        label="first",
    )
    assert (info.seq, info.parent_seq, info.nodes_written, info.label) == (1, None, 4, "first")
    assert info.metadata == {"owner": "team", "step": 1}

    fresh = mk(store)
    assert await fresh.can_resume()
    cp = await fresh.restore_checkpoint()
    assert cp.seq == 1 and cp.run_id == "run"
    assert cp.completed == {"a": {"rows": 3}}
    assert cp.interrupted == ("b",)
    assert cp.failed == {"c": "ValueError: x"}
    assert cp.pending == ("d",)
    assert set(cp.to_run) == {"b", "c", "d"}
    assert cp.attempts == {"a": 1, "b": 2, "c": 1, "d": 0}
    assert cp.graph["d"] == ("b", "c")
    assert cp.state == {"cursor": 42} and fresh.state == {"cursor": 42}
    assert cp.metadata == {"owner": "team", "step": 1}


async def test_only_changed_nodes_are_written(store: Store) -> None:
    mgr = mk(store)
    await mgr.on_run_start(graph={f"n{i}": [] for i in range(50)})
    first = await mgr.save_checkpoint()
    assert first.nodes_written == 50
    await mgr.on_node_start(node_id="n7")
    await mgr.on_node_finish(node_id="n7", output=7)
    second = await mgr.save_checkpoint()
    assert (second.seq, second.parent_seq, second.nodes_written) == (2, 1, 1)
    empty = await mgr.save_checkpoint()
    assert empty.nodes_written == 0
    cp = await mk(store).restore_checkpoint()
    assert cp.completed == {"n7": 7} and len(cp.pending) == 49
    older = await mk(store).restore_checkpoint(seq=1)
    assert older.completed == {} and len(older.pending) == 50


async def test_restore_older_seq_then_save_writes_full_snapshot(store: Store) -> None:
    mgr = mk(store)
    await mgr.save_checkpoint(nodes=[NodeState("a"), NodeState("b")])
    await mgr.save_checkpoint(nodes=[NodeState("a", NodeStatus.COMPLETED, output=1)])
    branch = mk(store)
    await branch.restore_checkpoint(seq=1)
    await branch.save_checkpoint(nodes=[NodeState("b", NodeStatus.COMPLETED, output=2)])
    cp = await mk(store).restore_checkpoint()
    # seq 3 descends from seq 1: a is pending there, whatever seq 2 said.
    assert cp.seq == 3 and cp.info.parent_seq == 1 and cp.info.nodes_written == 2
    assert cp.completed == {"b": 2} and cp.pending == ("a",)


async def test_history_list_delete_prune(store: Store) -> None:
    mgr = mk(store)
    for i in range(5):
        await mgr.save_checkpoint(nodes=[NodeState(f"n{i}", NodeStatus.COMPLETED, output=i)])
    assert [i.seq for i in await mgr.list_checkpoints()] == [1, 2, 3, 4, 5]
    assert await mgr.prune(keep=2) == [1, 2, 3]
    cp = await mk(store).restore_checkpoint(seq=4)
    assert cp.completed == {f"n{i}": i for i in range(4)}
    with pytest.raises(CheckpointNotFound) as err:
        await mk(store).restore_checkpoint(seq=2)
    assert (err.value.run_id, err.value.seq) == ("run", 2)
    assert await mgr.delete(seq=4) == 1
    assert (await mk(store).restore_checkpoint()).completed == {f"n{i}": i for i in range(5)}
    assert await mgr.delete() == 1
    assert not await mgr.can_resume()
    with pytest.raises(CheckpointNotFound):
        await mgr.delete()


async def test_keep_last_policy_prunes_after_each_save(store: Store) -> None:
    events: list[CheckpointEvent] = []
    mgr = mk(store, policy=CheckpointPolicy(keep_last=2), observers=[events.append])
    for i in range(4):
        await mgr.save_checkpoint(nodes=[NodeState(f"n{i}", NodeStatus.COMPLETED, output=i)])
    assert [i.seq for i in await mgr.list_checkpoints()] == [3, 4]
    prunes = [e.removed for e in events if e.name == "checkpoint.prune"]
    assert prunes == [(1,), (2,)]
    assert (await mk(store).restore_checkpoint()).completed == {f"n{i}": i for i in range(4)}


async def test_disabled_manager_refuses_to_save(store: Store) -> None:
    mgr = CheckpointManager("run", store=store)
    assert mgr.enabled is False
    with pytest.raises(CheckpointingDisabled):
        await mgr.save_checkpoint()
    await mgr.on_run_start(graph={"a": []})
    await mgr.on_node_start(node_id="a")
    await mgr.on_node_finish(node_id="a", output=1)
    await mgr.on_run_end(success=False)
    assert not await mgr.can_resume()


async def test_unserializable_output_writes_nothing_and_keeps_changes(store: Store) -> None:
    mgr = mk(store)
    await mgr.save_checkpoint(nodes=[NodeState("a", NodeStatus.COMPLETED, output=1)])
    await mgr.on_node_finish(node_id="b", output=(1, 2))
    with pytest.raises(SerializationError) as err:
        await mgr.save_checkpoint()
    assert err.value.node_id == "b"
    assert [i.seq for i in await mgr.list_checkpoints()] == [1]
    await mgr.on_node_finish(node_id="b", output=[1, 2])
    info = await mgr.save_checkpoint()
    assert info.nodes_written == 1
    assert (await mk(store).restore_checkpoint()).completed == {"a": 1, "b": [1, 2]}


async def test_bad_metadata_and_nodes_are_typed_errors(store: Store) -> None:
    mgr = mk(store)
    with pytest.raises(SerializationError):
        await mgr.save_checkpoint(metadata={"when": object()})
    with pytest.raises(TypeError):
        await mgr.save_checkpoint(nodes=[{"node_id": "a"}])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        CheckpointManager("")


async def test_pickle_is_opt_in_on_load(store: Store) -> None:
    writer = mk(store, serializer=PickleSerializer())
    await writer.save_checkpoint(
        nodes=[NodeState("a", NodeStatus.COMPLETED, output=(1, b"x"))], state={1, 2}
    )
    with pytest.raises(SerializationError, match="PickleSerializer"):
        await mk(store).restore_checkpoint()
    cp = await mk(store, serializer=PickleSerializer()).restore_checkpoint()
    assert cp.completed == {"a": (1, b"x")} and cp.state == {1, 2}
    assert cp.info.serializer == "pickle"


async def test_json_written_run_loads_under_pickle_manager(store: Store) -> None:
    await mk(store, serializer=JsonSerializer()).save_checkpoint(state=[1])
    assert (await mk(store, serializer=PickleSerializer()).restore_checkpoint()).state == [1]


async def test_observer_events_and_broken_observer(store: Store) -> None:
    seen: list[CheckpointEvent] = []

    def broken(event: CheckpointEvent) -> None:
        raise RuntimeError("observer bug")

    mgr = mk(store, observers=[broken, seen.append])
    info = await mgr.save_checkpoint(trigger="manual")
    await mk(store, observers=[seen.append]).restore_checkpoint()
    names = [e.name for e in seen]
    assert names == ["checkpoint.save", "checkpoint.load"]
    assert seen[0].info == info and seen[0].duration_s is not None and seen[0].duration_s >= 0


async def test_default_store_is_sqlite_file_in_cwd(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with CheckpointManager("r", enabled=True) as mgr:
        await mgr.save_checkpoint(state={"x": 1})
    assert (tmp_path / "pitstop.db").exists()
    async with CheckpointManager("r") as again:
        assert (await again.restore_checkpoint()).state == {"x": 1}


def test_corrupt_and_newer_schema_are_detected_in_codec() -> None:
    import dataclasses

    from pitstop._codec import decode_checkpoint, encode_node, record_checksum
    from pitstop.storage.base import CheckpointRecord

    ser = JsonSerializer()
    rec = CheckpointRecord(
        run_id="r", seq=3, parent_seq=2, created_at=1.0, trigger="manual", label=None,
        node=None, schema_version=FORMAT_VERSION, serializer="json", metadata=b"{}",
        state=ser.dumps({"k": 1}), checksum="", size=0, nodes_written=1,
    )  # fmt: skip
    rec = dataclasses.replace(rec, checksum=record_checksum(rec))
    row = encode_node(NodeState("a", NodeStatus.COMPLETED, output=5), ser)
    serializers = {"json": ser}
    assert decode_checkpoint(rec, [row], serializers).completed == {"a": 5}

    bad_state = dataclasses.replace(rec, state=ser.dumps({"k": 2}))
    with pytest.raises(CorruptCheckpoint) as err:
        decode_checkpoint(bad_state, [row], serializers)
    assert (err.value.run_id, err.value.seq) == ("r", 3)
    bad_row = dataclasses.replace(row, output=ser.dumps(6), seq=2)
    with pytest.raises(CorruptCheckpoint, match="node 'a'"):
        decode_checkpoint(rec, [bad_row], serializers)
    newer = dataclasses.replace(rec, schema_version=FORMAT_VERSION + 1)
    with pytest.raises(SchemaVersionError) as verr:
        decode_checkpoint(newer, [row], serializers)
    assert (verr.value.found, verr.value.supported) == (FORMAT_VERSION + 1, FORMAT_VERSION)


async def test_serialization_error_message_names_node_once(store: Store) -> None:
    mgr = mk(store)
    with pytest.raises(SerializationError) as err:
        await mgr.save_checkpoint(nodes=[NodeState("b", NodeStatus.COMPLETED, output=(1,))])
    text = str(err.value)
    assert text.count("[json]") == 1 and text.count("'b'") == 1 and err.value.node_id == "b"

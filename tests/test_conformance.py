"""One contract for both managers on every store: each test runs for the sync
and the async twin, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from twins import MakeTwin

from pitstop import (
    CheckpointingDisabled,
    CheckpointNotFound,
    CheckpointPolicy,
    NodeState,
    NodeStatus,
    PickleSerializer,
    RunStatus,
    SerializationError,
    StaleBaseError,
    Store,
    Undecoded,
)

GRAPH = {"a": [], "b": ["a"], "c": ["b"]}


async def run_nodes(m: object, *nodes: str) -> None:
    for n in nodes:
        await m.on_node_start(node_id=n)  # type: ignore[attr-defined]
        await m.on_node_finish(node_id=n, output={"node": n})  # type: ignore[attr-defined]


async def test_save_restore_round_trip(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, metadata={"who": "test"})
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a", "b")
    await m.on_node_start(node_id="c")
    info = await m.save_checkpoint(label="mid", state={"cursor": 3}, metadata={"k": [1, 2]})
    assert (info.seq, info.parent_seq, info.root_seq, info.snapshot) == (1, None, 1, True)
    assert info.metadata == {"who": "test", "k": [1, 2]}
    r = twin("r", store=store)
    assert await r.can_resume() is True
    cp = await r.restore_checkpoint()
    assert cp.seq == 1 and cp.info.label == "mid"
    assert cp.completed == {"a": {"node": "a"}, "b": {"node": "b"}}
    assert cp.interrupted == ("c",)
    assert cp.state == {"cursor": 3} and r.state == {"cursor": 3}
    assert cp.graph == {"a": (), "b": ("a",), "c": ("b",)}
    assert cp.attempts == {"a": 1, "b": 1, "c": 1}


async def test_deltas_write_only_changed_nodes(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a", "b", "c")
    infos = await m.list_checkpoints()
    assert [(i.seq, i.parent_seq, i.nodes_written, i.node_count) for i in infos] == [
        (1, None, 3, 3),
        (2, 1, 1, 3),
        (3, 2, 1, 3),
    ]
    cp = await m.load_checkpoint(2)
    assert set(cp.completed) == {"a", "b"} and cp.pending == ("c",)


async def test_output_is_captured_at_finish(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    rows = [1, 2]
    await m.on_node_start(node_id="load")
    await m.on_node_finish(node_id="load", output=rows)
    rows.append(3)  # a later node mutates its input
    await m.save_checkpoint()
    assert (await m.load_checkpoint()).completed["load"] == [1, 2]


async def test_rerun_and_failure_drop_the_old_output(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await run_nodes(m, "a", "b")
    await m.save_checkpoint()
    await m.on_node_start(node_id="a")
    await m.on_node_error(node_id="b", error=ValueError("boom"))
    await m.save_checkpoint()
    cp = await m.load_checkpoint()
    assert cp.nodes["a"].status is NodeStatus.RUNNING and cp.nodes["a"].output is None
    assert cp.nodes["b"].status is NodeStatus.FAILED and cp.nodes["b"].output is None
    assert cp.failed == {"b": "ValueError: boom"}
    assert cp.attempts["a"] == 2


async def test_whole_number_timestamps_verify(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    node = NodeState("a", NodeStatus.COMPLETED, output=1, attempt=1, started_at=1700000000,
                     finished_at=1700000001)  # fmt: skip
    await m.save_checkpoint(nodes=[node])
    cp = await m.load_checkpoint()
    assert cp.nodes["a"].started_at == 1700000000.0 and cp.completed == {"a": 1}


async def test_restore_any_seq_and_missing_seq(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await run_nodes(m, "a", "b")
    assert (await m.load_checkpoint(1)).completed == {"a": {"node": "a"}}
    with pytest.raises(CheckpointNotFound) as err:
        await m.load_checkpoint(9)
    assert (err.value.run_id, err.value.seq) == ("r", 9)
    with pytest.raises(CheckpointNotFound):
        await twin("nobody", store=store).restore_checkpoint()


async def test_lineages_do_not_mix(store: Store, twin: MakeTwin) -> None:
    """Restore seq 1 of a, b, c, save: the new checkpoint holds only a."""
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await run_nodes(m, "a", "b", "c")
    await m.restore_checkpoint(1)
    info = await m.save_checkpoint()
    assert (info.seq, info.parent_seq) == (4, 1)
    assert set((await m.load_checkpoint(4)).completed) == {"a"}
    assert set((await m.load_checkpoint(3)).completed) == {"a", "b", "c"}
    await run_nodes(m, "d")
    assert set((await m.load_checkpoint()).completed) == {"a", "d"}


async def test_second_writer_is_refused(store: Store, twin: MakeTwin) -> None:
    one = twin("r", store=store)
    two = twin("r", store=store)
    await run_nodes(one, "a")
    await one.save_checkpoint()
    await run_nodes(two, "x")
    await two.save_checkpoint()  # a fresh writer starts its own lineage
    await run_nodes(one, "b")
    with pytest.raises(StaleBaseError) as err:
        await one.save_checkpoint()
    assert (err.value.expected, err.value.found) == (1, 2)
    assert set((await two.load_checkpoint()).completed) == {"x"}
    await one.restore_checkpoint()  # catch up, then continue
    assert set((await one.load_checkpoint()).completed) == {"x"}
    await one.save_checkpoint()


async def test_seqs_are_never_reused(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await run_nodes(m, "a")
    await m.save_checkpoint()
    await m.save_checkpoint()
    assert await m.delete(2) == 1
    assert (await m.save_checkpoint()).seq == 3
    assert await m.delete() == 2
    assert await m.list_checkpoints() == []
    assert await m.can_resume() is False
    info = await m.save_checkpoint()
    assert (info.seq, info.parent_seq, info.snapshot) == (4, None, True)
    assert set((await m.load_checkpoint()).completed) == {"a"}
    run = await m.run_info()
    assert run is not None and run.last_seq == 4 and run.checkpoints == 1


async def test_delete_missing_raises(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    with pytest.raises(CheckpointNotFound):
        await m.delete()
    await m.save_checkpoint()
    with pytest.raises(CheckpointNotFound):
        await m.delete(5)


async def test_prune_keeps_newest_and_older_stay_loadable(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1, snapshot_every=3))
    await run_nodes(m, *"abcdefg")
    assert [i.seq for i in await m.list_checkpoints()] == [1, 2, 3, 4, 5, 6, 7]
    assert await m.prune(2) == [1, 2, 3, 4, 5]
    assert [i.seq for i in await m.list_checkpoints()] == [6, 7]
    assert set((await m.load_checkpoint(6)).completed) == set("abcdef")
    assert set((await m.load_checkpoint()).completed) == set("abcdefg")
    with pytest.raises(CheckpointNotFound):
        await m.load_checkpoint(5)


async def test_keep_last_retains_in_the_save(store: Store, twin: MakeTwin) -> None:
    policy = CheckpointPolicy(every_n_nodes=1, keep_last=2, snapshot_every=4)
    events: list[tuple[str, tuple[int, ...]]] = []
    m = twin(
        "r", store=store, policy=policy, observers=[lambda e: events.append((e.name, e.removed))]
    )
    await run_nodes(m, *"abcdefghij")
    assert [i.seq for i in await m.list_checkpoints()] == [9, 10]
    assert set((await m.load_checkpoint(9)).completed) == set("abcdefghi")
    assert ("checkpoint.prune", (1,)) in events
    run = await m.run_info()
    assert run is not None and run.checkpoints == 2


async def test_snapshot_every_bounds_the_chain(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1, snapshot_every=3))
    await run_nodes(m, *"abcdefg")
    roots = [(i.seq, i.root_seq) for i in await m.list_checkpoints()]
    assert roots == [(1, 1), (2, 1), (3, 1), (4, 4), (5, 4), (6, 4), (7, 7)]
    assert set((await m.load_checkpoint(5)).completed) == set("abcde")


@pytest.mark.small_snapshots
async def test_a_small_run_is_saved_whole_at_every_save(store: Store, twin: MakeTwin) -> None:
    """The default snapshot_small: a run this small writes all its nodes each time
    (as cheap as a delta), so a restore reads one checkpoint, and lineage stays."""
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await run_nodes(m, *"abcd")
    infos = await m.list_checkpoints()
    assert [(i.seq, i.parent_seq, i.root_seq, i.nodes_written, i.snapshot) for i in infos] == [
        (1, None, 1, 1, True), (2, 1, 2, 2, True), (3, 2, 3, 3, True), (4, 3, 4, 4, True)
    ]  # fmt: skip
    cp = await twin("r", store=store).restore_checkpoint()
    assert cp.seq == 4 and set(cp.completed) == set("abcd")
    assert set((await m.load_checkpoint(2)).completed) == {"a", "b"}


@pytest.mark.small_snapshots
async def test_a_run_past_the_small_bounds_saves_deltas(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    for n in "abcd":  # 1,500 bytes each: two fit in 4,096, three do not
        await m.on_node_start(node_id=n)
        await m.on_node_finish(node_id=n, output="x" * 1500)
    assert [i.snapshot for i in await m.list_checkpoints()] == [True, True, False, False]
    many = twin("many", store=store)
    await run_nodes(many, *(f"n{i}" for i in range(64)))
    assert (await many.save_checkpoint()).snapshot
    await run_nodes(many, "n64")  # 65 nodes: more than a small view holds
    info = await many.save_checkpoint()
    assert (info.snapshot, info.nodes_written, info.node_count) == (False, 1, 65)
    off = twin("off", store=store, policy=CheckpointPolicy(every_n_nodes=1, snapshot_small=0))
    await run_nodes(off, "a", "b")
    assert [i.snapshot for i in await off.list_checkpoints()] == [True, False]


@pytest.mark.small_snapshots
async def test_keep_last_with_small_snapshots(store: Store, twin: MakeTwin) -> None:
    policy = CheckpointPolicy(every_n_nodes=1, keep_last=2, snapshot_every=4)
    m = twin("r", store=store, policy=policy)
    await run_nodes(m, *"abcdefghij")
    assert [i.seq for i in await m.list_checkpoints()] == [9, 10]
    assert set((await twin("r", store=store).restore_checkpoint()).completed) == set("abcdefghij")
    assert set((await m.load_checkpoint(9)).completed) == set("abcdefghi")
    run = await m.run_info()
    assert run is not None and run.checkpoints == 2


async def test_completed_of_a_finished_view_is_in_node_order(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await run_nodes(m, "c", "a", "b")
    await m.save_checkpoint()
    await run_nodes(m, "aa")  # a delta adding a node between the snapshot's
    await m.save_checkpoint()
    cp = await twin("r", store=store).restore_checkpoint()
    assert list(cp.completed.items()) == [(n, {"node": n}) for n in ("a", "aa", "b", "c")]
    assert list(cp.nodes) == ["a", "aa", "b", "c"] and cp.to_run == ()
    cp.completed["a"] = "changed"  # a copy: the checkpoint is not changed through it
    assert cp.completed["a"] == {"node": "a"}
    # Node states and outputs by id, built from the same decoded values on demand.
    assert cp.nodes["aa"].output == {"node": "aa"} and cp.nodes["c"].status.value == "completed"
    assert cp.nodes["b"] is cp.nodes["b"]


async def test_statuses_without_decoding(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, serializer=PickleSerializer())
    await m.on_node_start(node_id="a")
    await m.on_node_finish(node_id="a", output={1, 2})
    await m.save_checkpoint(state=("s",))
    reader = twin("r", store=store)  # no pickle
    cp = await reader.load_checkpoint(outputs=False)
    assert cp.nodes["a"].status is NodeStatus.COMPLETED
    assert isinstance(cp.nodes["a"].output, Undecoded) and cp.nodes["a"].output.codec == "pickle"
    assert isinstance(cp.state, Undecoded)
    with pytest.raises(SerializationError, match="pickle"):
        await reader.load_checkpoint()


async def test_bad_output_names_the_node_and_writes_nothing(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await m.on_node_start(node_id="ingest")
    with pytest.raises(SerializationError) as err:
        await m.on_node_finish(node_id="ingest", output={"rows": [{"when": object()}]})
    assert err.value.node_id == "ingest" and "['rows'][0]['when']" in str(err.value)
    await m.save_checkpoint()
    assert (await m.load_checkpoint()).interrupted == ("ingest",)


async def test_bad_state_keeps_changes_pending(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await run_nodes(m, "a")
    with pytest.raises(SerializationError):
        await m.save_checkpoint(state={"conn": object()})
    assert await m.list_checkpoints() == []
    m.m.state = {"ok": 1}
    await m.save_checkpoint()
    assert set((await m.load_checkpoint()).completed) == {"a"}


async def test_disabled_manager_touches_nothing(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, enabled=False)
    assert await m.can_resume() is False
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a")
    await m.on_run_end(success=True)
    for call in (m.restore_checkpoint(), m.save_checkpoint(), m.list_checkpoints(),
                 m.delete(), m.prune(1), m.run_info(), m.load_checkpoint()):  # fmt: skip
        with pytest.raises(CheckpointingDisabled):
            await call
    assert await twin("r", store=store).run_info() is None


async def test_run_status_success_and_failure(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a")
    run = await m.run_info()
    assert run is not None and run.status is RunStatus.RUNNING and run.attempt == 1
    await m.on_run_end(success=False, error=RuntimeError("disk full"))
    run = await m.run_info()
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error == "RuntimeError: disk full" and run.ended_at is not None
    assert await m.can_resume() is True
    # An in-process retry continues the same history as a new attempt.
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "b", "c")
    await m.on_run_end(success=True)
    run = await m.run_info()
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.attempt == 2
    assert run.error is None
    assert await m.can_resume() is False
    infos = await m.list_checkpoints()
    assert [i.parent_seq for i in infos] == [None, 1, 2, 3]
    assert set((await m.load_checkpoint()).completed) == {"a", "b", "c"}


async def test_rerunning_a_succeeded_run_starts_fresh(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a", "b", "c")
    await m.on_run_end(success=True)
    again = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    assert await again.can_resume() is False
    await again.on_run_start(graph=GRAPH)
    await run_nodes(again, "a")
    cp = await again.load_checkpoint()
    assert set(cp.completed) == {"a"} and cp.info.parent_seq is None and cp.seq == 4
    run = await again.run_info()
    assert run is not None and run.status is RunStatus.RUNNING
    # the same manager running its finished run again also starts fresh
    await m.on_run_start(graph=GRAPH)
    assert set(m.m._core.rows) == set(GRAPH) and not any(
        r.status == "completed" for r in m.m._core.rows.values()
    )


async def test_delete_on_success_is_explicit(store: Store, twin: MakeTwin) -> None:
    keep = twin("keep", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    drop = twin(
        "drop", store=store, policy=CheckpointPolicy(every_n_nodes=1, delete_on_success=True)
    )
    for m in (keep, drop):
        await m.on_run_start(graph=GRAPH)
        await run_nodes(m, "a", "b", "c")
        await m.on_run_end(success=True)
    assert len(await keep.list_checkpoints()) == 3
    assert await drop.list_checkpoints() == []
    run = await drop.run_info()
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.last_seq == 3


async def test_run_that_never_saved_writes_nothing_at_end(store: Store, twin: MakeTwin) -> None:
    m = twin("quiet", store=store)
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a", "b", "c")
    await m.on_run_end(success=True)
    assert await m.run_info() is None


async def test_checkpoint_failure_at_run_end_never_replaces_the_error(
    store: Store, twin: MakeTwin
) -> None:
    events: list[str] = []
    m = twin("r", store=store, observers=[lambda e: events.append(e.name)])
    await m.on_run_start(graph=GRAPH)
    await m.on_node_start(node_id="a")
    m.m.state = {"bad": object()}  # the on_failure save cannot encode this
    boom = ValueError("the runner's own error")
    await m.on_run_end(success=False, error=boom)  # does not raise
    assert any("pitstop" in note for note in boom.__notes__)
    assert "checkpoint.error" in events
    with pytest.raises(SerializationError):
        await m.on_run_end(success=False)  # no runner error to protect: fail fast


async def test_pause_saves_with_status(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a")
    await m.on_run_pause(reason="waiting for approval")
    infos = await m.list_checkpoints()
    assert [(i.trigger, i.label) for i in infos] == [("pause", "waiting for approval")]
    run = await m.run_info()
    assert run is not None and run.status is RunStatus.PAUSED


async def test_on_error_log_keeps_the_run_going(store: Store, twin: MakeTwin) -> None:
    policy = CheckpointPolicy(every_n_nodes=1, on_error="log")
    m = twin("r", store=store, policy=policy)
    m.m.state = {"bad": object()}
    await run_nodes(m, "a")  # the due save fails, the hook does not raise
    await m.on_node_start(node_id="b")
    await m.on_node_finish(node_id="b", output=object())  # bad output: logged, not raised
    m.m.state = None
    await m.save_checkpoint()
    cp = await m.load_checkpoint()
    assert set(cp.completed) == {"a"} and cp.interrupted == ("b",)


async def test_strict_arguments(store: Store, twin: MakeTwin) -> None:
    """Metadata is not coerced (tuples, int keys); seqs and counts are not coerced."""
    m = twin("r", store=store)
    for meta in ({"t": (1, 2)}, {1: "x"}, {"e": NodeStatus.COMPLETED}):
        with pytest.raises(SerializationError, match="metadata"):
            await m.save_checkpoint(metadata=meta)
    await m.save_checkpoint()
    for seq in ("1", True, 1.0):
        with pytest.raises(TypeError):
            await m.load_checkpoint(seq)
    with pytest.raises(ValueError):
        await m.load_checkpoint(0)
    for keep in (True, 2.5):
        with pytest.raises(TypeError):
            await m.prune(keep)
    assert [i.seq for i in await m.list_checkpoints()] == [1]


async def test_failed_run_is_recorded_even_when_its_checkpoint_fails(
    store: Store, twin: MakeTwin
) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(every_n_nodes=1))
    await m.on_run_start(graph=GRAPH)
    await run_nodes(m, "a")
    m.m.state = {"bad": object()}  # the run_failed save cannot encode this
    boom = RuntimeError("node b crashed")
    await m.on_run_end(success=False, error=boom)
    run = await m.run_info()
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error == "RuntimeError: node b crashed"
    assert [i.trigger for i in await m.list_checkpoints()] == ["every_n_nodes"]


async def test_base_deleted_by_another_manager_means_a_snapshot(
    store: Store, twin: MakeTwin
) -> None:
    m = twin("r", store=store)
    await run_nodes(m, "a", "b")
    await m.save_checkpoint()
    await twin("r", store=store).delete()  # someone else deletes the run's checkpoints
    await run_nodes(m, "c")
    info = await m.save_checkpoint()
    assert (info.seq, info.parent_seq, info.snapshot, info.nodes_written) == (2, None, True, 3)
    assert set((await m.load_checkpoint()).completed) == {"a", "b", "c"}


async def test_load_checkpoint_adopts_nothing(store: Store, twin: MakeTwin) -> None:
    """Inspection changes neither the state nor the base of the next save."""
    m = twin("r", store=store)
    await run_nodes(m, "a")
    await m.save_checkpoint(state={"v": 1})
    await run_nodes(m, "b")
    m.m.state = {"v": 2}
    for outputs in (True, False):
        cp = await m.load_checkpoint(outputs=outputs)
        assert cp.seq == 1 and m.m.state == {"v": 2}
    info = await m.save_checkpoint()
    assert (info.parent_seq, info.nodes_written) == (1, 1)  # still a delta on seq 1
    assert (await m.load_checkpoint()).state == {"v": 2}

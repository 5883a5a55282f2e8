"""The Store contract, run against every backend (memory, sqlite, postgres)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterable

import pytest

from pitstop._errors import CheckpointNotFound, StaleBaseError
from pitstop.storage.base import CheckpointRecord, NodeRow, Store

RUN = "run-1"


def record(run_id: str = RUN, **changes: object) -> CheckpointRecord:
    base = CheckpointRecord(
        run_id=run_id,
        seq=0,
        parent_seq=None,
        created_at=1_700_000_000.123456,
        trigger="node",
        label=None,
        node="a",
        schema_version=1,
        serializer="json",
        metadata=b'{"k": [1, 2]}',
        state=b'{"s": 1}',
        checksum="sha256:abc",
        size=42,
        nodes_written=1,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def node(node_id: str, output: bytes | None = b'"out"', **changes: object) -> NodeRow:
    base = NodeRow(
        node_id=node_id,
        status="completed",
        attempt=1,
        error=None,
        started_at=10.5,
        finished_at=11.25,
        deps=("x", "y"),
        serializer="json",
        output=output,
        checksum=f"sum-{node_id}",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def by_id(rows: Iterable[NodeRow]) -> dict[str, NodeRow]:
    return {r.node_id: r for r in rows}


def at(seq: int, *rows: NodeRow) -> dict[str, NodeRow]:
    """What a load should return for rows written by checkpoint ``seq``."""
    return {r.node_id: dataclasses.replace(r, seq=seq) for r in rows}


async def seqs_of(store: Store, run_id: str = RUN) -> list[int]:
    return [info.seq for info in await store.list_checkpoints(run_id)]


async def test_save_assigns_1_2_3(store: Store) -> None:
    assert await store.latest_seq(RUN) is None
    assert await store.save(record(), [node("a")], base_seq=None) == 1
    assert await store.save(record(), [], base_seq=1) == 2
    assert await store.save(record(), [node("a")], base_seq=2) == 3
    assert await store.latest_seq(RUN) == 3


async def test_seqs_are_per_run(store: Store) -> None:
    assert await store.save(record("r1"), [node("a")], base_seq=None) == 1
    assert await store.save(record("r2"), [node("a")], base_seq=None) == 1
    assert await store.save(record("r1"), [node("a")], base_seq=1) == 2
    assert await store.save(record("r2"), [node("a")], base_seq=1) == 2
    assert await store.save(record("r2"), [], base_seq=2) == 3
    assert (await store.latest_seq("r1"), await store.latest_seq("r2")) == (2, 3)
    _, rows = await store.load("r1", 1)
    assert [r.seq for r in rows] == [1]


async def test_stale_base_raises_and_writes_nothing(store: Store) -> None:
    await store.save(record(), [node("a", b"1")], base_seq=None)
    await store.save(record(), [node("a", b"2")], base_seq=1)
    with pytest.raises(StaleBaseError) as info:
        await store.save(record(), [node("a", b"stale"), node("b")], base_seq=1)
    assert (info.value.run_id, info.value.base_seq, info.value.latest_seq) == (RUN, 1, 2)
    assert await seqs_of(store) == [1, 2]
    _, rows = await store.load(RUN)
    assert by_id(rows) == at(2, node("a", b"2"))
    with pytest.raises(StaleBaseError) as empty:
        await store.save(record("fresh"), [], base_seq=4)
    assert empty.value.latest_seq is None
    assert await store.latest_seq("fresh") is None
    # base_seq=None is a full snapshot: allowed whatever the latest is.
    assert await store.save(record(), [node("a", b"3")], base_seq=None) == 3


async def test_concurrent_deltas_on_one_base_let_exactly_one_win(store: Store) -> None:
    await store.save(record(), [node("a")], base_seq=None)
    results = await asyncio.gather(
        *(store.save(record(), [node("a", bytes([i]))], base_seq=1) for i in range(8)),
        return_exceptions=True,
    )
    assert sorted(r for r in results if isinstance(r, int)) == [2]
    assert all(isinstance(r, StaleBaseError) for r in results if not isinstance(r, int))
    assert await seqs_of(store) == [1, 2]


async def test_concurrent_snapshots_get_unique_contiguous_seqs(store: Store) -> None:
    saves = (store.save(record(), [node(f"n{i}")], base_seq=None) for i in range(12))
    assert sorted(await asyncio.gather(*saves)) == list(range(1, 13))


async def test_load_latest_and_given_seq(store: Store) -> None:
    first = record(label="one", state=b"s1", created_at=1.5, parent_seq=None)
    second = record(label=None, state=b"s2", created_at=2.75, parent_seq=1, node=None)
    await store.save(first, [node("a", b"1")], base_seq=None)
    await store.save(second, [node("b", b"2")], base_seq=1)
    latest, latest_rows = await store.load(RUN)
    assert latest == dataclasses.replace(second, seq=2)
    assert by_id(latest_rows) == at(1, node("a", b"1")) | at(2, node("b", b"2"))
    one, one_rows = await store.load(RUN, 1)
    assert one == dataclasses.replace(first, seq=1)
    assert by_id(one_rows) == at(1, node("a", b"1"))


async def test_load_missing_raises(store: Store) -> None:
    with pytest.raises(CheckpointNotFound) as no_run:
        await store.load("nope")
    assert (no_run.value.run_id, no_run.value.seq) == ("nope", None)
    await store.save(record(), [], base_seq=None)
    with pytest.raises(CheckpointNotFound) as no_seq:
        await store.load(RUN, 7)
    assert (no_seq.value.run_id, no_seq.value.seq) == (RUN, 7)
    assert await store.list_checkpoints("nope") == []


async def test_incremental_rows_read_newest_at_or_before_seq(store: Store) -> None:
    a1, b1 = node("a", b"a1"), node("b", b"b1", status="running", attempt=0)
    c2, a3 = node("c", b"c2"), node("a", b"a3", attempt=2, error="boom", status="failed")
    await store.save(record(), [a1, b1], base_seq=None)
    await store.save(record(), [c2], base_seq=1)
    await store.save(record(), [a3], base_seq=2)
    expected = {
        1: at(1, a1, b1),
        2: at(1, a1, b1) | at(2, c2),
        3: at(1, b1) | at(2, c2) | at(3, a3),
    }
    for seq, rows in expected.items():
        _, loaded = await store.load(RUN, seq)
        assert by_id(loaded) == rows, seq


async def test_blobs_round_trip_exactly(store: Store) -> None:
    big = os.urandom(1 << 20)
    rows = [
        node("none", None),
        node("empty", b""),
        node("big", big),
        node("nul", b"\x00\xff\x00", deps=()),
        node("ünï/🚀", b"\xf0\x9f", error="ä\nb", started_at=None, finished_at=None),
    ]
    rec = record("rün-🚀", state=big, metadata=b"{}")
    await store.save(rec, rows, base_seq=None)
    await store.save(record("rün-🚀", state=None, metadata=b""), [], base_seq=1)
    await store.save(record("rün-🚀", state=b""), [], base_seq=2)
    loaded, loaded_rows = await store.load("rün-🚀", 1)
    assert loaded.state == big and loaded.metadata == b"{}"
    assert by_id(loaded_rows) == at(1, *rows)
    assert by_id(loaded_rows)["none"].output is None
    assert by_id(loaded_rows)["empty"].output == b""
    assert (await store.load("rün-🚀", 2))[0].state is None
    assert (await store.load("rün-🚀", 3))[0].state == b""


async def test_duplicate_node_in_one_save_keeps_the_last(store: Store) -> None:
    await store.save(record(), [node("a", b"first"), node("a", b"last")], base_seq=None)
    _, rows = await store.load(RUN)
    assert by_id(rows) == at(1, node("a", b"last"))


async def test_list_checkpoints_order_and_fields(store: Store) -> None:
    recs = [record(created_at=float(i), label=f"l{i}", size=i * 10) for i in (1, 2, 3)]
    for i, rec in enumerate(recs):
        await store.save(rec, [], base_seq=i or None)
    infos = await store.list_checkpoints(RUN)
    assert infos == [dataclasses.replace(r, seq=i + 1).info() for i, r in enumerate(recs)]
    assert infos[0].metadata == {"k": [1, 2]}


async def test_list_runs_aggregates(store: Store) -> None:
    assert await store.list_runs() == []
    for i in range(3):
        await store.save(record("b", size=5, created_at=100.0 + i), [], base_seq=None)
    await store.save(record("a", size=7, created_at=50.0), [], base_seq=None)
    await store.save(record("B", size=1, created_at=9.0), [], base_seq=None)
    await store.delete("b", 1)
    runs = await store.list_runs()
    assert [r.run_id for r in runs] == ["B", "a", "b"]
    b = runs[2]
    assert (b.checkpoints, b.first_seq, b.latest_seq, b.latest_at, b.size) == (2, 2, 3, 102.0, 10)
    assert (runs[1].checkpoints, runs[1].size, runs[1].latest_at) == (1, 7, 50.0)


async def history(store: Store) -> dict[int, dict[str, NodeRow]]:
    """Five checkpoints where nodes change at different seqs; returns every load."""
    writes = [
        [node("a", b"a1"), node("b", b"b1"), node("c", b"c1")],
        [node("a", b"a2")],
        [node("d", b"d3")],
        [node("a", b"a4"), node("c", b"c4")],
        [],
    ]
    for i, rows in enumerate(writes):
        await store.save(record(), rows, base_seq=i or None)
    return {s: by_id((await store.load(RUN, s))[1]) for s in range(1, 6)}


async def test_delete_middle_checkpoint_keeps_later_ones_whole(store: Store) -> None:
    before = await history(store)
    assert await store.delete(RUN, 2) == 1
    assert await store.delete(RUN, 1) == 1
    assert await seqs_of(store) == [3, 4, 5]
    for seq in (3, 4, 5):
        assert by_id((await store.load(RUN, seq))[1]) == before[seq]
    with pytest.raises(CheckpointNotFound):
        await store.load(RUN, 2)
    assert await store.delete(RUN, 5) == 1
    assert await store.latest_seq(RUN) == 4
    assert by_id((await store.load(RUN))[1]) == before[4]


async def test_delete_whole_run(store: Store) -> None:
    await history(store)
    await store.save(record("other"), [node("z")], base_seq=None)
    assert await store.delete(RUN) == 5
    assert await store.latest_seq(RUN) is None
    assert [r.run_id for r in await store.list_runs()] == ["other"]
    with pytest.raises(CheckpointNotFound):
        await store.load(RUN)
    # The run's node rows went too: a new seq 1 without nodes loads no node.
    assert await store.save(record(), [], base_seq=None) == 1
    assert (await store.load(RUN))[1] == []
    assert by_id((await store.load("other"))[1]) == at(1, node("z"))


async def test_delete_missing_raises(store: Store) -> None:
    with pytest.raises(CheckpointNotFound) as no_run:
        await store.delete("nope")
    assert (no_run.value.run_id, no_run.value.seq) == ("nope", None)
    await store.save(record(), [node("a")], base_seq=None)
    with pytest.raises(CheckpointNotFound) as no_seq:
        await store.delete(RUN, 2)
    assert (no_seq.value.run_id, no_seq.value.seq) == (RUN, 2)
    assert await seqs_of(store) == [1]


async def test_prune_keeps_newest_and_later_loads_identical(store: Store) -> None:
    before = await history(store)
    assert await store.prune(RUN, 2) == [1, 2, 3]
    assert await seqs_of(store) == [4, 5]
    for seq in (4, 5):
        assert by_id((await store.load(RUN, seq))[1]) == before[seq]
    assert await store.prune(RUN, 2) == []
    assert await store.prune(RUN, 10) == []
    assert await store.prune("nope", 1) == []
    assert await store.prune(RUN, 1) == [4]
    assert by_id((await store.load(RUN))[1]) == before[5]


@pytest.mark.parametrize("keep", [0, -1])
async def test_prune_keep_below_one_is_a_value_error(store: Store, keep: int) -> None:
    await store.save(record(), [], base_seq=None)
    with pytest.raises(ValueError, match="keep"):
        await store.prune(RUN, keep)
    assert await seqs_of(store) == [1]


async def test_ten_thousand_nodes(store: Store) -> None:
    rows = [node(f"n{i:05d}", str(i).encode()) for i in range(10_000)]
    await store.save(record(), rows, base_seq=None)
    await store.save(record(), [node("n00042", b"changed")], base_seq=1)
    _, first = await store.load(RUN, 1)
    assert by_id(first) == at(1, *rows)
    _, latest = await store.load(RUN)
    assert len(latest) == 10_000
    assert by_id(latest)["n00042"] == dataclasses.replace(node("n00042", b"changed"), seq=2)
    assert await store.prune(RUN, 1) == [1]
    assert by_id((await store.load(RUN))[1]) == by_id(latest)

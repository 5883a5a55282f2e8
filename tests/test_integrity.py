"""Damage stored rows with raw SQL: loads fail loudly, older checkpoints stay good."""

import dataclasses

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pitstop import (
    CheckpointManager,
    CorruptCheckpoint,
    NodeState,
    NodeStatus,
    SchemaVersionError,
    StoreError,
)
from pitstop._codec import FORMAT_VERSION, encode_node, record_checksum
from pitstop.storage.base import CheckpointRecord
from pitstop.storage.sql import open_store


async def raw(url: str, sql: str, **params: object) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def three_checkpoints(url: str) -> None:
    async with CheckpointManager("r", store=url, enabled=True) as mgr:
        await mgr.save_checkpoint(nodes=[NodeState("a"), NodeState("b")], state={"i": 1})
        await mgr.save_checkpoint(
            nodes=[NodeState("a", NodeStatus.COMPLETED, output="A")], state={"i": 2}
        )
        await mgr.save_checkpoint(
            nodes=[NodeState("b", NodeStatus.COMPLETED, output="B")], state={"i": 3}
        )


async def test_corrupt_state_blob_names_run_and_seq(store_url: str) -> None:
    await three_checkpoints(store_url)
    await raw(
        store_url,
        "UPDATE pitstop_checkpoints SET state = :s WHERE run_id = 'r' AND seq = 3",
        s=b'{"i":9}',
    )
    async with CheckpointManager("r", store=store_url) as mgr:
        with pytest.raises(CorruptCheckpoint) as err:
            await mgr.restore_checkpoint()
        assert (err.value.run_id, err.value.seq) == ("r", 3)
        assert "'r'" in str(err.value) and "seq 3" in str(err.value)
        good = await mgr.restore_checkpoint(seq=2)
        assert good.state == {"i": 2} and good.completed == {"a": "A"}


async def test_corrupt_node_row_fails_every_checkpoint_that_reads_it(store_url: str) -> None:
    await three_checkpoints(store_url)
    await raw(
        store_url,
        "UPDATE pitstop_node_states SET output = :o WHERE run_id = 'r' AND node_id = 'a' "
        "AND seq = 2",
        o=b'"X"',
    )
    async with CheckpointManager("r", store=store_url) as mgr:
        for seq in (2, 3):
            with pytest.raises(CorruptCheckpoint, match="node 'a'"):
                await mgr.restore_checkpoint(seq=seq)
        assert (await mgr.restore_checkpoint(seq=1)).pending == ("a", "b")


async def test_newer_payload_schema_is_refused(store_url: str) -> None:
    await three_checkpoints(store_url)
    await raw(store_url, "UPDATE pitstop_checkpoints SET schema_version = 99 WHERE seq = 3")
    async with CheckpointManager("r", store=store_url) as mgr:
        with pytest.raises(SchemaVersionError) as err:
            await mgr.restore_checkpoint()
        assert (err.value.found, err.value.seq) == (99, 3)
        assert (await mgr.restore_checkpoint(seq=2)).state == {"i": 2}


async def test_crash_mid_save_leaves_previous_checkpoint(store_url: str) -> None:
    # A save whose second node row violates NOT NULL fails after the checkpoint row and
    # the first node row went in: neither may remain.

    await three_checkpoints(store_url)
    async with CheckpointManager("r", store=store_url, enabled=True) as mgr:
        await mgr.restore_checkpoint()
        store = await mgr.store()
        good = encode_node(NodeState("a", NodeStatus.COMPLETED, output=1), mgr.serializer)
        bad = dataclasses.replace(good, node_id="b", status=None)  # type: ignore[arg-type]
        rows = [good, bad]

        rec = CheckpointRecord(
            run_id="r", seq=0, parent_seq=3, created_at=1.0, trigger="t", label=None,
            node=None, schema_version=FORMAT_VERSION, serializer="json", metadata=b"{}",
            state=None, checksum="", size=0, nodes_written=2,
        )  # fmt: skip
        rec = dataclasses.replace(rec, checksum=record_checksum(rec))
        with pytest.raises(StoreError):
            await store.save(rec, rows, base_seq=3)
    async with open_store(store_url) as st:
        assert [i.seq for i in await st.list_checkpoints("r")] == [1, 2, 3]
    async with CheckpointManager("r", store=store_url) as mgr:
        assert (await mgr.restore_checkpoint()).completed == {"a": "A", "b": "B"}

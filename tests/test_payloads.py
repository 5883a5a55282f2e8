"""How outputs are stored: compression, content-addressed deduplication and its
collection, encryption at rest with key rotation, readers of every format, and
large outputs encoded off the event loop. Every backend, both twins."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from twins import MakeTwin

from pitstop import (
    CheckpointManager,
    CheckpointPolicy,
    CorruptCheckpoint,
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    SqlStore,
    Store,
    SyncCheckpointManager,
)
from pitstop._errors import EncryptionKeyError
from pitstop.codecs import AesGcmKeys, Envelope
from pitstop.storage import _programs as P
from pitstop.storage._programs import Call


def blob_stats(store: Store) -> tuple[int, int]:
    return store.execute(Call(P.blob_stats, (), False))


def big(seed: int = 0, n: int = 50_000) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(n)  # 400 KB, incompressible


def tags(store: Store, run_id: str) -> dict[str, str]:
    """node id -> stored tag, as the latest checkpoint's view has it."""
    loaded = store.execute(Call(P.load, (run_id, None, False), False))
    from pitstop._codec import verify

    view = verify(loaded.record, loaded.chain, loaded.rows, None)
    return {k: r.serializer for k, r in view.items()}


async def finish(m: Any, node: str, output: Any) -> None:
    await m.on_node_start(node_id=node)
    await m.on_node_finish(node_id=node, output=output)


async def test_same_output_is_stored_once_across_checkpoints_and_runs(
    store: Store, twin: MakeTwin
) -> None:
    value = big()
    a, b = twin("a", store=store), twin("b", store=store)
    for m in (a, b):
        await finish(m, "x", value)
        await m.save_checkpoint()
        await finish(m, "y", 1)
        await m.save_checkpoint()
    assert tags(store, "a")["x"] == "typed+ref"
    n, size = blob_stats(store)
    assert n == 1 and value.nbytes <= size < value.nbytes + 200
    for run in ("a", "b"):
        m = twin(run, store=store)
        out = (await m.load_checkpoint()).completed["x"]
        assert np.array_equal(out, value) and out.dtype == value.dtype
    # Deleting one run keeps the blob the other still reads; deleting both frees it.
    await a.delete()
    assert blob_stats(store)[0] == 1
    assert np.array_equal((await b.load_checkpoint()).completed["x"], value)
    await b.delete()
    assert blob_stats(store) == (0, 0)


async def test_retention_collects_blobs_no_checkpoint_reads(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, policy=CheckpointPolicy(keep_last=1, snapshot_every=2))
    for i in range(6):
        await finish(m, "x", big(i))
        await m.save_checkpoint()
    # keep_last=1 keeps the newest and its chain (at most its snapshot and it).
    assert 1 <= blob_stats(store)[0] <= 2
    assert np.array_equal((await m.load_checkpoint()).completed["x"], big(5))
    fresh = twin("r", store=store)
    assert np.array_equal((await fresh.restore_checkpoint()).completed["x"], big(5))


async def test_resumed_manager_rewrites_a_blob_a_new_lineage_needs(
    store: Store, twin: MakeTwin
) -> None:
    m = twin("r", store=store)
    await finish(m, "x", big(1))
    await m.save_checkpoint()
    other = twin("r", store=store)
    await other.restore_checkpoint()
    await m.delete()  # the chain other resumed from is gone (and so is the blob)
    assert blob_stats(store)[0] == 0
    await finish(other, "y", 2)
    await other.save_checkpoint()  # a new lineage: a snapshot that re-stores the blob
    cp = await twin("r", store=store).load_checkpoint()
    assert np.array_equal(cp.completed["x"], big(1)) and cp.completed["y"] == 2


async def test_compression_is_recorded_per_payload(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store, envelope=Envelope(dedup_min=1 << 30))
    text = "abc" * 10_000  # compressible
    await finish(m, "small", "x" * 100)
    await finish(m, "text", text)
    await finish(m, "noise", big(n=5000))  # 40 KB of random floats: not worth it
    await m.save_checkpoint()
    assert tags(store, "r") == {"small": "typed", "text": "typed+zstd", "noise": "typed"}
    cp = await twin("r", store=store).load_checkpoint()
    assert cp.completed["text"] == text and np.array_equal(cp.completed["noise"], big(n=5000))
    listed = (await m.list_checkpoints())[-1]
    assert listed.size < len(text) // 5 + big(n=5000).nbytes + 300  # the text compressed


async def test_zlib_and_no_compression_are_read_by_a_default_reader(
    store: Store, twin: MakeTwin
) -> None:
    for run, compression, tag in (("z", "zlib", "typed+zlib"), ("n", None, "typed")):
        env = Envelope(compression=compression, dedup_min=1 << 30)  # type: ignore[arg-type]
        m = twin(run, store=store, envelope=env)
        await finish(m, "text", "abc" * 10_000)
        await m.save_checkpoint()
        assert tags(store, run)["text"] == tag
        assert (await twin(run, store=store).load_checkpoint()).completed["text"] == "abc" * 10_000


async def test_encryption_with_rotation_and_wrong_keys(store: Store, twin: MakeTwin) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    first = Envelope(encryption=AesGcmKeys({"k1": k1}))
    m = twin("r", store=store, envelope=first, metadata={"team": "ml"})
    await finish(m, "small", {"secret": "s3cr3t"})
    await finish(m, "large", big(3))
    await m.save_checkpoint(state={"cursor": 7})
    assert tags(store, "r") == {"small": "typed+aes.k1", "large": "typed+ref"}

    # Rotated: k2 encrypts new payloads; k1 still opens the old ones.
    rotated = Envelope(encryption=AesGcmKeys({"k1": k1, "k2": k2}, active="k2"))
    m2 = twin("r", store=store, envelope=rotated)
    cp = await m2.restore_checkpoint()
    assert cp.completed["small"] == {"secret": "s3cr3t"} and cp.state == {"cursor": 7}
    assert np.array_equal(cp.completed["large"], big(3))
    await finish(m2, "newer", "after rotation")
    await m2.save_checkpoint()
    assert tags(store, "r")["newer"] == "typed+aes.k2"

    # Without keys, statuses and metadata still list; payloads raise, naming the key.
    bare = twin("r", store=store)
    assert (await bare.list_checkpoints())[0].metadata == {"team": "ml"}
    shown = await bare.load_checkpoint(outputs=False)
    assert set(shown.completed) == {"small", "large", "newer"}
    with pytest.raises(EncryptionKeyError) as err:
        await bare.load_checkpoint()
    assert err.value.key_id in ("k1", "k2") and "no keys" in str(err.value)
    only_k2 = twin("r", store=store, envelope=Envelope(encryption=AesGcmKeys({"k2": k2})))
    with pytest.raises(EncryptionKeyError) as err:
        await only_k2.load_checkpoint()
    assert err.value.key_id == "k1"
    wrong = Envelope(encryption=AesGcmKeys({"k1": os.urandom(32), "k2": k2}, active="k2"))
    with pytest.raises(EncryptionKeyError, match="does not open") as err:
        await twin("r", store=store, envelope=wrong).load_checkpoint()
    assert err.value.key_id == "k1"


def test_key_validation() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        AesGcmKeys({"k": b"short"})
    with pytest.raises(ValueError, match="which one is active"):
        AesGcmKeys({"a": os.urandom(16), "b": os.urandom(16)})
    with pytest.raises(ValueError, match="key id"):
        AesGcmKeys({"a+b": os.urandom(16)})
    assert "bytes" not in repr(AesGcmKeys({"k": b"\x01" * 32}))
    with pytest.raises(ValueError, match="compression"):
        Envelope(compression="lz4")  # type: ignore[arg-type]


def test_damaged_blob_is_corrupt_not_garbage(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SqlStore(path) as store, SyncCheckpointManager("r", store=store, enabled=True) as m:
        m.on_node_start(node_id="x")
        m.on_node_finish(node_id="x", output=big(4))
        m.save_checkpoint()
    import sqlite3

    with sqlite3.connect(path) as conn:
        (data,) = conn.execute("SELECT data FROM pitstop_blobs").fetchone()
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        conn.execute("UPDATE pitstop_blobs SET data = ?", (bytes(flipped),))
    with SqlStore(path) as store, SyncCheckpointManager("r", store=store, enabled=True) as m:
        with pytest.raises(CorruptCheckpoint, match="does not match its digest"):
            m.load_checkpoint()
        assert set(m.load_checkpoint(outputs=False).completed) == {"x"}
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM pitstop_blobs")
    with (
        SqlStore(path) as store,
        SyncCheckpointManager("r", store=store, enabled=True) as m,
        pytest.raises(CorruptCheckpoint, match="blob is missing"),
    ):
        m.load_checkpoint()


async def test_every_format_is_read(store: Store, twin: MakeTwin) -> None:
    old = twin("json", store=store, serializer=JsonSerializer())
    await finish(old, "a", {"v": [1, 2]})
    await old.save_checkpoint(state={"s": 1})
    pickled = twin("pickle", store=store, serializer=PickleSerializer())
    await finish(pickled, "a", {1, 2})
    await pickled.save_checkpoint()

    reader = twin("json", store=store)  # default: typed writer, reads JSON
    cp = await reader.restore_checkpoint()
    assert cp.completed["a"] == {"v": [1, 2]} and cp.state == {"s": 1}
    await finish(reader, "b", (1, 2))  # new payloads are typed, beside the old JSON ones
    await reader.save_checkpoint()
    assert tags(store, "json") == {"a": "json", "b": "typed"}
    assert (await twin("json", store=store).load_checkpoint()).completed == {
        "a": {"v": [1, 2]}, "b": (1, 2)
    }  # fmt: skip

    with pytest.raises(SerializationError, match="PickleSerializer"):
        await twin("pickle", store=store).load_checkpoint()
    opted = twin("pickle", store=store, readers=[PickleSerializer()])
    assert (await opted.load_checkpoint()).completed["a"] == {1, 2}


async def test_large_output_is_encoded_off_the_event_loop(tmp_path: Path) -> None:
    rows = [{"id": i, "name": f"user{i}", "score": i / 3} for i in range(200_000)]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    encoders: set[str] = set()
    from pitstop._core import RunCore

    original = RunCore.encode_output

    def spy(self: RunCore, node_id: str, output: Any) -> Any:
        encoders.add(threading.current_thread().name)
        return original(self, node_id, output)

    RunCore.encode_output = spy  # type: ignore[method-assign]
    try:
        async with CheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            await m.on_node_start(node_id="big")
            await m.on_node_finish(node_id="big", output={"rows": rows})
            stop.set()
            await tick
            await m.save_checkpoint()
            assert (await m.load_checkpoint()).completed["big"]["rows"][-1] == rows[-1]
    finally:
        RunCore.encode_output = original  # type: ignore[method-assign]
    assert encoders and threading.main_thread().name not in encoders
    # The loop kept ticking while the output was encoded (no single stall of the
    # encode's whole duration; 213 ms before this change on this workload).
    assert len(gaps) > 3


def test_sync_twin_encodes_on_the_callers_thread(tmp_path: Path) -> None:
    with SyncCheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
        m.on_node_start(node_id="big")
        m.on_node_finish(node_id="big", output=list(range(20_000)))
        assert m.save_checkpoint().nodes_written == 1
        assert m.load_checkpoint().completed["big"] == list(range(20_000))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_failed_blob_collection_only_leaves_garbage(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A blob delete refused by the database (the foreign key, when a concurrent save
    refers to the blob again) rolls back to its savepoint: the rest of the
    transaction (retention included) commits, and the blob is collected later."""
    from pitstop.storage._queries import POSTGRES, SQLITE, placeholders

    dialect = SQLITE if backend == "sqlite" else POSTGRES
    target: Any = tmp_path / "p.db"
    if backend == "postgres":
        target = request.getfixturevalue("pg_db")
    with (
        SqlStore(target) as store,
        SyncCheckpointManager(
            "r", store=store, enabled=True, policy=CheckpointPolicy(keep_last=1, snapshot_every=2)
        ) as m,
    ):
        failing = placeholders(dialect.name, "DELETE FROM no_such_table WHERE ? = ? AND ? = ?")
        monkeypatch.setitem(dialect.sql, "gc_blobs", failing)
        for i in range(3):
            m.on_node_start(node_id="x")
            m.on_node_finish(node_id="x", output=big(i))
            m.save_checkpoint()
        assert [i.seq for i in m.list_checkpoints()] == [3]
        assert blob_stats(store)[0] == 3  # nothing collected, nothing lost
        assert np.array_equal(m.load_checkpoint().completed["x"], big(2))
        monkeypatch.undo()
        m.on_node_start(node_id="x")
        m.on_node_finish(node_id="x", output=big(9))
        m.save_checkpoint()
        m.prune(1)  # collects below the chain of seq 4 (snapshot 3, delta 4)
        assert blob_stats(store)[0] == 2
        assert np.array_equal(m.load_checkpoint().completed["x"], big(9))


def test_blobs_held_in_memory_stay_within_twice_what_rows_refer_to(tmp_path: Path) -> None:
    with SyncCheckpointManager("r", store=tmp_path / "p.db", enabled=True) as m:
        for i in range(10):
            m.on_node_start(node_id="x")
            m.on_node_finish(node_id="x", output=big(i))
            m.save_checkpoint()
            assert 1 <= len(m._core.blobs) <= 2  # one row refers to one blob
        assert np.array_equal(m.load_checkpoint().completed["x"], big(9))

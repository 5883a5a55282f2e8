"""Damage is caught on restore: checksums over canonical bytes (run id and seq
included) and a manifest of each checkpoint's node set. Older checkpoints stay
loadable. Runs on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import rows_of

from pitstop import CheckpointPolicy, CorruptCheckpoint, StoreError, SyncCheckpointManager
from pitstop._codec import node_checksum, verify
from pitstop._records import NodeRow
from pitstop.storage import _programs as P
from pitstop.storage._programs import Call

Exec = Callable[[str], None]


def raw_sql(target: str) -> Exec:
    def run(sql: str) -> None:
        rows_of(target, sql)

    return run


def three_saves(target: str) -> None:
    policy = CheckpointPolicy(every_n_nodes=1)
    with SyncCheckpointManager("r", store=target, enabled=True, policy=policy) as m:
        for n in "abc":
            m.on_node_start(node_id=n)
            m.on_node_finish(node_id=n, output={"n": n})


def load(target: str, seq: int | None = None) -> Any:
    with SyncCheckpointManager("r", store=target, enabled=True) as m:
        return m.load_checkpoint(seq)


DAMAGE = {
    "output bit flip": 'UPDATE pitstop_node_states SET output = CAST(\'{"n":"X"}\' AS {blob}) '
    "WHERE node_id = 'c'",
    "finished_at changed": "UPDATE pitstop_node_states SET finished_at = finished_at + 1 "
    "WHERE node_id = 'c'",
    "attempt changed": "UPDATE pitstop_node_states SET attempt = 7 WHERE node_id = 'c'",
    "row moved to another seq": "UPDATE pitstop_node_states SET seq = 2 WHERE node_id = 'c'",
    "row deleted": "DELETE FROM pitstop_node_states WHERE node_id = 'c'",
    "row of another run": "UPDATE pitstop_node_states SET run_id = 'zz' WHERE node_id = 'c'",
    "header created_at": "UPDATE pitstop_checkpoints SET created_at = created_at + 1 WHERE seq = 3",
    "header metadata": "UPDATE pitstop_checkpoints SET metadata = CAST('{\"x\":1}' AS {blob}) "
    "WHERE seq = 3",
    "manifest": "UPDATE pitstop_checkpoints SET node_count = 2 WHERE seq = 3",
    # seq 1 is a small snapshot: its blob is in its row (big ones: below).
    "snapshot blob": "UPDATE pitstop_checkpoints SET snapshot = CAST('x' AS {blob}) WHERE seq = 1",
    "snapshot deleted": "UPDATE pitstop_checkpoints SET snapshot = NULL WHERE seq = 1",
    "parent header": "UPDATE pitstop_checkpoints SET trigger = 'x' WHERE seq = 2",
    "lineage": "UPDATE pitstop_checkpoints SET parent_seq = 1 WHERE seq = 3",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_to_the_latest_is_caught_and_older_still_load(store_url: str, damage: str) -> None:
    three_saves(store_url)
    blob = "bytea" if store_url.startswith("postgresql") else "BLOB"
    raw_sql(store_url)(DAMAGE[damage].replace("{blob}", blob))
    with pytest.raises(CorruptCheckpoint) as err:
        load(store_url)
    assert (err.value.run_id, err.value.seq) == ("r", 3)
    if "snapshot" not in damage:  # seq 1 is the snapshot: everything reads it
        assert set(load(store_url, 1).completed) == {"a"}


def test_dropped_node_table_is_an_error_not_an_empty_run(store_url: str) -> None:
    three_saves(store_url)
    raw_sql(store_url)("DROP TABLE pitstop_node_states")
    with pytest.raises(StoreError):
        load(store_url)


def test_returned_seq_must_be_the_asked_one() -> None:
    with SyncCheckpointManager("r", store=_memory(), enabled=True) as m:
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        m.save_checkpoint()
        m.save_checkpoint()
        loaded = m._get_store().execute(Call(P.load, ("r", 2), False))
        verify(loaded.record, loaded.chain, loaded.rows, 2)
        with pytest.raises(CorruptCheckpoint, match="returned seq 2 for seq 1"):
            verify(loaded.record, loaded.chain, loaded.rows, 1)
        m._release_store()


def test_checksum_covers_every_field() -> None:
    row = NodeRow("a", "completed", 1, None, 1.0, 2.0, ("x",), "json", b"1")
    base = node_checksum("r", 3, row)
    assert node_checksum("r", 4, row) != base
    assert node_checksum("s", 3, row) != base
    changes: dict[str, Any] = {"node_id": "b", "status": "running", "attempt": 2, "error": "e",
                               "started_at": 1.5, "finished_at": 2.5, "deps": ("y",),
                               "serializer": "pickle", "output": b"2"}  # fmt: skip
    for name, value in changes.items():
        assert node_checksum("r", 3, row.replace(**{name: value})) != base, name
    # the same value as int or float hashes the same (a REAL column gives floats back)
    assert node_checksum("r", 3, row.replace(started_at=1)) == base


def _memory() -> Any:
    from pitstop import MemoryStore

    return MemoryStore()


def _restamp(root: Any, version: int, blob: bytes, manifest: str | None = None) -> None:
    """Make ``root`` (a one-checkpoint chain) hold ``blob`` under format ``version``'s
    digests, as a pitstop of that version wrote it (``manifest``: the blob's own digest
    unless given)."""
    from pitstop import _codec

    root.schema_version = version
    root.snapshot = blob
    root.manifest = manifest or _codec.digest(version)(blob)
    root.payload_hash = _codec.payload_hash(root.metadata, root.state, version)
    root.checksum = _codec.record_checksum(root)


@pytest.mark.parametrize(
    ("version", "beside"),
    [(4, False), (3, True), (3, False)],
    ids=["xxh3-128", "sha256 beside decode", "sha256 first"],
)
@pytest.mark.parametrize("damage", ["flipped byte", "valid hash, no rows"])
def test_snapshot_blob_damage_is_caught_however_it_is_hashed(
    monkeypatch: pytest.MonkeyPatch, damage: str, version: int, beside: bool
) -> None:
    from pitstop import _codec

    # Format 4 hashes a snapshot (xxh3-128) before decoding it; a big format 3 one
    # (sha256) is hashed on a thread while it decodes. The verdict is the same.
    monkeypatch.setattr(_codec, "HASH_BESIDE", 0 if beside else 1 << 40)
    with SyncCheckpointManager("r", store=_memory(), enabled=True) as m:
        for n in "ab":
            m.on_node_start(node_id=n)
            m.on_node_finish(node_id=n, output={"n": n})
        m.save_checkpoint()
        loaded = m._get_store().execute(Call(P.load, ("r", None), False))
        root = loaded.chain[0]
        assert root.snapshot is not None and root.schema_version == _codec.FORMAT_VERSION
        _restamp(root, version, root.snapshot)  # as a pitstop of that version wrote it
        verify(loaded.record, loaded.chain, loaded.rows, None)  # intact: it passes
        if damage == "flipped byte":
            blob = bytes([root.snapshot[0] ^ 1]) + root.snapshot[1:]
            _restamp(root, version, blob, manifest=root.manifest)
            expect = "the snapshot at seq 1 is damaged"
        else:  # bytes no writer made, under a matching hash: they do not decode
            _restamp(root, version, b"\xc1")
            expect = "unreadable snapshot"
        with pytest.raises(CorruptCheckpoint, match=expect):
            verify(loaded.record, loaded.chain, loaded.rows, None)
        m._release_store()


def test_each_checkpoint_is_verified_with_the_digest_of_its_own_format() -> None:
    import hashlib

    import xxhash

    from pitstop import _codec

    # A run begun by pitstop 3 (sha256) and carried on by pitstop 4 (xxh3-128): the
    # old snapshot and the new delta each verify under their own version's hash, and
    # the same bytes under the other version's hash are damage.
    policy = CheckpointPolicy(snapshot_every=10)
    with SyncCheckpointManager("r", store=_memory(), enabled=True, policy=policy) as m:
        m.on_run_start(graph={f"n{i}": () for i in range(80)})  # no small snapshots
        m.on_node_finish(node_id="n0", output=0)
        assert m.save_checkpoint().snapshot
        m.on_node_finish(node_id="n1", output=1)
        assert not m.save_checkpoint().snapshot
        loaded = m._get_store().execute(Call(P.load, ("r", None), False))
        root, delta = loaded.chain
        assert root.manifest == xxhash.xxh3_128_hexdigest(root.snapshot or b"")
        [row] = loaded.rows
        assert row.checksum == node_checksum("r", 2, row) == node_checksum("r", 2, row, 4)
        assert node_checksum("r", 2, row, 3) != row.checksum
        blob = root.snapshot or b""
        for version in (3, 4):
            _restamp(root, version, blob)  # as pitstop `version` wrote it: intact
            assert verify(delta, loaded.chain, loaded.rows, None)["n1"].output == row.output
            # The header says the other version (its checksum redone), the digests
            # stay: the blob no longer matches its manifest.
            root.schema_version = 7 - version
            root.checksum = _codec.record_checksum(root)
            with pytest.raises(CorruptCheckpoint, match="the snapshot at seq 1 is damaged"):
                verify(delta, loaded.chain, loaded.rows, None)
        assert _codec.digest(3)(blob) == hashlib.sha256(blob).hexdigest()
        _restamp(root, 4, blob)
        delta.schema_version = 3
        delta.checksum = _codec.record_checksum(delta)
        with pytest.raises(CorruptCheckpoint, match="metadata or state does not match"):
            verify(delta, loaded.chain, loaded.rows, None)
        delta.payload_hash = _codec.payload_hash(delta.metadata, delta.state, 3)  # fmt: skip
        delta.checksum = _codec.record_checksum(delta)
        with pytest.raises(CorruptCheckpoint, match=r"node 'n1' .* checksum mismatch"):
            verify(delta, loaded.chain, loaded.rows, None)
        m._release_store()


def test_snapshot_rows_carry_no_checksum_of_their_own() -> None:
    # Rows restored from a delta hold its checksums; the snapshot a resumed run writes
    # next stores none (its blob's sha256 covers its rows), and restores the same.
    policy = CheckpointPolicy(snapshot_every=2)
    store = _memory()
    with SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m:
        m.on_run_start(graph={"a": (), "b": ()})
        m.save_checkpoint()
        m.on_node_finish(node_id="a", output=1)
        assert not m.save_checkpoint().snapshot  # a delta: row "a" has a checksum
    with SyncCheckpointManager("r", store=store, enabled=True, policy=policy) as m:
        assert m.restore_checkpoint().nodes["a"].output == 1
        m.on_node_finish(node_id="b", output=2)
        assert m.save_checkpoint().snapshot
        loaded = m._get_store().execute(Call(P.load, ("r", None), False))
        assert loaded.rows == []  # a snapshot: no delta rows
        view = verify(loaded.record, loaded.chain, loaded.rows, None)
        assert {k: (r.status, r.checksum) for k, r in view.items()} == {
            "a": ("completed", ""),
            "b": ("completed", ""),
        }
        assert dict(m.load_checkpoint().completed) == {"a": 1, "b": 2}
    store.close()


def test_a_snapshot_row_with_an_unknown_status_is_damage() -> None:
    # Bytes no pitstop wrote, under a matching hash: a row whose status is none of
    # NodeStatus fails the decode (the field is a Literal), as unreadable.
    from pitstop import _codec

    with SyncCheckpointManager("r", store=_memory(), enabled=True) as m:
        m.on_node_finish(node_id="a", output=1)
        m.save_checkpoint()
        loaded = m._get_store().execute(Call(P.load, ("r", None), False))
        root = loaded.chain[0]
        row = NodeRow("a", "completed", 1, None, None, 1.0, (), "typed", b"\x01")
        blob = _codec.snapshot_blob([row]).replace(b"completed", b"completex")
        _restamp(root, root.schema_version, blob)
        with pytest.raises(CorruptCheckpoint, match="unreadable snapshot"):
            verify(loaded.record, loaded.chain, loaded.rows, None)
        m._release_store()


def test_decoded_snapshot_rows_share_their_status_strings() -> None:
    # A restore of 10,000 nodes allocates no status string per row: each row holds
    # the one constant of its status.
    from pitstop._records import COMPLETED, PENDING

    with SyncCheckpointManager("r", store=_memory(), enabled=True) as m:
        m.on_run_start(graph={f"n{i}": () for i in range(50)})
        for i in range(25):
            m.on_node_finish(node_id=f"n{i}", output=i)
        assert m.save_checkpoint().snapshot
        loaded = m._get_store().execute(Call(P.load, ("r", None), False))
        view = verify(loaded.record, loaded.chain, loaded.rows, None)
        assert [r.status for r in view.values()].count(COMPLETED) == 25
        assert all(r.status is COMPLETED or r.status is PENDING for r in view.values())
        m._release_store()


def test_a_small_snapshot_is_stored_in_its_row_a_big_one_in_its_table(store_url: str) -> None:
    from pitstop.storage._queries import SNAPSHOT_IN_ROW

    # (Many nodes: one big output would be stored apart, as a blob its row refers to.)
    outputs = {
        "small": {"a": "x" * 100},
        "big": {f"n{i:02}": f"{i}" * 500 for i in range(SNAPSHOT_IN_ROW // 500)},
    }
    for run_id, out in outputs.items():
        with SyncCheckpointManager(run_id, store=store_url, enabled=True) as m:
            for node, value in out.items():
                m.on_node_finish(node_id=node, output=value)
            assert m.save_checkpoint().snapshot
    placed = rows_of(
        store_url,
        "SELECT c.run_id, length(c.snapshot), length(s.nodes) FROM pitstop_checkpoints c "
        "LEFT JOIN pitstop_snapshots s ON s.run_id = c.run_id AND s.seq = c.seq ORDER BY c.run_id",
    )
    (big, in_table), (small, in_row) = [(r[0], r[1:]) for r in placed]
    assert (small, big) == ("small", "big")
    assert in_row[0] is not None and in_row[0] < SNAPSHOT_IN_ROW and in_row[1] is None
    assert in_table[0] is None and in_table[1] >= SNAPSHOT_IN_ROW
    for run_id, out in outputs.items():
        assert load_run(store_url, run_id).completed == out


def load_run(target: str, run_id: str) -> Any:
    with SyncCheckpointManager(run_id, store=target, enabled=True) as m:
        return m.load_checkpoint()


@pytest.mark.parametrize("damage", [None, "flipped byte", "truncated", "deleted"])
def test_a_big_snapshot_is_read_whole_and_verified(
    store_url: str, damage: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From BLOB_INLINE bytes on, SQLite reads a snapshot by itself with incremental
    # blob I/O (PostgreSQL selects it as ever): the bytes are the same, and damage
    # to them is caught the same.
    from pitstop.storage import _backends
    from pitstop.storage._queries import BLOB_INLINE

    blob_reads: list[object] = []
    real_drive = _backends.drive

    def drive(cur: Any, dialect: Any, program: Any, *args: Any, **kwargs: Any) -> Any:
        def spied() -> Any:
            result = None
            while True:
                try:
                    stmt = program.send(result)
                except StopIteration as stop:
                    return stop.value
                if getattr(stmt, "mode", None) == "blob":
                    blob_reads.append(stmt.params[0])
                result = yield stmt

        return real_drive(cur, dialect, spied(), *args, **kwargs)

    monkeypatch.setattr(_backends, "drive", drive)
    outputs = {f"n{i:03}": "x" * 1000 + str(i) for i in range(100)}  # ~100 KB in all
    with SyncCheckpointManager("r", store=store_url, enabled=True) as m:
        for node, out in outputs.items():
            m.on_node_finish(node_id=node, output=out)
        info = m.save_checkpoint()
    assert info.snapshot and info.size > BLOB_INLINE
    if damage is not None:
        pg = store_url.startswith("postgresql")
        new = {
            "flipped byte": "overlay(nodes placing '\\x00'::bytea from 5000 for 1)"
            if pg
            else "CAST(substr(nodes, 1, 4999) || x'00' || substr(nodes, 5001) AS BLOB)",
            "truncated": "substring(nodes from 1 for 70000)" if pg else "substr(nodes, 1, 70000)",
            "deleted": None,
        }[damage]
        raw_sql(store_url)(
            "DELETE FROM pitstop_snapshots" if new is None
            else f"UPDATE pitstop_snapshots SET nodes = {new}"
        )  # fmt: skip
        with pytest.raises(CorruptCheckpoint, match="snapshot at seq 1 is damaged"):
            load(store_url)
    else:
        assert load(store_url).completed == outputs
    # SQLite read the blob by rowid (when it was there); PostgreSQL never does.
    read = not store_url.startswith("postgresql") and damage != "deleted"
    assert len(blob_reads) == (1 if read else 0)


def test_blob_reads_are_sqlite_only() -> None:
    from pitstop.storage._backends import drive
    from pitstop.storage._programs import Stmt
    from pitstop.storage._queries import POSTGRES

    def program() -> Any:
        yield Stmt("snapshot_blob", (1,), "blob")

    with pytest.raises(StoreError, match="blob reads are SQLite's"):
        drive(None, POSTGRES, program())


def test_the_stored_status_literal_names_every_node_status() -> None:
    # StatusText restates NodeStatus's values for msgspec: the two must not drift.
    from typing import get_args

    from pitstop import NodeStatus
    from pitstop._records import COMPLETED, FAILED, PENDING, RUNNING, StatusText

    assert set(get_args(StatusText)) == {s.value for s in NodeStatus}
    order = (NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.COMPLETED, NodeStatus.FAILED)
    assert tuple(s.value for s in order) == (PENDING, RUNNING, COMPLETED, FAILED)


@pytest.mark.small_snapshots
def test_keep_last_collects_a_small_runs_garbage(store_url: str) -> None:
    # A small run writes a snapshot at every save, so the periodic snapshot that
    # collects garbage never came due: retired checkpoints piled up (2,000 rows
    # after 2,000 saves) and every save's retention read through them.
    policy = CheckpointPolicy(keep_last=2, snapshot_every=4)
    stored = []
    with SyncCheckpointManager("r", store=store_url, enabled=True, policy=policy) as m:
        for i in range(30):
            m.on_node_finish(node_id="a", output=i)
            assert m.save_checkpoint().snapshot
            ((n,),) = rows_of(store_url, "SELECT COUNT(*) FROM pitstop_checkpoints")
            stored.append(n)
        assert [c.seq for c in m.list_checkpoints()] == [29, 30]
    assert max(stored) <= 2 + 4 and stored[-1] < 30, stored
    assert load_run(store_url, "r").completed == {"a": 29}


@pytest.mark.small_snapshots
def test_keep_last_collects_when_every_worker_restores_and_saves_a_little(
    store_url: str,
) -> None:
    # A restore does not know when retention last collected; counting from zero
    # again, a worker that restores and saves fewer than snapshot_every times, over
    # and over, never collected.
    policy = CheckpointPolicy(keep_last=2, snapshot_every=4)
    stored = []
    for i in range(25):
        with SyncCheckpointManager("r", store=store_url, enabled=True, policy=policy) as m:
            if i:
                assert m.restore_checkpoint().completed == {"a": i - 1}
            m.on_node_finish(node_id="a", output=i)
            m.save_checkpoint()
        ((n,),) = rows_of(store_url, "SELECT COUNT(*) FROM pitstop_checkpoints")
        stored.append(n)
    assert max(stored) <= 2 + 4, stored
    assert load_run(store_url, "r").completed == {"a": 24}

"""Checksums over canonical bytes, node-set manifests, and decode + verify on load.

Kept apart from the stores so every backend verifies the same way. A node
row's checksum covers its run id and seq, so a row moved to another
checkpoint fails; a checkpoint's manifest is the sum of the checksums of every
row it reads, so a missing, extra or moved row fails too.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import CorruptCheckpoint, SchemaVersionError, SerializationError
from ._records import CheckpointRecord, NodeRow
from ._serde import Serializer
from ._types import Checkpoint, NodeState, NodeStatus, Undecoded

FORMAT_VERSION = 2
"""Version of the checkpoint layout (checksums, manifest, lineage); written into every row."""

_MOD = 1 << 256
_STATUSES = {s.value: s for s in NodeStatus}


def _canon(parts: Iterable[object]) -> bytes:
    """Canonical bytes: each part typed and length-prefixed, so no two values collide."""
    out = bytearray()
    for p in parts:
        if p is None:
            b = b"n"
        elif isinstance(p, str):
            b = b"s" + p.encode("utf-8")
        elif isinstance(p, bytes):
            b = b"b" + p
        elif isinstance(p, float):
            b = b"f" + struct.pack(">d", p)
        elif isinstance(p, int):  # bool never reaches here: rows hold ints
            b = b"i" + str(p).encode()
        else:
            raise TypeError(f"cannot checksum {type(p).__name__}")
        out += len(b).to_bytes(8, "big")
        out += b
    return bytes(out)


def node_checksum(run_id: str, seq: int, r: NodeRow) -> str:
    """sha256 over a node row's canonical bytes, its run id and seq."""
    deps = "\x00".join(r.deps)
    parts = (run_id, seq, r.node_id, r.status, r.attempt, r.error, _f(r.started_at),
             _f(r.finished_at), deps, r.serializer, r.output)  # fmt: skip
    return hashlib.sha256(_canon(parts)).hexdigest()


def record_checksum(r: CheckpointRecord) -> str:
    """sha256 over every column of a checkpoint row but the checksum itself."""
    parts = (r.run_id, r.seq, r.parent_seq, r.root_seq, _f(r.created_at), r.trigger, r.label,
             r.node, r.schema_version, r.serializer, r.metadata, r.state, r.size,
             r.nodes_written, r.node_count, r.manifest)  # fmt: skip
    return hashlib.sha256(_canon(parts)).hexdigest()


def _f(value: float | None) -> float | None:
    # A REAL column gives back 1700000000.0 for 1700000000: hash the float either way.
    return None if value is None else float(value)


def manifest_term(checksum: str) -> int:
    return int(checksum, 16)


def manifest_hex(total: int) -> str:
    return format(total % _MOD, "064x")


def pick(tag: str, serializers: Mapping[str, Serializer], run_id: str, seq: int) -> Serializer:
    found = serializers.get(tag)
    if found is None:
        hint = " (pass serializer=PickleSerializer() to opt in)" if tag == "pickle" else ""
        raise SerializationError(
            f"run {run_id!r} seq {seq} was written with serializer {tag!r}, "
            f"which this reader does not load{hint}",
            tag=tag,
        )
    return found


def verify(record: CheckpointRecord, rows: list[NodeRow], asked: int | None) -> None:
    """Check the header, every row and the node set against the manifest.

    Raises:
        SchemaVersionError: written by a newer pitstop.
        CorruptCheckpoint: anything does not match.
    """
    run_id, seq = record.run_id, record.seq
    if asked is not None and seq != asked:
        raise CorruptCheckpoint(run_id, asked, f"the store returned seq {seq} for seq {asked}")
    record.info()  # damaged header columns raise CorruptCheckpoint before anything else
    if record.schema_version > FORMAT_VERSION:
        raise SchemaVersionError(record.schema_version, FORMAT_VERSION, run_id=run_id, seq=seq)
    if record_checksum(record) != record.checksum:
        raise CorruptCheckpoint(run_id, seq, "checkpoint checksum mismatch")
    total = 0
    for row in rows:
        try:
            ok = node_checksum(run_id, row.seq, row) == row.checksum
            total += int(row.checksum, 16)
        except (TypeError, ValueError) as exc:  # a column holds what no writer stores
            ok, detail = False, f": {exc}"
        else:
            detail = ""
        if not ok:
            raise CorruptCheckpoint(
                run_id,
                seq,
                f"node {row.node_id!r} (written at seq {row.seq}) checksum mismatch{detail}",
            )
    if len(rows) != record.node_count or manifest_hex(total) != record.manifest:
        raise CorruptCheckpoint(
            run_id,
            seq,
            f"node rows do not match the manifest ({len(rows)} found, {record.node_count} "
            "expected): rows are missing, moved or extra",
        )


def decode_checkpoint(
    record: CheckpointRecord,
    rows: list[NodeRow],
    serializers: Mapping[str, Serializer],
    *,
    asked: int | None = None,
    outputs: bool = True,
) -> Checkpoint:
    """Verify, then decode into a Checkpoint (outputs as ``Undecoded`` when not ``outputs``)."""
    verify(record, rows, asked)
    run_id, seq = record.run_id, record.seq
    info = record.info()
    nodes: dict[str, NodeState] = {}
    for row in sorted(rows, key=lambda r: r.node_id):
        status = _STATUSES.get(row.status)
        if status is None:
            raise CorruptCheckpoint(run_id, seq, f"unknown node status {row.status!r}")
        output: Any = None
        if row.output is not None:
            if outputs:
                output = _loads(pick(row.serializer, serializers, run_id, seq), row, seq)
            else:
                output = Undecoded(row.serializer, len(row.output))
        nodes[row.node_id] = NodeState(row.node_id, status, output, row.attempt, row.error,
                                       row.started_at, row.finished_at, row.deps)  # fmt: skip
    state = None
    if record.state is not None and outputs:
        state = pick(record.serializer, serializers, run_id, seq).loads(record.state)
    elif record.state is not None:
        state = Undecoded(record.serializer, len(record.state))
    return Checkpoint(info=info, nodes=nodes, state=state)


def _loads(ser: Serializer, row: NodeRow, seq: int) -> Any:
    try:
        return ser.loads(row.output or b"")
    except SerializationError as exc:
        raise SerializationError(
            f"output (written at seq {row.seq}, read for seq {seq}): {exc.message}",
            tag=exc.tag,
            node_id=row.node_id,
        ) from exc

"""Encode bookkeeping into stored rows and decode + verify them on load.

Kept apart from the stores so every backend verifies checksums, schema
versions and serializer tags the same way.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from ._errors import CorruptCheckpoint, SchemaVersionError, SerializationError
from ._serde import Serializer, checksum
from ._types import Checkpoint, NodeState, NodeStatus
from .storage.base import CheckpointRecord, NodeRow

FORMAT_VERSION = 1
"""Version of the checkpoint payload layout written into every checkpoint row."""

_NONE = b"\x00"


def _opt(value: object) -> bytes:
    return _NONE if value is None else b"\x01" + repr(value).encode()


def node_checksum(r: NodeRow) -> str:
    """sha256 over every stored field of a node row but its seq and checksum."""
    return checksum(
        (
            r.node_id.encode(),
            r.status.encode(),
            str(r.attempt).encode(),
            _opt(r.error),
            _opt(r.started_at),
            _opt(r.finished_at),
            "\x1f".join(r.deps).encode(),
            r.serializer.encode(),
            _NONE if r.output is None else b"\x01" + r.output,
        )
    )


def record_checksum(r: CheckpointRecord) -> str:
    return checksum(
        (
            r.run_id.encode(),
            _opt(r.parent_seq),
            repr(r.created_at).encode(),
            r.trigger.encode(),
            _opt(r.label),
            _opt(r.node),
            str(r.schema_version).encode(),
            r.serializer.encode(),
            r.metadata,
            _NONE if r.state is None else b"\x01" + r.state,
            str(r.nodes_written).encode(),
        )
    )


def encode_node(state: NodeState, serializer: Serializer) -> NodeRow:
    """Serialize one node's state; SerializationError names the node."""
    output: bytes | None = None
    if state.status is NodeStatus.COMPLETED or state.output is not None:
        try:
            output = serializer.dumps(state.output)
        except SerializationError as exc:
            raise SerializationError(
                f"output: {exc.message}", tag=exc.tag, node_id=state.node_id
            ) from exc
    row = NodeRow(
        node_id=state.node_id,
        status=str(state.status),
        attempt=state.attempt,
        error=state.error,
        started_at=state.started_at,
        finished_at=state.finished_at,
        deps=state.deps,
        serializer=serializer.tag,
        output=output,
        checksum="",
    )
    return dataclasses.replace(row, checksum=node_checksum(row))


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(metadata), sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"metadata must be plain JSON: {exc}", tag="json") from exc


def _pick(tag: str, serializers: Mapping[str, Serializer], run_id: str, seq: int) -> Serializer:
    found = serializers.get(tag)
    if found is None:
        hint = " (pass serializer=PickleSerializer() to opt in)" if tag == "pickle" else ""
        raise SerializationError(
            f"run {run_id!r} seq {seq} was written with serializer {tag!r}, "
            f"which this manager does not load{hint}",
            tag=tag,
        )
    return found


def decode_checkpoint(
    record: CheckpointRecord, rows: list[NodeRow], serializers: Mapping[str, Serializer]
) -> Checkpoint:
    """Verify schema version and checksums, then decode into a Checkpoint."""
    run_id, seq = record.run_id, record.seq
    if record.schema_version > FORMAT_VERSION:
        raise SchemaVersionError(record.schema_version, FORMAT_VERSION, run_id=run_id, seq=seq)
    if record_checksum(record) != record.checksum:
        raise CorruptCheckpoint(run_id, seq, "checkpoint checksum mismatch")
    nodes: dict[str, NodeState] = {}
    for row in sorted(rows, key=lambda r: r.node_id):
        if node_checksum(row) != row.checksum:
            raise CorruptCheckpoint(
                run_id, seq, f"node {row.node_id!r} (written at seq {row.seq}) checksum mismatch"
            )
        output = None
        if row.output is not None:
            output = _pick(row.serializer, serializers, run_id, seq).loads(row.output)
        try:
            status = NodeStatus(row.status)
        except ValueError as exc:
            raise CorruptCheckpoint(run_id, seq, f"unknown node status {row.status!r}") from exc
        nodes[row.node_id] = NodeState(
            node_id=row.node_id,
            status=status,
            output=output,
            attempt=row.attempt,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
            deps=tuple(row.deps),
        )
    state = None
    if record.state is not None:
        state = _pick(record.serializer, serializers, run_id, seq).loads(record.state)
    return Checkpoint(info=record.info(), nodes=nodes, state=state)

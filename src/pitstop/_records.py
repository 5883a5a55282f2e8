"""Rows as stored: what the core encodes and the stores move, never user values."""

from __future__ import annotations

import math
from typing import Any, Literal, TypeAlias

import msgspec

from ._errors import CorruptCheckpoint
from ._serde import decode_metadata
from ._types import CheckpointInfo

_MAX_TIME = 253_402_300_800.0
"""Seconds since the epoch of year 10000: a stored time past it is damage, not a date."""


StatusText: TypeAlias = Literal["pending", "running", "completed", "failed"]
"""A ``NodeStatus`` value as stored. Typed as a Literal so that decoding a snapshot
gives every row the one shared string of its status instead of a new one per row
(10,000 strings, 0.6 MB, fewer to allocate at 10,000 nodes); an unknown status
fails the decode like any other damage."""
PENDING: StatusText = "pending"
RUNNING: StatusText = "running"
COMPLETED: StatusText = "completed"
FAILED: StatusText = "failed"


class NodeRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One node's state as stored: written only by checkpoints where it changed.

    Hooks build one per node event and a restore one per node, so it must be
    cheap: a msgspec Struct is built in a fifth of a named tuple's time (and a
    frozen dataclass's), replaced in a ninth, and with ``gc=False`` (its fields
    are never containers that could form a cycle) the 10,000 rows of a restore
    are no work for the cyclic garbage collector. ``array_like``: encoded as the
    msgpack array a snapshot blob has always held.
    """

    node_id: str
    status: StatusText
    attempt: int
    error: str | None
    started_at: float | None
    finished_at: float | None
    deps: tuple[str, ...]
    serializer: str
    output: bytes | None
    checksum: str = ""
    """sha256 (hex) over the row's canonical bytes, its run id and seq included."""
    seq: int = 0
    """Seq of the checkpoint that wrote this row."""
    fingerprint: str | None = None
    """What a completed node's output was computed from (code, inputs), if known."""

    def replace(self, **changes: Any) -> NodeRow:
        """A copy with ``changes`` applied."""
        return msgspec.structs.replace(self, **changes)


class CheckpointRecord(msgspec.Struct, gc=False):
    """One checkpoint row as stored (its node rows travel beside it).

    Treated as immutable once built: ``finalize`` sets the checksum before anyone
    else sees the record, and ``info()`` caches what it checked. A msgspec Struct,
    not a frozen dataclass: a save builds one, and a frozen dataclass's 20 fields
    cost ~2 us to set (0.1 us here). Nothing it holds refers back to it (the
    cached info's metadata is freshly decoded JSON), so it is left out of the
    cyclic collector. Not hashable, and ``checked`` takes part in ``==``: no
    code compares or hashes records.
    """

    run_id: str
    seq: int
    parent_seq: int | None
    root_seq: int
    """Seq of the snapshot the chain of deltas starts from (== seq for a snapshot)."""
    created_at: float
    trigger: str
    label: str | None
    node: str | None
    schema_version: int
    serializer: str
    metadata: bytes
    state: bytes | None
    size: int
    nodes_written: int
    node_count: int
    manifest: str
    """A snapshot: sha256 of its snapshot blob. A delta: the sum (mod 2**256) of the
    checksums of the node rows it wrote."""
    checksum: str = ""
    payload_hash: str = ""
    """sha256 over the metadata and state blobs, so a header verifies without them."""
    snapshot: bytes | None = None
    """A snapshot's blob: every node row, encoded together (None for a delta)."""
    checked: CheckpointInfo | None = None
    """``info()`` once checked (a restore asks for it when verifying and again after)."""

    def info(self, metadata: dict[str, Any] | None = None) -> CheckpointInfo:
        """The header as users see it.

        ``metadata``: the decoded metadata of a record this process just wrote
        (then nothing is re-checked).

        Raises:
            CorruptCheckpoint: a header column holds something no writer stores.
        """
        meta = metadata
        if meta is None:
            if self.checked is not None:
                return self.checked
            try:
                meta = decode_metadata(self.metadata)
                _check_header(self)
            except (ValueError, TypeError) as exc:
                raise CorruptCheckpoint(self.run_id, self.seq, f"damaged header: {exc}") from exc
        info = CheckpointInfo(self.run_id, self.seq, self.parent_seq, self.created_at,
                              self.trigger, self.label, self.node, self.schema_version,
                              self.serializer, self.checksum, self.size, self.nodes_written,
                              meta, self.root_seq, self.node_count)  # fmt: skip
        if metadata is None:  # set once, the same value every time
            self.checked = info
        return info


def _check_header(r: CheckpointRecord) -> None:
    t = r.created_at
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"created_at is {type(t).__name__}, not a number")
    if not (math.isfinite(t) and 0 <= t < _MAX_TIME):
        raise ValueError(f"created_at {t!r} is not a time")
    for name in ("seq", "root_seq", "schema_version", "size", "nodes_written", "node_count"):
        value = getattr(r, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"{name} is {value!r}, not a count")
    for name in ("trigger", "serializer", "checksum", "manifest", "payload_hash"):
        if not isinstance(getattr(r, name), str):
            raise TypeError(f"{name} is not text")
    for name in ("label", "node"):
        if not isinstance(getattr(r, name), (str, type(None))):
            raise TypeError(f"{name} is not text")
    if not isinstance(r.parent_seq, (int, type(None))) or isinstance(r.parent_seq, bool):
        raise TypeError("parent_seq is not a seq")


def deps_text(deps: tuple[str, ...]) -> str:
    """The deps column: a compact JSON list (msgspec: 20x json.dumps's speed)."""
    return _DEPS_JSON(deps).decode()


def deps_from_text(node_id: str, text: object) -> tuple[str, ...]:
    """Decode a deps column; ValueError when it is damaged."""
    try:
        return _DEPS(text)  # type: ignore[arg-type]
    except (TypeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"node {node_id!r} has unreadable deps: {exc}") from exc


_DEPS = msgspec.json.Decoder(tuple[str, ...]).decode
_DEPS_JSON = msgspec.json.Encoder().encode

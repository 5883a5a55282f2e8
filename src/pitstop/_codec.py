"""Checksums over canonical bytes, snapshot blobs, and decode + verify on load.

Kept apart from the stores so every backend verifies the same way.

A checkpoint is either a **snapshot** (every node row, encoded together in one
blob whose digest is its ``manifest``) or a **delta** (node rows of its own,
each with a checksum over its canonical bytes, run id and seq; its
``manifest`` is the sum of those checksums and ``nodes_written`` their count).
Restoring seq S reads the chain S -> parent -> ... -> root snapshot and
verifies every checkpoint on it: each header's checksum (lineage included),
the snapshot blob, and each delta's rows against its manifest. A damaged,
missing, extra or moved row therefore fails, and so does a broken chain.

Every digest of a checkpoint is taken with the hash of its own format version
(``schema_version``): xxh3-128 from version 4 on, sha256 before (``digest``).
"""

from __future__ import annotations

import hashlib
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import msgspec
import xxhash

from ._errors import CorruptCheckpoint, SchemaVersionError, SerializationError
from ._records import CheckpointRecord, NodeRow
from ._serde import Serializer
from ._types import Checkpoint, NodeMap, NodeStatus, Undecoded
from .codecs._envelope import Envelope, is_ref, parse

FORMAT_VERSION = 4
"""Version of the checkpoint layout (checksums, snapshots, lineage); in every row.
4: digests are xxh3-128 (sha256 before)."""

XXH3_FROM = 4
"""The first format version whose digests are xxh3-128.

The checksums detect damage (a torn or flipped page, a row edited, moved or lost),
not forgery: they carry no key, so whoever can rewrite a row can rewrite its
checksum with any hash. For that job a 128-bit hash misses a random change with
probability 2**-128, like sha256 in practice, at ~30x its speed: a snapshot of
10,000 nodes (2.3 MB) hashes in ~0.04 ms against ~1.3 ms, so a restore no longer
needs a thread to hide the hash. Content addresses (blob digests, which deduplicate
outputs) stay sha256 or an HMAC: there a collision would be a wrong value."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_XXH3: Callable[[bytes], str] = xxhash.xxh3_128_hexdigest


def digest(version: int) -> Callable[[bytes], str]:
    """The hash (bytes -> hex) of checkpoints written with format ``version``."""
    return _XXH3 if version >= XXH3_FROM else _sha256


_MOD = 1 << 256
_STATUSES = {s.value: s for s in NodeStatus}
_DONE = NodeStatus.COMPLETED.value
_ENCODE = msgspec.msgpack.Encoder()
_DECODE_ROWS = msgspec.msgpack.Decoder(list[NodeRow])


def _canon(parts: tuple[object, ...]) -> bytes:
    """Canonical bytes of a tuple of str / int / float / bytes / None: its msgpack
    encoding, which is typed and self-delimiting (so no two values collide) and,
    with floats always written as doubles, the same for the same values."""
    return _ENCODE.encode(parts)


def node_checksum(run_id: str, seq: int, r: NodeRow, version: int = FORMAT_VERSION) -> str:
    """The digest of a node row's canonical bytes, its run id and seq (``version``: the
    format of the checkpoint that wrote it)."""
    deps = "\x00".join(r.deps)
    parts: tuple[object, ...] = (run_id, seq, r.node_id, r.status, r.attempt, r.error,
                                 _f(r.started_at), _f(r.finished_at), deps, r.serializer,
                                 r.output)  # fmt: skip
    if r.fingerprint is not None:  # rows without one hash as format 2 wrote them
        parts = (*parts, r.fingerprint)
    return digest(version)(_canon(parts))


def payload_hash(metadata: bytes, state: bytes | None, version: int = FORMAT_VERSION) -> str:
    return digest(version)(_canon((metadata, state)))


def record_checksum(r: CheckpointRecord) -> str:
    """The digest, by the record's format version, of every header column (lineage and
    manifest included) and the payload hash."""
    parts = (r.run_id, r.seq, r.parent_seq, r.root_seq, _f(r.created_at), r.trigger, r.label,
             r.node, r.schema_version, r.serializer, r.size, r.nodes_written, r.node_count,
             r.manifest, r.payload_hash)  # fmt: skip
    return digest(r.schema_version)(_canon(parts))


def _f(value: float | None) -> float | None:
    # A REAL column gives back 1700000000.0 for 1700000000: hash the float either way.
    return None if value is None else float(value)


def manifest_term(checksum: str) -> int:
    return int(checksum, 16)


def manifest_hex(total: int) -> str:
    return format(total % _MOD, "064x")


def snapshot_blob(rows: Sequence[NodeRow]) -> bytes:
    """Every node row of a snapshot in one blob (msgpack arrays; no code runs on load)."""
    return _ENCODE.encode(rows)


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


def _header(r: CheckpointRecord, top: int) -> None:
    if r.seq == top:
        r.info()  # damaged header columns raise CorruptCheckpoint before anything else
    if not isinstance(r.schema_version, int):
        raise CorruptCheckpoint(r.run_id, top, f"seq {r.seq} has a damaged header")
    if r.schema_version > FORMAT_VERSION:
        raise SchemaVersionError(r.schema_version, FORMAT_VERSION, run_id=r.run_id, seq=r.seq)
    try:
        ok = record_checksum(r) == r.checksum
    except (TypeError, ValueError, OverflowError) as exc:
        what = "damaged header" if r.seq == top else f"seq {r.seq} on its chain: damaged header"
        raise CorruptCheckpoint(r.run_id, top, f"{what}: {exc}") from exc
    if not ok:
        what = "checkpoint" if r.seq == top else f"seq {r.seq} on its chain:"
        raise CorruptCheckpoint(r.run_id, top, f"{what} checksum mismatch")


HASH_BESIDE = 1 << 20
"""A sha256 snapshot (format version 3 and older) from this size on is hashed on a
thread of its own while it is decoded (hashlib lets go of the GIL): at 10,000 nodes a
verify took ~0.8-0.9 ms less (the hash alone ~1.3 ms), measured in one process. An
xxh3-128 snapshot is hashed first: that costs less than starting the thread."""


class _Hasher(threading.Thread):
    def __init__(self, data: bytes) -> None:
        super().__init__(name="pitstop-sha256", daemon=True)
        self.data, self.hexdigest = data, ""

    def run(self) -> None:
        self.hexdigest = _sha256(self.data)


def _decode_snapshot(
    blob: bytes, manifest: str, version: int
) -> list[NodeRow] | msgspec.DecodeError | None:
    """A snapshot's rows; None when the blob does not match its manifest (checked
    before anything decoded is used), the decode error when it matches but does not
    decode."""
    if version >= XXH3_FROM or len(blob) < HASH_BESIDE:
        return _rows_of(blob) if digest(version)(blob) == manifest else None
    hasher = _Hasher(blob)
    hasher.start()
    try:
        rows = _rows_of(blob)
    finally:
        hasher.join()
    return rows if hasher.hexdigest == manifest else None


def _rows_of(blob: bytes) -> list[NodeRow] | msgspec.DecodeError:
    try:
        return _DECODE_ROWS.decode(blob)
    except msgspec.DecodeError as exc:
        return exc


def verify(
    target: CheckpointRecord,
    chain: Sequence[CheckpointRecord],
    rows: Sequence[NodeRow],
    asked: int | None,
) -> dict[str, NodeRow]:
    """Verify a checkpoint and everything its chain reads; return its node rows by id,
    in node id order.

    ``chain`` runs from the root snapshot (with its blob) to ``target``;
    ``rows`` are the delta rows of the chain.

    Raises:
        SchemaVersionError: written by a newer pitstop.
        CorruptCheckpoint: anything does not match.
    """
    run_id, top = target.run_id, target.seq
    if asked is not None and top != asked:
        raise CorruptCheckpoint(run_id, asked, f"the store returned seq {top} for seq {asked}")
    for r in chain:
        _header(r, top)
    if payload_hash(target.metadata, target.state, target.schema_version) != target.payload_hash:
        raise CorruptCheckpoint(run_id, top, "metadata or state does not match its hash")
    root = chain[0]
    blob = root.snapshot
    if blob is None:
        raise CorruptCheckpoint(run_id, top, f"the snapshot at seq {root.seq} is damaged")
    snap = _decode_snapshot(blob, root.manifest, root.schema_version)
    if snap is None:
        raise CorruptCheckpoint(run_id, top, f"the snapshot at seq {root.seq} is damaged")
    if isinstance(snap, msgspec.DecodeError):  # a valid hash over bytes no writer made
        raise CorruptCheckpoint(run_id, top, f"unreadable snapshot: {snap}") from snap
    view = dict(zip(map(_ID, snap), snap, strict=True))
    if len(view) != root.nodes_written:  # rows missing, or two of one node
        raise CorruptCheckpoint(run_id, top, f"the snapshot at seq {root.seq} lost rows")
    # Writers store a snapshot's rows by node id: the view keeps that order (and
    # sorts only when it was not, or a delta added a node).
    # (Its keys are unique: sorted equal means strictly increasing. Sorting sorted
    # str keys is one C pass, twice as fast as comparing neighbours through map.)
    keys = list(view)
    ordered = keys == sorted(keys)
    by_seq: dict[int, list[NodeRow]] = {}
    for row in rows:
        by_seq.setdefault(row.seq, []).append(row)
    for r in chain[1:]:
        mine = by_seq.pop(r.seq, [])
        total = 0
        for row in mine:
            try:
                ok = node_checksum(run_id, r.seq, row, r.schema_version) == row.checksum
                total += int(row.checksum, 16)
            except (TypeError, ValueError):  # a column holds what no writer stores
                ok = False
            if not ok:
                raise CorruptCheckpoint(
                    run_id, top, f"node {row.node_id!r} (written at seq {r.seq}) checksum mismatch"
                )
            if ordered and row.node_id not in view:
                ordered = False
            view[row.node_id] = row
        if len(mine) != r.nodes_written or manifest_hex(total) != r.manifest:
            raise CorruptCheckpoint(
                run_id,
                top,
                f"seq {r.seq} wrote {r.nodes_written} node rows, {len(mine)} found: rows are "
                "missing, moved or extra",
            )
    if by_seq or len(view) != target.node_count:
        raise CorruptCheckpoint(run_id, top, "the node set does not match the checkpoint")
    return view if ordered else dict(sorted(view.items()))


def decode_checkpoint(
    target: CheckpointRecord,
    view: dict[str, NodeRow],
    serializers: Mapping[str, Serializer],
    *,
    outputs: bool = True,
    envelope: Envelope | None = None,
    blobs: Mapping[bytes, tuple[str, bytes]] | None = None,
) -> Checkpoint:
    """A verified view as a Checkpoint (outputs as ``Undecoded`` when not ``outputs``).

    ``blobs`` maps the digests that rows refer to onto (recipe, stored bytes); each
    blob is checked against its digest once opened.
    """
    run_id, seq = target.run_id, target.seq
    envelope = envelope or _PLAIN
    rows = list(view.values())
    statuses = set(map(_STATUS, rows))
    unknown = statuses - _STATUSES.keys()
    if unknown:
        raise CorruptCheckpoint(run_id, seq, f"unknown node status {min(unknown)!r}")
    outs = list(map(_OUTPUT, rows))
    groups = _groups(rows, outs)
    # One group of every row (``_groups`` returns ``rows`` itself then) all completed:
    # the outputs come back in the view's order, and are kept as that list.
    all_done = statuses == {_DONE} and len(groups) == 1 and next(iter(groups.values())) is rows
    decoded: dict[str, Any] = {}
    values: list[Any] | None = None
    for tag, group in groups.items():
        if outputs:
            found = _decode_group(tag, group, outs if group is rows else None, serializers,
                                  envelope, blobs or {}, target)  # fmt: skip
        else:
            found = [Undecoded(tag, _stored_size(r, blobs)) for r in group]
        if all_done:
            values = found
        else:
            decoded.update(zip(map(_ID, group), found, strict=True))
    state = None
    if target.state is not None and outputs:
        try:
            ser_tag, data = envelope.open(target.serializer, target.state)
            state = pick(ser_tag, serializers, run_id, seq).loads(data)
        except SerializationError as exc:
            raise exc.about("state: ", None) from exc
    elif target.state is not None:
        state = Undecoded(target.serializer, len(target.state))
    nodes = NodeMap(view, values=values) if values is not None else NodeMap(view, decoded)
    return Checkpoint(info=target.info(), nodes=nodes, state=state)


_PLAIN = Envelope(compression=None)
_ID, _STATUS, _TAG, _OUTPUT = (
    operator.attrgetter(name) for name in ("node_id", "status", "serializer", "output")
)


def _groups(rows: list[NodeRow], outs: list[bytes | None]) -> dict[str, list[NodeRow]]:
    """The rows that hold an output, by the tag they were stored with (C-level passes
    for the usual case: one tag, every row with an output). ``outs``: the rows'
    outputs, in their order."""
    tags = set(map(_TAG, rows))
    # all(): bytes are true unless empty, a cheaper test than comparing each with None.
    if len(tags) == 1 and (all(outs) or None not in outs):
        return {tags.pop(): rows}
    groups: dict[str, list[NodeRow]] = {}
    for row in rows:
        if row.output is not None:
            group = groups.get(row.serializer)
            if group is None:
                group = groups[row.serializer] = []
            group.append(row)
    return groups


def _stored_size(row: NodeRow, blobs: Mapping[bytes, tuple[str, bytes]] | None) -> int:
    out = row.output or b""
    if blobs and is_ref(row.serializer) and out in blobs:
        return len(blobs[out][1])
    return len(out)


def _decode_group(
    tag: str,
    rows: list[NodeRow],
    outs: list[bytes | None] | None,
    serializers: Mapping[str, Serializer],
    envelope: Envelope,
    blobs: Mapping[bytes, tuple[str, bytes]],
    target: CheckpointRecord,
) -> list[Any]:
    """Decode the outputs of rows stored with the same tag (``outs``: theirs, when
    the caller has them already)."""
    run_id, seq = target.run_id, target.seq
    ser_tag, steps, ref = parse(tag)
    ser = pick(ser_tag, serializers, run_id, seq)
    if not steps and not ref:
        if outs is None:
            outs = list(map(_OUTPUT, rows))
        # A group holds only rows with an output (``_groups``).
        return _loads_many(ser, rows, cast("list[bytes]", outs), seq)
    datas = []
    for r in rows:
        try:
            if ref:
                found = blobs.get(r.output or b"")
                if found is None:
                    raise CorruptCheckpoint(run_id, seq, f"node {r.node_id!r}: its blob is missing")
                recipe, stored = found
                plain = envelope.open_blob(ser_tag, recipe, stored)
                if envelope.digest_of(recipe, plain) != r.output:
                    raise CorruptCheckpoint(
                        run_id, seq, f"node {r.node_id!r}: its blob does not match its digest"
                    )
                datas.append(plain)
            else:
                datas.append(envelope.open(tag, r.output or b"")[1])
        except SerializationError as exc:
            raise exc.about(f"output of node {r.node_id!r} (written at seq {r.seq}): ",
                            r.node_id) from exc  # fmt: skip
    return _loads_many(ser, rows, datas, seq)


def _loads_many(ser: Serializer, rows: list[NodeRow], datas: list[bytes], seq: int) -> list[Any]:
    """Decode outputs, in one call when the serializer has ``loads_many``."""
    many = getattr(ser, "loads_many", None)
    if many is not None and len(rows) > 1:
        try:
            values: list[Any] = many(datas)
        except SerializationError:
            values = []  # decode one by one below to name the node that fails
        if len(values) == len(rows):
            return values
    return [_loads(ser, r, d, seq) for r, d in zip(rows, datas, strict=True)]


def _loads(ser: Serializer, row: NodeRow, data: bytes, seq: int) -> Any:
    try:
        return ser.loads(data)
    except SerializationError as exc:
        raise exc.about(f"output of node {row.node_id!r} (written at seq {row.seq}, read for "
                        f"seq {seq}): ", row.node_id) from exc  # fmt: skip

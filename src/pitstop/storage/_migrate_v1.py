"""Schema 1 -> 2: give every checkpoint of a core-v1 database a lineage, and the
layout of version 2 (a snapshot blob at the root, deltas with manifests).

Schema 1 restored "each node's newest row with seq <= S", with checksums over
``repr`` of each field. Its checkpoints become a linear chain (parent = the
previous seq, root = the first, which version 1 always wrote in full), which
reads exactly the same rows. Every row and checkpoint is verified with its
version-1 checksum first, and exactly the checkpoints version 1 could not load
(a damaged header, or a damaged row among those they read) get a payload hash
of zeros: migrating never launders damage into a loadable checkpoint, and never
spreads it to one that version 1 could load.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .._codec import (
    digest,
    manifest_hex,
    manifest_term,
    node_checksum,
    payload_hash,
    record_checksum,
    snapshot_blob,
)
from .._records import CheckpointRecord, NodeRow, deps_from_text
from ._queries import placeholders as _param
from ._schema import Cursor, Dialect

_BAD = "0" * 64
_VERSION = 2
"""The format version the migrated checkpoints are written in (digests: sha256)."""
_NONE = b"\x00"


def _sum(parts: tuple[bytes, ...]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _reprs(value: object) -> list[bytes]:
    """The ways version 1 may have written ``value`` (1700000000 comes back as a float)."""
    if value is None:
        return [_NONE]
    out = [b"\x01" + repr(value).encode()]
    if isinstance(value, float) and value.is_integer():
        out.append(b"\x01" + repr(int(value)).encode())
    return out


def _v1_node_ok(r: NodeRow) -> bool:
    blob = _NONE if r.output is None else b"\x01" + r.output
    return any(
        _sum((r.node_id.encode(), r.status.encode(), str(r.attempt).encode(), err, start, end,
              "\x1f".join(r.deps).encode(), r.serializer.encode(), blob)) == r.checksum
        for err in _reprs(r.error) for start in _reprs(r.started_at)
        for end in _reprs(r.finished_at)
    )  # fmt: skip


def _v1_record_ok(c: tuple[Any, ...], run_id: str) -> bool:
    _, created, trigger, label, node, ser, meta, state, _, written, checksum, parent = c
    state_part = _NONE if state is None else b"\x01" + bytes(state)
    parts = (run_id.encode(), _reprs(parent)[0], repr(created).encode(), trigger.encode(),
             _reprs(label)[0], _reprs(node)[0], b"1", ser.encode(), bytes(meta), state_part,
             str(written).encode())  # fmt: skip
    return _sum(parts) == str(checksum)


def convert_run(cur: Cursor, dialect: Dialect, run_id: str, now: float) -> None:
    def q(sql: str) -> str:
        return _param(dialect, sql)

    cur.execute(q("SELECT node_id, seq, status, attempt, error, started_at, finished_at, deps, "
                  "serializer, output, checksum FROM pitstop_node_states WHERE run_id = ? "
                  "ORDER BY seq"), (run_id,))  # fmt: skip
    by_seq: dict[int, list[tuple[NodeRow, bool]]] = {}
    for n in cur.fetchall():
        output = None if n[9] is None else bytes(n[9])
        try:
            deps = deps_from_text(n[0], n[7])
        except ValueError:
            deps = ()
        row = NodeRow(n[0], n[2], n[3], n[4], n[5], n[6], deps, n[8], output, n[10], n[1])
        by_seq.setdefault(row.seq, []).append((row, _v1_node_ok(row)))
    cur.execute(q("SELECT seq, created_at, trigger, label, node, serializer, metadata, state, "
                  "size, nodes_written, checksum, parent_seq FROM pitstop_checkpoints "
                  "WHERE run_id = ? ORDER BY seq"), (run_id,))  # fmt: skip
    checkpoints = cur.fetchall()
    if not checkpoints:
        return
    root = checkpoints[0][0]
    # The root becomes a snapshot: every row it read, in one blob.
    view: dict[str, tuple[NodeRow, bool]] = {}
    for s in sorted(s for s in by_seq if s <= root):
        view.update({row.node_id: (row, ok) for row, ok in by_seq.pop(s)})
    snap_rows = [row.replace(seq=root, checksum="") for row, _ in view.values()]
    blob = snapshot_blob(snap_rows)
    cur.execute(q("DELETE FROM pitstop_node_states WHERE run_id = ? AND seq <= ?"), (run_id, root))
    intact = {node_id: ok for node_id, (_, ok) in view.items()}
    parent: int | None = None
    for c in checkpoints:
        seq = c[0]
        if seq == root:
            written, manifest, snapshot = len(snap_rows), digest(_VERSION)(blob), blob
        else:
            total = 0
            mine = by_seq.pop(seq, [])
            for row, ok in mine:
                fresh = node_checksum(run_id, seq, row, _VERSION)
                total += manifest_term(fresh)
                cur.execute(q("UPDATE pitstop_node_states SET checksum = ? WHERE run_id = ? "
                              "AND node_id = ? AND seq = ?"),
                            (fresh, run_id, row.node_id, seq))  # fmt: skip
                intact[row.node_id] = ok
            written, manifest, snapshot = len(mine), manifest_hex(total), None
        meta, state = bytes(c[6]), None if c[7] is None else bytes(c[7])
        # Exactly the checkpoints that version 1 could not load stay unloadable: their
        # own header failed, or they read a damaged row (a row later replaced by an
        # intact one harms only the checkpoints that read it, as in version 1).
        good = _v1_record_ok(c, run_id) and all(intact.values())
        phash = payload_hash(meta, state, _VERSION) if good else _BAD
        new = CheckpointRecord(run_id, seq, parent, root, c[1], c[2], c[3], c[4], _VERSION, c[5],
                               meta, state, c[8], written, len(intact), manifest,
                               payload_hash=phash)  # fmt: skip
        fresh = record_checksum(new)
        cur.execute(q("UPDATE pitstop_checkpoints SET parent_seq = ?, root_seq = ?, "
                      "nodes_written = ?, node_count = ?, manifest = ?, payload_hash = ?, "
                      "schema_version = ?, checksum = ? WHERE run_id = ? AND seq = ?"),
                    (parent, root, written, new.node_count, manifest, new.payload_hash, _VERSION,
                     fresh, run_id, seq))  # fmt: skip
        if snapshot is not None:
            cur.execute(q("INSERT INTO pitstop_snapshots (run_id, seq, nodes) VALUES (?, ?, ?)"),
                        (run_id, seq, snapshot))  # fmt: skip
        parent = seq
    cur.execute(q("INSERT INTO pitstop_runs (run_id, status, attempt, started_at, ended_at, "
                  "error, graph_fingerprint, last_seq, updated_at) "
                  "VALUES (?, 'running', 1, NULL, NULL, NULL, NULL, ?, ?)"),
                (run_id, checkpoints[-1][0], now))  # fmt: skip

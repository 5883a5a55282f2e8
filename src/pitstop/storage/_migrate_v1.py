"""Schema 1 -> 2: give every checkpoint of a core-v1 database a lineage and a manifest.

Schema 1 restored "each node's newest row with seq <= S", with checksums over
``repr`` of each field. Its checkpoints become a linear chain (parent = the
previous seq, root = the first), which reads exactly the same rows. Each row
and checkpoint is verified with the version-1 checksum before it gets a new
one; a row that fails keeps failing (its new checksum is all zeros), so
migrating never launders damage into a valid checkpoint.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .._codec import manifest_hex, manifest_term, node_checksum, record_checksum
from .._records import CheckpointRecord, NodeRow, deps_from_text
from ._schema import Cursor, Dialect, _param

_BAD = "0" * 64
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


def _v1_record_ok(r: CheckpointRecord, old_checksum: str) -> bool:
    state = _NONE if r.state is None else b"\x01" + r.state
    parts = (r.run_id.encode(), _reprs(r.parent_seq)[0], repr(r.created_at).encode(),
             r.trigger.encode(), _reprs(r.label)[0], _reprs(r.node)[0], b"1",
             r.serializer.encode(), r.metadata, state, str(r.nodes_written).encode())  # fmt: skip
    return _sum(parts) == old_checksum


def convert_run(cur: Cursor, dialect: Dialect, run_id: str, now: float) -> None:
    def q(sql: str) -> str:
        return _param(dialect, sql)

    cur.execute(q("SELECT node_id, seq, status, attempt, error, started_at, finished_at, deps, "
                  "serializer, output, checksum FROM pitstop_node_states WHERE run_id = ? "
                  "ORDER BY seq"), (run_id,))  # fmt: skip
    by_seq: dict[int, list[NodeRow]] = {}
    for n in cur.fetchall():
        output = None if n[9] is None else bytes(n[9])
        try:
            deps = deps_from_text(n[0], n[7])
        except ValueError:
            deps = ()
        row = NodeRow(n[0], n[2], n[3], n[4], n[5], n[6], deps, n[8], output, n[10], n[1])
        fresh = node_checksum(run_id, row.seq, row) if _v1_node_ok(row) else _BAD
        cur.execute(q("UPDATE pitstop_node_states SET checksum = ? WHERE run_id = ? "
                      "AND node_id = ? AND seq = ?"),
                    (fresh, run_id, row.node_id, row.seq))  # fmt: skip
        by_seq.setdefault(row.seq, []).append(row._replace(checksum=fresh))
    cur.execute(q("SELECT seq, created_at, trigger, label, node, serializer, metadata, state, "
                  "size, nodes_written, checksum, parent_seq FROM pitstop_checkpoints "
                  "WHERE run_id = ? ORDER BY seq"), (run_id,))  # fmt: skip
    checkpoints = cur.fetchall()
    view: dict[str, int] = {}
    applied = set()
    parent: int | None = None
    root = checkpoints[0][0] if checkpoints else 0
    for c in checkpoints:
        seq = c[0]
        for s in sorted(s for s in by_seq if s <= seq and s not in applied):
            applied.add(s)
            view.update({r.node_id: manifest_term(r.checksum) for r in by_seq[s]})
        old = CheckpointRecord(run_id, seq, c[11], root, c[1], c[2], c[3], c[4], 1, c[5],
                               bytes(c[6]), None if c[7] is None else bytes(c[7]), c[8], c[9],
                               len(view), manifest_hex(sum(view.values())))  # fmt: skip
        ok = _v1_record_ok(old, c[10])
        new = CheckpointRecord(**{**_fields(old), "parent_seq": parent, "schema_version": 2})
        fresh = record_checksum(new) if ok else _BAD
        cur.execute(q("UPDATE pitstop_checkpoints SET parent_seq = ?, root_seq = ?, "
                      "node_count = ?, manifest = ?, schema_version = 2, checksum = ? "
                      "WHERE run_id = ? AND seq = ?"),
                    (parent, root, new.node_count, new.manifest, fresh, run_id, seq))  # fmt: skip
        parent = seq
    last = checkpoints[-1][0] if checkpoints else 0
    cur.execute(q("INSERT INTO pitstop_runs (run_id, status, attempt, started_at, ended_at, "
                  "error, graph_fingerprint, last_seq, updated_at) "
                  "VALUES (?, 'running', 1, NULL, NULL, NULL, NULL, ?, ?)"),
                (run_id, last, now))  # fmt: skip


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}

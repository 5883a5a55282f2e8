"""SQL text of every statement, built once per dialect at import.

Written with ``?`` placeholders; PostgreSQL (psycopg) gets ``%s``. The tables
themselves are declared in ``_models`` (SQLModel); a test checks that these
statements name only columns those tables have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RUNS = "pitstop_runs"
SNAPSHOTS = "pitstop_snapshots"
CHECKPOINTS = "pitstop_checkpoints"
NODES = "pitstop_node_states"
BLOBS = "pitstop_blobs"
REFS = "pitstop_blob_refs"

RUN_COLS = ("status", "attempt", "started_at", "ended_at", "error", "graph_fingerprint",
            "last_seq")  # fmt: skip
HEADER_COLS = ("run_id", "seq", "parent_seq", "root_seq", "created_at", "trigger", "label",
               "node", "schema_version", "serializer", "metadata", "size", "nodes_written",
               "node_count", "manifest", "checksum", "payload_hash")  # fmt: skip
"""Every checkpoint column but the state blob (and ``retired``): listing
reads no payload."""
NODE_COLS = ("node_id", "seq", "status", "attempt", "error", "started_at", "finished_at", "deps",
             "serializer", "output", "checksum", "fingerprint")  # fmt: skip

_H = ", ".join(HEADER_COLS)
_N = ", ".join(NODE_COLS)
_R = ", ".join(RUN_COLS)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# A restore's first query: the checkpoint asked for (with its state), every
# header of its chain, and the root's snapshot blob, in one round trip.
_CH = ", ".join(f"c.{col}" for col in HEADER_COLS)
# ``t``: the checkpoint a restore reads (its seq and its chain's root), shared by
# the statements of one restore's batch.
_CHAIN = (
    f"WITH t AS (SELECT seq, root_seq FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0 "
    "{which}) "
)
_LOAD = (
    _CHAIN + f"SELECT {_CH}, CASE WHEN c.seq = t.seq THEN c.state END, "
    "{{snapshot}} "
    f"FROM {CHECKPOINTS} c JOIN t ON c.run_id = ? "
    # One index range: the chain from the root (or from the checkpoint itself, if a
    # damaged root_seq points past it, so the damage is still read and reported).
    "AND c.seq >= {{least}}(t.root_seq, t.seq) AND c.seq <= t.seq "
    f"LEFT JOIN {SNAPSHOTS} s ON s.run_id = c.run_id AND s.seq = c.seq AND c.seq = t.root_seq"
)
# The delta rows of the chain of the checkpoint ``_LOAD`` reads (the same CTE).
_NODES_OF = (
    _CHAIN + f"SELECT {', '.join('n.' + c for c in NODE_COLS)} FROM {NODES} n JOIN t "
    "ON n.run_id = ? AND n.seq > t.root_seq AND n.seq <= t.seq"
)
# The blobs that rows of the chain of the checkpoint ``_LOAD`` reads refer to (the
# same CTE; the program keeps those of seqs on the chain).
_BLOBS_OF = (
    _CHAIN + f"SELECT r.seq, b.digest, b.recipe, b.data FROM {REFS} r JOIN t ON r.run_id = ? "
    "AND r.seq >= {{least}}(t.root_seq, t.seq) AND r.seq <= t.seq "
    f"JOIN {BLOBS} b ON b.digest = r.digest"
)
BLOB_INLINE = 64 * 1024
"""On SQLite a restore reads a snapshot blob of this size or more by itself, with
incremental blob I/O (``Connection.blobopen``), straight into one buffer: selected,
SQLite assembles it from its overflow pages and sqlite3 copies it again (a 2.2 MB
blob: 3.26 against 1.81 ms p50, 230 KB: 19.8 against 14.6 µs; below ~64 KB the
two are within a microsecond). The load statement gives its rowid instead."""
SNAPSHOT_IN_ROW = 8 * 1024
"""A snapshot blob below this size is stored in its checkpoint's row (column
``snapshot``), not in ``pitstop_snapshots``: one row, one B-tree and its key
written instead of two (a SQLite save of a 10-node run: ~27 µs less with
synchronous=FULL, ~17 µs with NORMAL, measured on raw inserts). Bigger blobs
keep a table of their own, so retiring a checkpoint (an update of its row,
which SQLite rewrites whole) never copies them. A small run's snapshot
(``CheckpointPolicy.snapshot_small``: 4 KiB of outputs by default, 64 nodes at
most) usually fits (10 nodes of ~200-byte outputs: ~2.2 KB); near both bounds,
with fingerprints, it can pass 8 KiB (11,259 bytes for 64 nodes, 3.3 KB of
outputs and 64-character fingerprints) and then goes to the table."""
# The root's snapshot: from its row, else from pitstop_snapshots (SQLite: a big
# one by rowid, read by itself).
_IN_ROW = "CASE WHEN c.seq = t.root_seq THEN c.snapshot END"
_SNAPSHOT_COLS = {
    "postgresql": f"COALESCE({_IN_ROW}, s.nodes), NULL",
    "sqlite": f"COALESCE({_IN_ROW}, CASE WHEN length(s.nodes) < {BLOB_INLINE} THEN s.nodes "
    f"END), CASE WHEN length(s.nodes) >= {BLOB_INLINE} THEN s.rowid END",
}
_RUN_SEL = ", ".join("r." + c for c in RUN_COLS[:-1])
_RUNS = (
    f"SELECT r.run_id, {_RUN_SEL}, {{greatest}}(r.last_seq, COALESCE(a.top, 0)), a.n, a.latest, "
    "a.total, c.created_at FROM " + RUNS + " r LEFT JOIN (SELECT run_id, "
    "SUM(CASE WHEN retired = 0 THEN 1 ELSE 0 END) AS n, "
    "MAX(CASE WHEN retired = 0 THEN seq END) AS latest, "
    "SUM(CASE WHEN retired = 0 THEN size ELSE 0 END) AS total, MAX(seq) AS top "
    "FROM " + CHECKPOINTS + " {where_cp}GROUP BY run_id) a ON a.run_id = r.run_id "
    "LEFT JOIN " + CHECKPOINTS + " c ON c.run_id = a.run_id AND c.seq = a.latest{where_r}"
)
# How many of the base's parent and root (two seqs, maybe equal) are still stored:
# 2 when both are. Two point lookups on the primary key: ``seq IN (?, ?)`` let
# PostgreSQL's planner scan every checkpoint of the run and filter (the table's
# statistics say it is tiny until it is analyzed), making a save cost the run's
# history.
_BASE_FOUND = " + ".join(
    f"(SELECT COUNT(*) FROM {CHECKPOINTS} c{i} WHERE c{i}.run_id = r.run_id AND c{i}.seq = ?)"
    for i in (1, 2)
)
# The checksum of the checkpoint now at the base's seq (NULL when there is none): a
# seq given again after lost commits holds another checkpoint than the base.
_BASE_CHECKSUM = f"(SELECT b.checksum FROM {CHECKPOINTS} b WHERE b.run_id = r.run_id AND b.seq = ?)"
_UPSERT_SET = ", ".join(f"{c} = excluded.{c}" for c in (*RUN_COLS, "updated_at"))

_TEMPLATES = {
    # Not SQL: the table and column a "blob" statement reads (SQLite's blobopen).
    "snapshot_blob": f"{SNAPSHOTS}.nodes",
    "run_get": f"SELECT {_R} FROM {RUNS} WHERE run_id = ?",
    # A restore's view of the run: its row and high-water seq, not its aggregates
    # (counting every checkpoint would make a restore cost the run's history).
    "run_load": f"SELECT {', '.join(RUN_COLS[:-1])}, {{greatest}}(last_seq, COALESCE((SELECT "
    f"MAX(seq) FROM {CHECKPOINTS} m WHERE m.run_id = ?), 0)) FROM {RUNS} WHERE run_id = ?",
    # The high-water seq is the larger of the run row's (raised before rows are
    # deleted) and the newest checkpoint row's: saves need not rewrite the run row.
    "run_lock": f"SELECT {{greatest}}(r.last_seq, COALESCE((SELECT MAX(seq) FROM {CHECKPOINTS} "
    f"m WHERE m.run_id = r.run_id), 0)), {_BASE_FOUND}, {_BASE_CHECKSUM} FROM {RUNS} r "
    "WHERE r.run_id = ?{lock}",
    "raise_hwm": f"UPDATE {RUNS} SET last_seq = {{greatest}}(last_seq, COALESCE((SELECT MAX(seq) "
    f"FROM {CHECKPOINTS} WHERE run_id = ?), 0)) WHERE run_id = ?",
    "run_upsert": f"INSERT INTO {RUNS} (run_id, {_R}, updated_at) VALUES ({_marks(9)}) "
    f"ON CONFLICT (run_id) DO UPDATE SET {_UPSERT_SET}",
    "run_status": f"UPDATE {RUNS} SET status = ?, attempt = ?, started_at = ?, ended_at = ?, "
    "error = ?, graph_fingerprint = ?, updated_at = ? WHERE run_id = ?",
    "runs": _RUNS,
    # One run: its checkpoints aggregated for that run alone (not all runs, then filtered).
    "run_one": _RUNS.replace("{where_cp}", "WHERE run_id = ? ").replace(
        "{where_r}", " WHERE r.run_id = ?"
    ),
    "cp_insert": f"INSERT INTO {CHECKPOINTS} ({_H}, state, snapshot, retired) "
    f"VALUES ({_marks(20)})",
    "snapshot_insert": f"INSERT INTO {SNAPSHOTS} (run_id, seq, nodes) VALUES (?, ?, ?)",
    "node_insert": f"INSERT INTO {NODES} (run_id, {_N}) VALUES ({_marks(13)})",
    "load_latest": _LOAD.format(which="ORDER BY seq DESC LIMIT 1"),
    "load_at": _LOAD.format(which="AND seq = ?"),
    "nodes_latest": _NODES_OF.format(which="ORDER BY seq DESC LIMIT 1"),
    "nodes_at": _NODES_OF.format(which="AND seq = ?"),
    "blobs_latest": _BLOBS_OF.format(which="ORDER BY seq DESC LIMIT 1"),
    "blobs_at": _BLOBS_OF.format(which="AND seq = ?"),
    "cp_list": f"SELECT {_H} FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0 ORDER BY seq",
    "cp_checksum": f"SELECT checksum FROM {CHECKPOINTS} WHERE run_id = ? AND seq = ?",
    "nth_live": f"SELECT seq FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0 "
    "ORDER BY seq DESC LIMIT 1 OFFSET ?",
    "live_before": f"SELECT seq FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0 "
    "AND seq < ? ORDER BY seq",
    "retire_before": f"UPDATE {CHECKPOINTS} SET retired = 1 WHERE run_id = ? AND retired = 0 "
    "AND seq < ?",
    "retire_one": f"UPDATE {CHECKPOINTS} SET retired = 1 WHERE run_id = ? AND seq = ? "
    "AND retired = 0",
    "live_count": f"SELECT COUNT(*) FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0",
    "floor": f"SELECT MIN(root_seq) FROM {CHECKPOINTS} WHERE run_id = ? AND retired = 0",
    "gc_checkpoints": f"DELETE FROM {CHECKPOINTS} WHERE run_id = ? AND seq < ?",
    "gc_nodes": f"DELETE FROM {NODES} WHERE run_id = ? AND seq < ?",
    "gc_snapshots": f"DELETE FROM {SNAPSHOTS} WHERE run_id = ? AND seq < ?",
    "schema_version": "SELECT version FROM pitstop_schema WHERE id = 1",
    # Content-addressed blobs; a JSON list parameter ({json_list}) carries many digests.
    "blobs_have": f"SELECT digest FROM {BLOBS} WHERE digest IN ({{json_list}})",
    "blob_insert": f"INSERT INTO {BLOBS} (digest, recipe, data, size) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (digest) DO NOTHING",
    "ref_insert": f"INSERT INTO {REFS} (run_id, seq, digest) VALUES (?, ?, ?)",
    "blob_stats": f"SELECT COUNT(*), SUM(size) FROM {BLOBS}",
    # Blobs only references below the floor (of this run) read: they go, and with
    # them (ON DELETE CASCADE, where enforced) those references; then the rest.
    "gc_blobs": f"DELETE FROM {BLOBS} WHERE digest IN (SELECT digest FROM {REFS} "
    "WHERE run_id = ? AND seq < ?) AND NOT EXISTS (SELECT 1 FROM "
    f"{REFS} r WHERE r.digest = {BLOBS}.digest AND (r.run_id <> ? OR r.seq >= ?))",
    "gc_refs": f"DELETE FROM {REFS} WHERE run_id = ? AND seq < ?",
}


# PostgreSQL only: a whole save (fence, run row, checkpoint, node rows) as one
# autocommit statement, one round trip. Every write is conditional on `ok`, so
# a stale base writes nothing; FOR UPDATE makes a concurrent writer wait and then
# see the new high-water seq (READ COMMITTED re-checks the locked row).
#
# One statement per shape, so each carries only what that save writes: a snapshot
# checks no base chain and writes no node rows, and its blob goes in the
# checkpoint's row or (a big one) in its own table; a delta of one node sends it as
# plain values (dumping 11 one-element arrays cost psycopg ~40 us a save); the run
# row only when its fields changed. ``save_at_once_key`` names the statement, and
# ``_programs.save_at_once`` passes parameters in the order of the parts below.
_NODE_ARRAYS = ("node_id text", "status text", "attempt int", "error text", "started_at float8",
                "finished_at float8", "deps text", "serializer text", "output bytea",
                "checksum text", "fingerprint text")  # fmt: skip
_OK = "WHERE EXISTS (SELECT 1 FROM ok)"
SaveKind = Literal["d", "i", "s"]
"""A delta, a snapshot in its checkpoint's row (``SNAPSHOT_IN_ROW``), or a snapshot
in ``pitstop_snapshots``."""


def _save_at_once(kind: SaveKind, nodes: Literal["0", "1", "n"], run: bool) -> str:
    found = _BASE_FOUND if kind == "d" else "2"  # a snapshot reads no base
    parts = [
        # lock: [parent, root,] parent, run_id; ok: expected high-water seq, base checksum
        f"WITH lock AS (SELECT GREATEST(r.last_seq, COALESCE((SELECT MAX(seq) FROM {CHECKPOINTS} "
        f"m WHERE m.run_id = r.run_id), 0)) AS last_seq, {found} AS n, {_BASE_CHECKSUM} AS ck "
        f"FROM {RUNS} r WHERE r.run_id = ? FOR UPDATE OF r)",
        # (A base seq that holds no checkpoint is a delta's missing base, counted in n.)
        "ok AS (SELECT 1 FROM lock WHERE last_seq = ? AND n = 2 "
        "AND (ck IS NULL OR ck = COALESCE(?::text, ck)))",
    ]
    if run:  # status .. graph_fingerprint, last_seq, updated_at, run_id
        parts.append(
            f"run AS (UPDATE {RUNS} SET status = ?, attempt = ?, started_at = ?, ended_at = ?, "
            "error = ?, graph_fingerprint = ?, last_seq = ?, updated_at = ? WHERE run_id = ? "
            f"AND EXISTS (SELECT 1 FROM ok))"
        )
    # the header's 17 columns, the state [and the snapshot blob]
    in_row = "?::bytea" if kind == "i" else "NULL"
    parts.append(f"cp AS (INSERT INTO {CHECKPOINTS} ({_H}, state, snapshot, retired) "
                 f"SELECT {_marks(18)}, {in_row}, 0 {_OK} RETURNING 1)")  # fmt: skip
    if kind == "s":  # run_id, seq, blob
        parts.append(f"snap AS (INSERT INTO {SNAPSHOTS} (run_id, seq, nodes) "
                     f"SELECT ?, ?, ?::bytea {_OK})")  # fmt: skip
    if nodes == "1":  # run_id and the row's 12 columns
        parts.append(f"nodes AS (INSERT INTO {NODES} (run_id, {_N}) SELECT {_marks(13)} {_OK})")
    elif nodes == "n":  # run_id, seq, then one array per other column
        arrays = ", ".join(f"?::{a.split()[1]}[]" for a in _NODE_ARRAYS)
        names = ", ".join(a.split()[0] for a in _NODE_ARRAYS)
        parts.append(
            f"nodes AS (INSERT INTO {NODES} (run_id, {_N}) SELECT ?, u.node_id, ?, u.status, "
            "u.attempt, u.error, u.started_at, u.finished_at, u.deps, u.serializer, u.output, "
            f"u.checksum, u.fingerprint FROM unnest({arrays}) AS u({names}) {_OK})"
        )
    tail = (
        " SELECT (SELECT last_seq FROM lock), (SELECT n FROM lock), (SELECT COUNT(*) FROM cp), "
        "(SELECT ck FROM lock)"
    )
    return ", ".join(parts) + tail


def save_at_once_key(kind: SaveKind, rows: int, run: bool) -> str:
    """The name of the one-statement save of this shape."""
    return f"save_at_once.{kind}{min(rows, 2)}{'r' if run else ''}"


SAVE_AT_ONCE = {
    save_at_once_key(kind, rows, run): _save_at_once(kind, ("0", "1", "n")[rows], run)
    for kind in ("d", "i", "s")
    for rows in ((0, 1, 2) if kind == "d" else (0,))
    for run in (True, False)
}


@dataclass(frozen=True, slots=True)
class Dialect:
    """The statements of one database, ready to execute."""

    name: Literal["sqlite", "postgresql"]
    sql: dict[str, str]


def placeholders(name: Literal["sqlite", "postgresql"], sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the style of ``name``'s driver."""
    return sql.replace("?", "%s") if name == "postgresql" else sql


def _build(name: Literal["sqlite", "postgresql"]) -> Dialect:
    lock = " FOR UPDATE OF r" if name == "postgresql" else ""
    greatest = "GREATEST" if name == "postgresql" else "MAX"  # SQLite's scalar max()
    least = "LEAST" if name == "postgresql" else "MIN"
    json_list = ("SELECT jsonb_array_elements_text(?::jsonb)" if name == "postgresql"
                 else "SELECT value FROM json_each(?)")  # fmt: skip
    out = {}
    templates = {**_TEMPLATES, **SAVE_AT_ONCE} if name == "postgresql" else _TEMPLATES
    for key, text in templates.items():
        text = text.replace("{lock}", lock).replace("{greatest}", greatest)
        text = text.replace("{json_list}", json_list).replace("{least}", least)
        text = text.replace("{snapshot}", _SNAPSHOT_COLS[name])
        text = text.replace("{where_cp}", "").replace("{where_r}", "")
        out[key] = placeholders(name, text)
    return Dialect(name, out)


SQLITE = _build("sqlite")
POSTGRES = _build("postgresql")

"""Every store operation as a transaction program: a generator that yields
statements and receives their results.

The programs hold all storage logic (seq assignment, lineage checks,
retention, garbage collection) once; a backend only executes what they yield,
inside one transaction, on whatever driver it has (sqlite3 or psycopg). The
save is also written as its parts (``lock_params``, ``fenced_seq``, ``writes``,
``after_writes``), which SQLite runs straight on its cursor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from .._errors import CheckpointNotFound, CorruptCheckpoint, StaleBaseError, StoreError
from .._records import CheckpointRecord, NodeRow, deps_from_text, deps_text
from .._types import RunInfo, RunStatus, check_time
from ._queries import SNAPSHOT_IN_ROW, SaveKind, save_at_once_key

if TYPE_CHECKING:
    from .._core import RunFields, SavePlan

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def one_step(program: F) -> F:
    """Mark a read program that asks for one statement (or one ``Batch``) and then
    returns: PostgreSQL runs it in one round trip, BEGIN and COMMIT included
    (``PostgresBackend._read_once``). A read without the mark runs in a transaction of
    its own, which may span several round trips."""
    setattr(program, "one_step", True)  # noqa: B010 - a function attribute, read by getattr
    return program


@dataclass(frozen=True, slots=True)
class Stmt:
    """A statement by name (see ``_queries``), its parameters and what to return."""

    key: str
    params: Sequence[Any] = ()
    mode: Literal["rows", "count", "exec", "many", "try", "blob"] = "rows"
    """rows: fetch them; count: the row count; exec and many: nothing (so a driver
    may pipeline the statement with the ones after it); try: like exec, but a
    failure only undoes this statement (a savepoint), and the result says whether
    it ran; blob (SQLite only): the whole value of the ``table.column`` the key
    names, in the row whose rowid is the one parameter, as bytes."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Statements that depend on no result of each other: a driver may send them all
    before reading any answer (PostgreSQL: one round trip). The program gets back
    the list of their rows, in order."""

    stmts: tuple[Stmt, ...]


Txn = Generator["Stmt | Batch", Any, R]


class Call(msgspec.Struct, Generic[R], frozen=True):
    """One transaction a manager asks a store to run: ``program(*args)`` (a Struct,
    as ``Saved``: one of each per save, built in C)."""

    program: Callable[..., Txn[R]]
    args: tuple[Any, ...]
    write: bool

    @property
    def name(self) -> str:
        return self.program.__name__


class Saved(msgspec.Struct, frozen=True, gc=False):
    seq: int | None
    """None: the base checkpoint is gone, write a full snapshot instead."""
    removed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Loaded:
    record: CheckpointRecord
    """The checkpoint asked for, with its metadata and state."""
    chain: list[CheckpointRecord]
    """Its chain, root snapshot (with its blob) first, the checkpoint itself last."""
    rows: list[NodeRow]
    """The node rows the chain's deltas wrote."""
    run: RunInfo
    """The run's row and high-water seq (its checkpoint counts and sizes are not read)."""
    blobs: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    """Digest -> (recipe, stored bytes) of the blobs the chain refers to."""


def _record(
    r: Sequence[Any], state: bytes | None, snapshot: bytes | None = None
) -> CheckpointRecord:
    (run_id, seq, parent, root, created, trigger, label, node, version, ser, meta, size,
     written, count, manifest, checksum, phash) = r[:17]  # fmt: skip
    return CheckpointRecord(run_id, seq, parent, root, created, trigger, label, node, version,
                            ser, bytes(meta), state, size, written, count, manifest,
                            checksum, phash, snapshot)  # fmt: skip


def _node(r: Sequence[Any]) -> NodeRow:
    node_id, seq, status, attempt, error, started, finished, deps, ser, output, checksum, fp = r
    return NodeRow(node_id, status, attempt, error, started, finished,
                   deps_from_text(node_id, deps), ser, None if output is None else bytes(output),
                   checksum, seq, fp)  # fmt: skip


def _run(run_id: str, r: Sequence[Any], n: int | None, latest: int | None,
         total: int | None, latest_at: float | None) -> RunInfo:  # fmt: skip
    status, attempt, started, ended, error, fingerprint, last_seq = r
    try:
        status = RunStatus(status)
        for t in (started, ended):
            check_time("a run time", t)
        if isinstance(last_seq, bool) or not isinstance(last_seq, int):
            raise TypeError(f"last_seq is {last_seq!r}")
    except (TypeError, ValueError) as exc:
        raise StoreError(f"run {run_id!r} has a damaged row in pitstop_runs: {exc}") from exc
    return RunInfo(run_id, status, attempt, started, ended, error, fingerprint,
                   last_seq, n or 0, latest, latest_at, int(total or 0))  # fmt: skip


def _run_params(run: RunFields, last_seq: int, now: float) -> tuple[Any, ...]:
    return (run.run_id, run.status.value, run.attempt, run.started_at, run.ended_at, run.error,
            run.graph_fingerprint, last_seq, now)  # fmt: skip


# -- writes -------------------------------------------------------------------


def save(plan: SavePlan) -> Txn[Saved]:
    """Assign the next seq, check the base, insert checkpoint and rows, apply retention.

    (SQLite runs the same parts straight on its cursor: ``SqliteBackend._save``.)
    """
    found = yield Stmt("run_lock", lock_params(plan))
    seq = fenced_seq(plan, found)
    if seq is None:
        return Saved(None)
    for key, params, mode in writes(plan, seq, found):
        yield Stmt(key, params, mode)
    removed = yield from after_writes(plan, seq)
    return Saved(seq, removed)


def lock_params(plan: SavePlan) -> tuple[Any, ...]:
    """The parameters of ``run_lock``: one statement locks the run's row, reads its
    high-water seq and checks that the base's chain (parent and root) is still
    there (delete or retention elsewhere)."""
    parent = plan.parent_seq if plan.parent_seq is not None else 0
    root = plan.root_seq if plan.root_seq is not None else parent
    return (parent, root, plan.parent_seq, plan.run_id)


def fenced_seq(plan: SavePlan, found: Sequence[Sequence[Any]]) -> int | None:
    """The seq the save takes, given what ``run_lock`` found; None: the base's chain
    is gone (write a full snapshot instead).

    Raises:
        StaleBaseError: another writer saved the run since this manager last did.
    """
    hwm, n, base_checksum = found[0] if found else (0, 0, None)
    if plan.expected_hwm is not None and hwm != plan.expected_hwm:
        raise StaleBaseError(plan.run_id, plan.expected_hwm, hwm)
    if _replaced(plan, base_checksum):
        if plan.expected_hwm is None:  # no fence (LangGraph's saver): as if it were gone
            return None
        raise StaleBaseError(plan.run_id, plan.expected_hwm, hwm, replaced=plan.parent_seq)
    if not plan.snapshot and plan.parent_seq is not None and n != 2:
        return None
    return hwm + 1


Write = tuple[str, Any, Literal["exec", "many"]]


def writes(plan: SavePlan, seq: int, found: Sequence[Any]) -> list[Write]:
    """Finalize ``plan`` at ``seq`` and list the statements that write it: the run's
    row (when it is new or its fields changed), the checkpoint, its snapshot blob
    when too big for the row, its node rows."""
    run_id = plan.run_id
    record, rows = plan.finalize(seq)
    out: list[Write] = []
    if not found or plan.run_changed:  # the run row changes only with the run's fields
        out.append(("run_upsert", _run_params(plan.run, seq, record.created_at), "exec"))
    kind = _kind(record)
    in_row = record.snapshot if kind == "i" else None
    out.append(("cp_insert", (*_header(record), record.state, in_row, 0), "exec"))
    if kind == "s":
        out.append(("snapshot_insert", (run_id, seq, record.snapshot), "exec"))
    if rows:
        out.append(("node_insert", [_node_params(run_id, r) for r in rows], "many"))
    return out


def after_writes(plan: SavePlan, seq: int) -> Txn[tuple[int, ...]]:
    """The rest of a save once its rows are in: the blobs it refers to, then
    retention (``keep_last``); the seqs retention retired."""
    if plan.refs:
        yield from _write_refs(plan, seq)
    if plan.keep_last is None:
        return ()
    # Retiring is cheap; collecting frees what no live checkpoint reads, which
    # only changes much when a snapshot starts a new chain: do it then, so the
    # saves in between stay as cheap as the rest (garbage stays bounded by two
    # snapshot intervals).
    return (yield from _retain(plan.run_id, plan.keep_last, collect=plan.collect))


def _replaced(plan: SavePlan, found: str | None) -> bool:
    """Whether the base's seq now holds another checkpoint than the base: its seq was
    given again after commits were lost (``durability="normal"`` and a crash, or a
    database restored from a backup), and another writer saved there meanwhile."""
    return found is not None and plan.base_checksum is not None and found != plan.base_checksum


def _kind(record: CheckpointRecord) -> SaveKind:
    """Where a checkpoint's snapshot blob goes (``SNAPSHOT_IN_ROW``): "d", no blob."""
    blob = record.snapshot
    if blob is None:
        return "d"
    return "i" if len(blob) < SNAPSHOT_IN_ROW else "s"


def _write_refs(plan: SavePlan, seq: int) -> Txn[None]:
    """Store the blobs the store lacks, and this checkpoint's references to them."""
    have = yield Stmt("blobs_have", (json.dumps(plan.refs),))
    present = {d for (d,) in have}
    new = []
    for digest in plan.refs:
        if digest not in present:
            found = plan.blobs.get(digest)
            if found is None:  # the bookkeeping always holds the blobs its rows refer to
                raise StoreError(f"blob {digest[:16]}... is neither stored nor in memory")
            new.append((digest, found[0], found[1], len(found[1])))
    if new:
        yield Stmt("blob_insert", new, "many")
    yield Stmt("ref_insert", [(plan.run_id, seq, d) for d in plan.refs], "many")


def fits_one_statement(plan: SavePlan) -> bool:
    """Whether ``save_at_once`` can write ``plan``: its seq is known up front (the
    manager knows the run's high-water seq), no retention runs with it and it
    refers to no blobs."""
    return plan.expected_hwm is not None and plan.keep_last is None and not plan.refs


def save_at_once(plan: SavePlan) -> Txn[Saved]:
    """``save`` as one statement, for a backend that can (PostgreSQL: one round trip,
    in autocommit). Only for a plan that ``fits_one_statement``.
    """
    if plan.expected_hwm is None:
        raise ValueError("save_at_once needs the expected high-water seq")
    run_id, run = plan.run_id, plan.run
    record, rows = plan.finalize(plan.expected_hwm + 1)
    seq, kind = record.seq, _kind(record)
    # In the order of the statement's parts (``_queries._save_at_once``).
    params: list[Any] = [plan.parent_seq, run_id, plan.expected_hwm, plan.base_checksum]
    if kind == "d":  # the base's parent and root must still be there
        if plan.parent_seq is None:
            raise ValueError("a delta needs its base")
        root = plan.root_seq if plan.root_seq is not None else plan.parent_seq
        params[:0] = (plan.parent_seq, root)
    if plan.run_changed:
        params += (run.status.value, run.attempt, run.started_at, run.ended_at, run.error,
                   run.graph_fingerprint, seq, record.created_at, run_id)  # fmt: skip
    params += (*_header(record), record.state)
    if kind == "i":
        params.append(record.snapshot)
    elif kind == "s":
        params += (run_id, seq, record.snapshot)
    if len(rows) == 1:
        params += _node_params(run_id, rows[0])
    elif rows:
        columns = list(zip(*[_node_params(run_id, r)[1:] for r in rows], strict=True))
        params += (run_id, seq, *[list(c) for i, c in enumerate(columns) if i != 1])
    key = save_at_once_key(kind, len(rows), plan.run_changed)
    ((hwm, _, inserted, base_checksum),) = yield Stmt(key, params)
    if inserted:
        return Saved(seq)
    if hwm != plan.expected_hwm:
        raise StaleBaseError(run_id, plan.expected_hwm, hwm)
    if _replaced(plan, base_checksum):
        raise StaleBaseError(run_id, plan.expected_hwm, hwm, replaced=plan.parent_seq)
    return Saved(None)  # the base's chain is gone: write a snapshot


def _header(r: CheckpointRecord) -> tuple[Any, ...]:
    return (r.run_id, r.seq, r.parent_seq, r.root_seq, r.created_at, r.trigger, r.label, r.node,
            r.schema_version, r.serializer, r.metadata, r.size, r.nodes_written, r.node_count,
            r.manifest, r.checksum, r.payload_hash)  # fmt: skip


def _node_params(run_id: str, r: NodeRow) -> tuple[Any, ...]:
    return (run_id, r.node_id, r.seq, r.status, r.attempt, r.error, r.started_at, r.finished_at,
            deps_text(r.deps), r.serializer, r.output, r.checksum, r.fingerprint)  # fmt: skip


def _retain(run_id: str, keep: int, *, collect: bool = True) -> Txn[tuple[int, ...]]:
    """Retire all but the newest ``keep`` live checkpoints, then collect what none reads."""
    nth = yield Stmt("nth_live", (run_id, keep - 1))
    removed: tuple[int, ...] = ()
    if nth:
        doomed = yield Stmt("live_before", (run_id, nth[0][0]))
        removed = tuple(s for (s,) in doomed)
        if removed:
            yield Stmt("retire_before", (run_id, nth[0][0]), "exec")
    if collect:
        yield from _collect(run_id)
    return removed


def _collect(run_id: str) -> Txn[None]:
    """Delete checkpoints and rows below the oldest snapshot a live checkpoint reads from.

    Costs what it deletes, not the size of the run: everything below the floor
    goes in two range deletes on the (run_id, seq) indexes.
    """
    # Keep the high-water seq before rows go: seqs are never reused.
    yield Stmt("raise_hwm", (run_id, run_id), "exec")
    ((floor,),) = yield Stmt("floor", (run_id,))
    if floor is None:  # no live checkpoint left: nothing is read any more
        found = yield Stmt("run_get", (run_id,))
        floor = (found[0][6] if found else 0) + 1
    yield Stmt("gc_checkpoints", (run_id, floor), "exec")
    yield Stmt("gc_nodes", (run_id, floor), "exec")
    yield Stmt("gc_snapshots", (run_id, floor), "exec")
    # A concurrent save may just be referring to such a blob again (PostgreSQL):
    # the foreign key then fails the delete, which rolls back to its savepoint and
    # keeps the references below the floor, so a later collection tries again.
    if (yield Stmt("gc_blobs", (run_id, floor, run_id, floor), "try")):
        yield Stmt("gc_refs", (run_id, floor), "exec")


def prune(run_id: str, keep: int) -> Txn[tuple[int, ...]]:
    return (yield from _retain(run_id, keep))


def delete(run_id: str, seq: int | None) -> Txn[int]:
    """Retire one checkpoint, or every checkpoint of the run; keep the run's row (its seqs)."""
    if seq is not None:
        n = yield Stmt("retire_one", (run_id, seq), "count")
    else:
        ((n,),) = yield Stmt("live_count", (run_id,))
        if n:
            yield Stmt("retire_before", (run_id, 2**62), "exec")
    if not n:
        raise CheckpointNotFound(run_id, seq)
    yield from _collect(run_id)
    return int(n)


def set_run(run: RunFields) -> Txn[bool]:
    """Write the run's status (success, failure, pause) without a checkpoint."""
    import time

    params = (run.status.value, run.attempt, run.started_at, run.ended_at, run.error,
              run.graph_fingerprint, time.time(), run.run_id)  # fmt: skip
    n = yield Stmt("run_status", params, "count")
    return bool(n)


# -- reads --------------------------------------------------------------------


@one_step
def load(run_id: str, seq: int | None, blobs: bool = True) -> Txn[Loaded]:
    """The checkpoint (latest live one when ``seq`` is None) and everything its chain
    reads (the blobs its rows refer to only when ``blobs``)."""
    # The chain's headers, its delta rows, the run's row and the blobs the chain's
    # rows refer to, in one round trip: the node rows and blobs are selected by the
    # same chain bounds, read inside the statement.
    which, params = ("latest", (run_id,)) if seq is None else ("at", (run_id, seq))
    reads = [Stmt(f"load_{which}", (*params, run_id)), Stmt(f"nodes_{which}", (*params, run_id)),
             Stmt("run_load", (run_id, run_id))]  # fmt: skip
    if blobs:
        reads.append(Stmt(f"blobs_{which}", (*params, run_id)))
    found, node_rows, run_rows, *blob_rows = yield Batch(tuple(reads))
    by_seq = {r[1]: r for r in found}
    top = max(by_seq, default=None) if seq is None else seq if seq in by_seq else None
    if top is None:
        raise CheckpointNotFound(run_id, seq)
    head = by_seq[top]
    root = head[3]
    if not isinstance(root, int) or root > top:
        raise CorruptCheckpoint(run_id, top, f"damaged lineage (root {root!r})")
    root_row = by_seq.get(root)
    blob = None if root_row is None else root_row[18]
    if root_row is not None and blob is None and root_row[19] is not None:
        # A big snapshot on SQLite: read by itself, into one buffer (BLOB_INLINE).
        blob = yield Stmt("snapshot_blob", (root_row[19],), "blob")
    snapshot = None if blob is None else bytes(blob)  # the root's, read beside its header
    state = None if head[17] is None else bytes(head[17])
    chain, at = [_record(head, state, snapshot if root == top else None)], top
    while at != root:
        parent = chain[-1].parent_seq
        if parent is None or parent not in by_seq or parent >= at:
            raise CorruptCheckpoint(run_id, top, f"lineage broken at seq {at}")
        at = parent
        chain.append(_record(by_seq[at], None, snapshot if at == root else None))
    seqs = {r.seq for r in chain}
    try:
        rows = [_node(r) for r in node_rows if r[1] in seqs]
    except ValueError as exc:
        raise CorruptCheckpoint(run_id, top, str(exc)) from exc
    found_blobs: dict[bytes, tuple[str, bytes]] = {}
    for ref_seq, digest, recipe, data in blob_rows[0] if blob_rows else ():
        if ref_seq in seqs:
            found_blobs[bytes.fromhex(digest)] = (recipe, bytes(data))
    if not run_rows:
        raise CorruptCheckpoint(run_id, top, "the run's row is missing")
    run = _run(run_id, run_rows[0], None, None, None, None)
    chain.reverse()
    return Loaded(chain[-1], chain, rows, run, found_blobs)


@one_step
def checksum_at(run_id: str, seq: int) -> Txn[str | None]:
    """The checksum of checkpoint ``seq`` of the run (None: there is none)."""
    found = yield Stmt("cp_checksum", (run_id, seq))
    return str(found[0][0]) if found else None


@one_step
def run_info(run_id: str) -> Txn[RunInfo | None]:
    found = yield Stmt("run_one", (run_id, run_id))
    return _run(found[0][0], found[0][1:8], *found[0][8:]) if found else None


@one_step
def list_runs() -> Txn[list[RunInfo]]:
    rows = yield Stmt("runs")
    out = [_run(r[0], r[1:8], *r[8:]) for r in rows]
    # Sorted here: the database's collation may not order like Python's str.
    return sorted(out, key=lambda info: info.run_id)


@one_step
def blob_stats() -> Txn[tuple[int, int]]:
    """How many deduplicated blobs the store holds, and their stored bytes."""
    ((n, size),) = yield Stmt("blob_stats")
    return int(n), int(size or 0)


@one_step
def list_checkpoints(run_id: str) -> Txn[list[CheckpointRecord]]:
    rows = yield Stmt("cp_list", (run_id,))
    return [_record(r, None) for r in rows]

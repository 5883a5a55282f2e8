"""The LangGraph saver's SQL and transaction programs (``adapters.langgraph``).

Its two tables (the checkpoint index and the pending writes), their statements,
registered beside pitstop's own in both dialects at import, and the programs that
run them inside pitstop's store transactions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._core import SavePlan
from ..storage import _programs as P
from ..storage._programs import Stmt, Txn
from ..storage._queries import CHECKPOINTS, POSTGRES, SQLITE, placeholders

INDEX = "pitstop_langgraph_checkpoints"
WRITES = "pitstop_langgraph_writes"
_NO_SEQ = 2**62  # "every seq" for retire_before

# -- SQL: registered beside pitstop's own statements ----------------------------------
#
# A backend runs only statements it finds by key in its dialect, so this module adds
# its keys (all prefixed "langgraph_") to both dialects once, at import. The tables
# are created on first use (CREATE TABLE IF NOT EXISTS; under an advisory lock on
# PostgreSQL), not by pitstop's migrations.

_LIVE = f"JOIN {CHECKPOINTS} c ON c.run_id = i.run_id AND c.seq = i.seq AND c.retired = 0"
_WCOLS = ("thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, task_path, type, "
          "recipe, value, checksum")  # fmt: skip
_WKEY = "(thread_id, checkpoint_ns, checkpoint_id, task_id, idx)"
_SCOPES = {
    "all": "",
    "thread": "i.thread_id = ?",
    "ns": "i.thread_id = ? AND i.checkpoint_ns = ?",
}


def _ddl(pg: bool) -> tuple[str, str]:
    text = "TEXT NOT NULL"
    cid = 'TEXT COLLATE "C" NOT NULL' if pg else "TEXT NOT NULL"  # order = byte order
    blob, big, rowid = ("BYTEA", "BIGINT", "") if pg else ("BLOB", "INTEGER", " WITHOUT ROWID")
    index = (
        f"CREATE TABLE IF NOT EXISTS {INDEX} (thread_id {text}, checkpoint_ns {text}, "
        f"checkpoint_id {cid}, run_id {text}, seq {big} NOT NULL, lg_run_id TEXT, "
        f"PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)){rowid}"
    )
    writes = (
        f"CREATE TABLE IF NOT EXISTS {WRITES} (thread_id {text}, checkpoint_ns {text}, "
        f"checkpoint_id {cid}, task_id {text}, idx INTEGER NOT NULL, channel {text}, "
        f"task_path {text}, type {text}, recipe {text}, value {blob}, checksum {text}, "
        f"PRIMARY KEY {_WKEY}){rowid}"
    )
    return index, writes


def _list_sql(scope: str, by_id: bool, before: bool) -> str:
    where = [w for w in (_SCOPES[scope], "i.checkpoint_id = ?" if by_id else "",
                         "i.checkpoint_id < ?" if before else "") if w]  # fmt: skip
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    return (f"SELECT i.thread_id, i.checkpoint_ns, i.checkpoint_id, i.run_id, i.seq, c.metadata "
            f"FROM {INDEX} i {_LIVE}{cond} ORDER BY i.checkpoint_id DESC")  # fmt: skip


_SQL = {
    "langgraph_seq_of": f"SELECT i.seq FROM {INDEX} i {_LIVE} WHERE i.thread_id = ? "
    "AND i.checkpoint_ns = ? AND i.checkpoint_id = ?",
    "langgraph_latest": f"SELECT i.checkpoint_id, i.seq FROM {INDEX} i {_LIVE} "
    "WHERE i.thread_id = ? AND i.checkpoint_ns = ? ORDER BY i.checkpoint_id DESC LIMIT 1",
    "langgraph_run_live": f"SELECT i.checkpoint_id, i.seq FROM {INDEX} i {_LIVE} "
    "WHERE i.thread_id = ? AND i.checkpoint_ns = ? ORDER BY i.seq",
    "langgraph_thread_runs": f"SELECT DISTINCT checkpoint_ns, run_id FROM {INDEX} "
    "WHERE thread_id = ?",
    "langgraph_retire_replaced": f"UPDATE {CHECKPOINTS} SET retired = 1 WHERE run_id = ? "
    f"AND retired = 0 AND seq IN (SELECT seq FROM {INDEX} WHERE thread_id = ? "
    "AND checkpoint_ns = ? AND checkpoint_id = ? AND seq <> ?)",
    "langgraph_index_upsert": f"INSERT INTO {INDEX} (thread_id, checkpoint_ns, checkpoint_id, "
    "run_id, seq, lg_run_id) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thread_id, checkpoint_ns, "
    "checkpoint_id) DO UPDATE SET run_id = excluded.run_id, seq = excluded.seq, "
    "lg_run_id = excluded.lg_run_id",
    "langgraph_index_drop_thread": f"DELETE FROM {INDEX} WHERE thread_id = ?",
    "langgraph_index_drop_one": f"DELETE FROM {INDEX} WHERE thread_id = ? AND checkpoint_ns = ? "
    "AND checkpoint_id = ?",
    "langgraph_by_lg_run": f"SELECT thread_id, checkpoint_ns, checkpoint_id, run_id, seq "
    f"FROM {INDEX} WHERE lg_run_id IN ({{json_list}})",
    "langgraph_writes_get": "SELECT task_id, idx, channel, task_path, type, recipe, value, "
    f"checksum FROM {WRITES} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
    "langgraph_writes_of_thread": f"SELECT {_WCOLS} FROM {WRITES} WHERE thread_id = ?",
    "langgraph_writes_insert": f"INSERT INTO {WRITES} ({_WCOLS}) VALUES "
    f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT {_WKEY} DO NOTHING",
    "langgraph_writes_upsert": f"INSERT INTO {WRITES} ({_WCOLS}) VALUES "
    f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT {_WKEY} DO UPDATE SET "
    "channel = excluded.channel, task_path = excluded.task_path, type = excluded.type, "
    "recipe = excluded.recipe, value = excluded.value, checksum = excluded.checksum",
    "langgraph_writes_drop_thread": f"DELETE FROM {WRITES} WHERE thread_id = ?",
    "langgraph_writes_drop_one": f"DELETE FROM {WRITES} WHERE thread_id = ? "
    "AND checkpoint_ns = ? AND checkpoint_id = ?",
    "langgraph_writes_drop_except": f"DELETE FROM {WRITES} WHERE thread_id = ? "
    "AND checkpoint_ns = ? AND checkpoint_id <> ?",
    **{
        f"langgraph_list_{scope}_{int(by_id)}_{int(before)}": _list_sql(scope, by_id, before)
        for scope in _SCOPES
        for by_id in (False, True)
        for before in (False, True)
    },
}


def _register() -> None:
    for dialect in (SQLITE, POSTGRES):
        pg = dialect.name == "postgresql"
        json_list = ("SELECT jsonb_array_elements_text(?::jsonb)" if pg
                     else "SELECT value FROM json_each(?)")  # fmt: skip
        index, writes = _ddl(pg)
        texts = dict(_SQL, langgraph_ddl_index=index, langgraph_ddl_writes=writes)
        # Concurrent first uses would race on CREATE TABLE in PostgreSQL.
        texts["langgraph_lock"] = "SELECT pg_advisory_xact_lock(7070747475)" if pg else "SELECT 1"
        texts["langgraph_tables"] = (
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE c.relname IN ('{INDEX}', '{WRITES}') "
            "AND n.nspname = current_schema()"
            if pg
            else f"SELECT name FROM sqlite_master WHERE type = 'table' "
            f"AND name IN ('{INDEX}', '{WRITES}')"
        )
        for key, text in texts.items():
            dialect.sql[key] = placeholders(dialect.name, text.replace("{json_list}", json_list))


_register()


# -- transaction programs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Where:
    thread_id: str
    ns: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Found:
    where: Where
    checkpoint_id: str
    seq: int
    loaded: P.Loaded
    writes: list[Sequence[Any]]


def langgraph_setup() -> Txn[None]:
    yield Stmt("langgraph_lock")
    yield Stmt("langgraph_ddl_index", (), "exec")
    yield Stmt("langgraph_ddl_writes", (), "exec")


@P.one_step
def langgraph_tables() -> Txn[int]:
    found = yield Stmt("langgraph_tables")
    return len(found)


def langgraph_put(
    plan: SavePlan, where: Where, checkpoint_id: str, parent_id: str | None, lg_run_id: str | None
) -> Txn[int | None]:
    """Save the checkpoint and index it; None when the delta's base chain is gone."""
    if plan.snapshot and plan.parent_seq is None and parent_id is not None:
        # A snapshot needs no parent rows, but pitstop's lineage still names the parent.
        found = yield Stmt("langgraph_seq_of", (where.thread_id, where.ns, parent_id))
        plan.parent_seq = found[0][0] if found else None
    saved = yield from P.save(plan)
    if saved.seq is None:
        return None
    key = (where.thread_id, where.ns, checkpoint_id)
    # Putting a checkpoint id again replaces it (as LangGraph's savers do).
    yield Stmt("langgraph_retire_replaced", (where.run_id, *key, saved.seq), "exec")
    yield Stmt("langgraph_index_upsert", (*key, where.run_id, saved.seq, lg_run_id), "exec")
    return saved.seq


def langgraph_get(where: Where, checkpoint_id: str | None) -> Txn[Found | None]:
    """The checkpoint (latest when no id), everything its chain reads, its writes."""
    if checkpoint_id is None:
        found = yield Stmt("langgraph_latest", (where.thread_id, where.ns))
        if not found:
            return None
        checkpoint_id, seq = found[0]
    else:
        found = yield Stmt("langgraph_seq_of", (where.thread_id, where.ns, checkpoint_id))
        if not found:
            return None
        seq = found[0][0]
    loaded = yield from _load(where.run_id, seq)
    writes = yield Stmt("langgraph_writes_get", (where.thread_id, where.ns, checkpoint_id))
    return Found(where, str(checkpoint_id), int(seq), loaded, list(writes))


def _load(run_id: str, seq: int) -> Txn[P.Loaded]:
    """pitstop's ``load`` program: it costs the chain, not the thread's history (the
    chain is one index range, the run is read as its row alone)."""
    loaded: P.Loaded = yield from P.load(run_id, seq)
    return loaded


@P.one_step
def langgraph_list(key: str, params: tuple[Any, ...]) -> Txn[list[Sequence[Any]]]:
    rows = yield Stmt(key, params)
    return list(rows)


def langgraph_put_writes(rows: list[tuple[Any, ...]], replace: bool) -> Txn[None]:
    if rows:
        yield Stmt("langgraph_writes_upsert" if replace else "langgraph_writes_insert", rows,
                   "many")  # fmt: skip


def _drop_runs(runs: Sequence[str]) -> Txn[None]:
    for run_id in sorted(set(runs)):
        yield Stmt("retire_before", (run_id, _NO_SEQ), "exec")
        yield from P._collect(run_id)


def langgraph_delete_thread(thread_id: str) -> Txn[list[str]]:
    found = yield Stmt("langgraph_thread_runs", (thread_id,))
    runs = [r for _, r in found]
    yield Stmt("langgraph_index_drop_thread", (thread_id,), "exec")
    yield Stmt("langgraph_writes_drop_thread", (thread_id,), "exec")
    yield from _drop_runs(runs)
    return runs


def _drop_checkpoints(doomed: Sequence[Sequence[Any]]) -> Txn[list[str]]:
    """Retire (thread, ns, checkpoint id, run id, seq) rows, drop their index rows and
    writes, then collect what no live checkpoint reads."""
    runs: set[str] = set()
    for thread_id, ns, checkpoint_id, run_id, seq in doomed:
        yield Stmt("retire_one", (run_id, seq), "exec")
        yield Stmt("langgraph_index_drop_one", (thread_id, ns, checkpoint_id), "exec")
        yield Stmt("langgraph_writes_drop_one", (thread_id, ns, checkpoint_id), "exec")
        runs.add(run_id)
    for run_id in sorted(runs):
        yield from P._collect(run_id)
    return sorted(runs)


def langgraph_delete_for_runs(lg_run_ids: list[str]) -> Txn[list[str]]:
    found = yield Stmt("langgraph_by_lg_run", (json.dumps(lg_run_ids),))
    return (yield from _drop_checkpoints(list(found)))


def langgraph_keep_latest(thread_id: str) -> Txn[list[str]]:
    found = yield Stmt("langgraph_thread_runs", (thread_id,))
    doomed: list[tuple[Any, ...]] = []
    for ns, run_id in found:
        live = yield Stmt("langgraph_run_live", (thread_id, ns))
        if not live:
            continue
        keep = max(str(cid) for cid, _ in live)
        doomed.extend((thread_id, ns, cid, run_id, seq) for cid, seq in live if cid != keep)
        yield Stmt("langgraph_writes_drop_except", (thread_id, ns, keep), "exec")
    return (yield from _drop_checkpoints(doomed))


def langgraph_thread(thread_id: str) -> Txn[tuple[list[Sequence[Any]], list[Sequence[Any]]]]:
    """A thread's live checkpoints (ns, checkpoint id, seq, run id) by seq, and its writes."""
    found = yield Stmt("langgraph_thread_runs", (thread_id,))
    live: list[Sequence[Any]] = []
    for ns, run_id in found:
        rows = yield Stmt("langgraph_run_live", (thread_id, ns))
        live.extend((ns, cid, seq, run_id) for cid, seq in rows)
    writes = yield Stmt("langgraph_writes_of_thread", (thread_id,))
    return live, list(writes)

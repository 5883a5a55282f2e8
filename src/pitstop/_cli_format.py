"""Data and text shapes of the ``pitstop`` command's output.

Every command first builds plain JSON data (what ``--json`` prints); the text
renderers below turn that same data into tables, so both views always agree.
Timestamps are ISO 8601 in UTC: full precision in JSON, seconds in text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ._types import Checkpoint, CheckpointInfo, NodeState, NodeStatus, RunInfo

Data = dict[str, Any]

_STATUSES = ("completed", "interrupted", "failed", "pending")
_BY_STATUS = {
    NodeStatus.COMPLETED: "completed",
    NodeStatus.RUNNING: "interrupted",
    NodeStatus.FAILED: "failed",
    NodeStatus.PENDING: "pending",
}


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def when(value: str | None) -> str:
    """An ISO timestamp from the data, shortened to seconds for text."""
    if value is None:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")


def jsonable(value: Any) -> tuple[Any, bool]:
    """``(value, False)`` when it survives JSON unchanged, else ``(repr(value), True)``."""
    try:
        if json.loads(json.dumps(value, allow_nan=False)) == value:
            return value, False
    except (TypeError, ValueError, RecursionError):
        pass
    return repr(value), True


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h).upper() for h in headers]]
    cells += [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


# -- data builders -----------------------------------------------------------


def run_data(r: RunInfo) -> Data:
    return {
        "run_id": r.run_id,
        "checkpoints": r.checkpoints,
        "first_seq": r.first_seq,
        "latest_seq": r.latest_seq,
        "latest_at": iso(r.latest_at),
        "size": r.size,
    }


def info_data(i: CheckpointInfo) -> Data:
    """The header of a checkpoint (metadata is kept apart by the callers)."""
    return {
        "run_id": i.run_id,
        "seq": i.seq,
        "parent_seq": i.parent_seq,
        "created_at": iso(i.created_at),
        "trigger": i.trigger,
        "label": i.label,
        "node": i.node,
        "schema_version": i.schema_version,
        "serializer": i.serializer,
        "checksum": i.checksum,
        "size": i.size,
        "nodes_written": i.nodes_written,
    }


def node_data(n: NodeState) -> Data:
    output, is_repr = jsonable(n.output)
    out: Data = {
        "status": str(n.status),
        "output": output,
        "attempt": n.attempt,
        "error": n.error,
        "started_at": iso(n.started_at),
        "finished_at": iso(n.finished_at),
        "deps": list(n.deps),
    }
    if is_repr:
        out["output_repr"] = True
    return out


def show_data(cp: Checkpoint, *, outputs: bool) -> Data:
    groups: dict[str, list[str]] = {s: [] for s in _STATUSES}
    for node_id in sorted(cp.nodes):
        groups[_BY_STATUS[cp.nodes[node_id].status]].append(node_id)
    nodes = [cp.nodes[k] for k in sorted(cp.nodes)]
    data: Data = {
        "info": info_data(cp.info),
        "verified": True,
        "counts": {"total": len(nodes), **{s: len(ids) for s, ids in groups.items()}},
        **groups,
        "attempts": {n.node_id: n.attempt for n in nodes},
        "errors": {n.node_id: n.error for n in nodes if n.error is not None},
        "metadata": dict(cp.metadata),
    }
    if outputs:
        data["outputs"] = {}
        data["outputs_repr"] = []
        for n in nodes:
            if n.output is not None or n.status is NodeStatus.COMPLETED:
                value, is_repr = jsonable(n.output)
                data["outputs"][n.node_id] = value
                if is_repr:
                    data["outputs_repr"].append(n.node_id)
        data["state"], data["state_repr"] = jsonable(cp.state)
    return data


def export_data(cp: Checkpoint) -> Data:
    state, state_repr = jsonable(cp.state)
    return {
        "format": "pitstop.export",
        "version": 1,
        "info": info_data(cp.info),
        "nodes": {k: node_data(cp.nodes[k]) for k in sorted(cp.nodes)},
        "state": state,
        "state_repr": state_repr,
        "metadata": dict(cp.metadata),
    }


def diff_data(a: Checkpoint, b: Checkpoint) -> Data:
    """Node-level changes from checkpoint ``a`` to ``b`` (outputs compared with ``==``)."""
    changes: list[Data] = []
    for node_id in sorted(set(a.nodes) | set(b.nodes)):
        old, new = a.nodes.get(node_id), b.nodes.get(node_id)
        if old is None and new is not None:
            changes.append({"node_id": node_id, "change": "added", "status": str(new.status)})
            continue
        if old is None or new is None:
            gone = str(old.status) if old is not None else None
            changes.append({"node_id": node_id, "change": "removed", "status": gone})
            continue
        entry: Data = {"node_id": node_id, "change": "changed"}
        if old.status is not new.status:
            entry["status"] = [str(old.status), str(new.status)]
        if old.output != new.output:
            entry["output_changed"] = True
        if old.attempt != new.attempt:
            entry["attempt"] = [old.attempt, new.attempt]
        if old.error != new.error:
            entry["error"] = [old.error, new.error]
        if old.deps != new.deps:
            entry["deps"] = [list(old.deps), list(new.deps)]
        if len(entry) > 2:
            changes.append(entry)
    return {
        "run_id": a.run_id,
        "from_seq": a.seq,
        "to_seq": b.seq,
        "nodes": changes,
        "state_changed": a.state != b.state,
        "metadata_changed": dict(a.metadata) != dict(b.metadata),
    }


# -- text renderers ----------------------------------------------------------


def runs_text(data: list[Data]) -> str:
    if not data:
        return "no runs"
    head = ("run_id", "checkpoints", "first", "latest", "latest_at", "size")
    keys = ("run_id", "checkpoints", "first_seq", "latest_seq", "latest_at", "size")
    return table(head, [[when(r[k]) if k == "latest_at" else r[k] for k in keys] for r in data])


def list_text(data: list[Data]) -> str:
    head = ("seq", "parent", "created", "trigger", "label", "node", "written", "size", "ser")
    keys = (
        "seq",
        "parent_seq",
        "created_at",
        "trigger",
        "label",
        "node",
        "nodes_written",
        "size",
        "serializer",
    )
    return table(head, [[when(r[k]) if k == "created_at" else r[k] for k in keys] for r in data])


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def show_text(data: Data) -> str:
    i = data["info"]
    lines = [f"run {i['run_id']!r} seq {i['seq']} (checksums verified)"]
    fields = (
        "parent_seq",
        "trigger",
        "label",
        "node",
        "serializer",
        "schema_version",
        "size",
        "nodes_written",
        "checksum",
    )
    lines.append(f"  {'created':<15}{when(i['created_at'])}")
    lines += [f"  {k:<15}{'-' if i[k] is None else i[k]}" for k in fields]
    c = data["counts"]
    lines.append("nodes: " + ", ".join(f"{c[s]} {s}" for s in ("total", *_STATUSES)))
    lines += [f"  {s:<15}{', '.join(data[s]) or '-'}" for s in _STATUSES]
    attempts = " ".join(f"{k}={v}" for k, v in data["attempts"].items())
    lines.append(f"attempts: {attempts or '-'}")
    lines.append("errors:" + ("" if data["errors"] else " -"))
    lines += [f"  {k}: {v}" for k, v in data["errors"].items()]
    lines.append(f"metadata: {json.dumps(data['metadata'], sort_keys=True)}")
    if "outputs" in data:
        lines.append("outputs:" + ("" if data["outputs"] else " -"))
        for k, v in data["outputs"].items():
            mark = " (repr)" if k in data["outputs_repr"] else ""
            lines.append(f"  {k}: {_short(v)}{mark}")
        mark = " (repr)" if data["state_repr"] else ""
        lines.append(f"state: {_short(data['state'])}{mark}")
    return "\n".join(lines)


def diff_text(data: Data) -> str:
    lines = [f"run {data['run_id']!r}: seq {data['from_seq']} -> {data['to_seq']}"]
    rows = []
    for e in data["nodes"]:
        if e["change"] != "changed":
            rows.append([e["node_id"], f"{e['change']} ({e['status']})"])
            continue
        parts = [f"{k} {e[k][0]} -> {e[k][1]}" for k in ("status", "attempt") if k in e]
        parts += ["output changed"] if e.get("output_changed") else []
        parts += ["error changed"] if "error" in e else []
        parts += ["deps changed"] if "deps" in e else []
        rows.append([e["node_id"], "; ".join(parts)])
    lines.append(table(("node", "change"), rows) if rows else "no node changes")
    yes = {True: "yes", False: "no"}
    lines.append(f"state changed: {yes[data['state_changed']]}")
    lines.append(f"metadata changed: {yes[data['metadata_changed']]}")
    return "\n".join(lines)


def removed_text(data: Data) -> str:
    seqs = ", ".join(map(str, data["removed"])) or "none"
    verb = "pruned" if "kept" in data else "deleted"
    text = f"{verb} {len(data['removed'])} checkpoint(s) of run {data['run_id']!r}: {seqs}"
    if "kept" in data:
        text += f"\nkept: {', '.join(map(str, data['kept'])) or 'none'}"
    return text


def stats_text(data: Data) -> str:
    rows = [[k.replace("_", " "), when(v) if k == "latest_at" else v] for k, v in data.items()]
    return "\n".join(f"{k:<20}{v}" for k, v in rows)

"""Data and text shapes of the ``pitstop`` command's output.

Every command first builds plain JSON data (what ``--json`` prints); the text
renderers below turn that same data into tables, so both views always agree.
Timestamps are ISO 8601 in UTC: full precision in JSON, seconds in text. A
stored time that is not a time (damage) prints as ``invalid time <value>``
instead of stopping the command.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from ._types import Checkpoint, CheckpointInfo, NodeState, NodeStatus, RunInfo, RunStatus

Data = dict[str, Any]

_STATUSES = ("completed", "interrupted", "failed", "pending")
_BY_STATUS = {
    NodeStatus.COMPLETED: "completed",
    NodeStatus.RUNNING: "interrupted",
    NodeStatus.FAILED: "failed",
    NodeStatus.PENDING: "pending",
}
ERROR_WIDTH = 60
"""Characters of a run's error shown by ``pitstop runs`` (``--json`` has all of it)."""


def valid_time(ts: object) -> float | None:
    """``ts`` as a float when it is a time datetime can represent, else None."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return None
    try:
        datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return float(ts)


def iso(ts: object) -> str | None:
    """ISO 8601 UTC for a stored time; never raises, whatever the column held."""
    if ts is None:
        return None
    good = valid_time(ts)
    if good is None:
        return f"invalid time {ts!r}"
    return datetime.fromtimestamp(good, UTC).isoformat()


def when(value: str | None) -> str:
    """An ISO timestamp from the data, shortened to seconds for text."""
    if value is None:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")
    except ValueError:
        return value  # "invalid time ..." from iso()


def jsonable(value: Any) -> tuple[Any, bool]:
    """``(value, False)`` when it survives JSON unchanged, else ``(repr(value), True)``."""
    try:
        if json.loads(json.dumps(value, allow_nan=False)) == value:
            return value, False
    except (TypeError, ValueError, RecursionError):
        pass
    return repr(value), True


def exportable(value: Any) -> tuple[Any, str | None]:
    """A value as JSON for ``export``: ``(value, None)`` when JSON holds it unchanged;
    ``(converted, "converted")`` for typed values JSON has no type for (datetimes as
    ISO text, tuples and sets as lists, arrays as nested lists, frames as
    ``{"columns", "index", "data"}``, ...); else ``(repr(value), "repr")``."""
    same, is_repr = jsonable(value)
    if not is_repr:
        return same, None
    try:
        converted = _convert(value, 0)
        json.dumps(converted, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value), "repr"
    return converted, "converted"


def _convert(value: Any, depth: int) -> Any:
    if depth > 200:
        raise ValueError("nested too deep")
    d = depth + 1
    if value is None or isinstance(value, (bool, int, str)):
        return value if type(value) in (bool, int, str) or value is None else _scalar(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (Decimal, UUID, PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, Enum):
        return _convert(value.value, d)
    if isinstance(value, dict):
        if all(type(k) is str for k in value):
            return {k: _convert(v, d) for k, v in value.items()}
        return {"pairs": [[_convert(k, d), _convert(v, d)] for k, v in value.items()]}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _convert(v, d) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_convert(v, d) for v in value]
        return sorted(items, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _convert(getattr(value, f.name), d) for f in dataclasses.fields(value)}
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if module == "pydantic" or hasattr(value, "model_fields"):
        return {k: _convert(getattr(value, k), d) for k in type(value).model_fields}
    if module == "numpy":
        return _convert(value.tolist(), d)
    if module == "pandas":
        name = kind.__name__
        if name == "DataFrame":
            split = value.to_dict(orient="split")
            return {"columns": _convert(split["columns"], d), "index": _convert(split["index"], d),
                    "data": _convert(split["data"], d)}  # fmt: skip
        if name == "Series":
            return {"name": _convert(value.name, d), "index": _convert(list(value.index), d),
                    "data": _convert(value.tolist(), d)}  # fmt: skip
        if hasattr(value, "tolist"):
            return _convert(value.tolist(), d)
        if value is value.__class__.__dict__.get("NA") or repr(value) in ("<NA>", "NaT"):
            return None
    fields = getattr(value, "__dict__", None)
    if isinstance(fields, dict) and fields:  # a plain object (a custom codec's type, say)
        return {str(k): _convert(v, d) for k, v in fields.items() if not str(k).startswith("_")}
    raise TypeError(f"no JSON form for {kind.__qualname__}")


def _scalar(value: Any) -> Any:
    """A subclass of bool, int or str (an IntEnum member, a numpy str): its plain value."""
    if isinstance(value, Enum):
        return _convert(value.value, 1)
    for base in (bool, int, str):
        if isinstance(value, base):
            return base(value)
    raise TypeError(type(value).__qualname__)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def _cell(value: object) -> str:
    # A label or run id holding a newline or a tab must not break the table.
    text = "-" if value is None else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h).upper() for h in headers]]
    cells += [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def shorten(text: str | None, width: int = ERROR_WIDTH) -> str | None:
    """One line of at most ``width`` characters (whitespace runs collapsed)."""
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


# -- data builders -----------------------------------------------------------


def run_data(r: RunInfo) -> Data:
    return {
        "run_id": r.run_id,
        "status": str(r.status),
        "attempt": r.attempt,
        "can_resume": r.can_resume,
        "checkpoints": r.checkpoints,
        "latest_seq": r.latest_seq,
        "last_seq": r.last_seq,
        "latest_at": iso(r.latest_at),
        "size": r.size,
        "started_at": iso(r.started_at),
        "ended_at": iso(r.ended_at),
        "error": r.error,
        "graph_fingerprint": r.graph_fingerprint,
    }


def info_data(i: CheckpointInfo) -> Data:
    """The header of a checkpoint (metadata is kept apart by the callers)."""
    return {
        "run_id": i.run_id,
        "seq": i.seq,
        "parent_seq": i.parent_seq,
        "root_seq": i.root_seq,
        "snapshot": i.snapshot,
        "created_at": iso(i.created_at),
        "trigger": i.trigger,
        "label": i.label,
        "node": i.node,
        "schema_version": i.schema_version,
        "serializer": i.serializer,
        "checksum": i.checksum,
        "size": i.size,
        "nodes_written": i.nodes_written,
        "node_count": i.node_count,
    }


def list_data(i: CheckpointInfo) -> Data:
    return {**info_data(i), "metadata": dict(i.metadata)}


def node_data(n: NodeState, *, convert: bool = False) -> Data:
    if convert:
        output, how = exportable(n.output)
        is_repr = how == "repr"
    else:
        output, is_repr = jsonable(n.output)
        how = "repr" if is_repr else None
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
    if how == "converted":
        out["output_converted"] = True
    return out


def show_data(cp: Checkpoint, *, outputs: bool) -> Data:
    """Statuses always; values only with ``outputs`` (the checkpoint was decoded)."""
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
    stale = {n.node_id: n.error[7:] for n in nodes if n.status is NodeStatus.PENDING
             and n.error is not None and n.error.startswith("stale: ")}  # fmt: skip
    if stale:  # a resume found their fingerprints (or one upstream) changed
        data["stale"] = stale
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
    state, how = exportable(cp.state)
    return {
        "format": "pitstop.export",
        "version": 1,
        "info": info_data(cp.info),
        "nodes": {k: node_data(cp.nodes[k], convert=True) for k in sorted(cp.nodes)},
        "state": state,
        "state_repr": how == "repr",
        "state_converted": how == "converted",
        "metadata": dict(cp.metadata),
    }


def diff_data(a: Checkpoint, b: Checkpoint, *, outputs: bool) -> Data:
    """Node-level changes from checkpoint ``a`` to ``b``.

    Outputs and state are compared (with ``==``) only when both were decoded
    (``outputs``); otherwise ``state_changed`` is None and no node says
    ``output_changed``.
    """
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
        if outputs and old.output != new.output:
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
        "outputs_compared": outputs,
        "state_changed": (a.state != b.state) if outputs else None,
        "metadata_changed": dict(a.metadata) != dict(b.metadata),
    }


def stats_data(runs: Sequence[RunInfo], node_rows: int, blobs: tuple[int, int]) -> Data:
    times = [t for t in (valid_time(r.latest_at) for r in runs) if t is not None]
    largest = max(runs, key=lambda r: r.size, default=None)
    return {
        "runs": len(runs),
        "by_status": {str(s): sum(r.status is s for r in runs) for s in RunStatus},
        "checkpoints": sum(r.checkpoints for r in runs),
        "bytes": sum(r.size for r in runs),
        "node_rows_written": node_rows,
        "blobs": blobs[0],
        "blob_bytes": blobs[1],
        "latest_at": iso(max(times, default=None)),
        "largest_run": None if largest is None else largest.run_id,
    }


# -- text renderers ----------------------------------------------------------


def runs_text(data: list[Data]) -> str:
    if not data:
        return "no runs"
    head = ("run_id", "status", "attempt", "checkpoints", "latest", "last_seq", "latest_at",
            "size", "error")  # fmt: skip
    keys = ("run_id", "status", "attempt", "checkpoints", "latest_seq", "last_seq")
    rows = [
        [*(r[k] for k in keys), when(r["latest_at"]), r["size"], shorten(r["error"])] for r in data
    ]
    return table(head, rows)


def list_text(data: list[Data]) -> str:
    head = ("seq", "parent", "created", "trigger", "label", "node", "written", "nodes", "size",
            "ser")  # fmt: skip
    keys = ("seq", "parent_seq", "created_at", "trigger", "label", "node", "nodes_written",
            "node_count", "size", "serializer")  # fmt: skip
    return table(head, [[when(r[k]) if k == "created_at" else r[k] for k in keys] for r in data])


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def show_text(data: Data) -> str:
    i = data["info"]
    lines = [f"run {i['run_id']!r} seq {i['seq']} (checksums verified)"]
    fields = ("parent_seq", "root_seq", "trigger", "label", "node", "serializer",
              "schema_version", "size", "nodes_written", "node_count", "checksum")  # fmt: skip
    lines.append(f"  {'created':<15}{when(i['created_at'])}")
    lines += [f"  {k:<15}{_cell(i[k])}" for k in fields]
    c = data["counts"]
    lines.append("nodes: " + ", ".join(f"{c[s]} {s}" for s in ("total", *_STATUSES)))
    lines += [f"  {s:<15}{', '.join(data[s]) or '-'}" for s in _STATUSES]
    attempts = " ".join(f"{k}={v}" for k, v in data["attempts"].items())
    lines.append(f"attempts: {attempts or '-'}")
    lines.append("errors:" + ("" if data["errors"] else " -"))
    lines += [f"  {k}: {v}" for k, v in data["errors"].items()]
    lines.append(f"metadata: {json.dumps(data['metadata'], sort_keys=True)}")
    if "stale" in data:
        lines.append("stale (will run again):")
        lines += [f"  {k}: {v}" for k, v in data["stale"].items()]
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
    if data["outputs_compared"]:
        lines.append(f"state changed: {yes[data['state_changed']]}")
    else:
        lines.append("outputs, state: not compared (add --outputs)")
    lines.append(f"metadata changed: {yes[data['metadata_changed']]}")
    return "\n".join(lines)


def removed_text(data: Data) -> str:
    seqs = ", ".join(map(str, data["removed"])) or "none"
    verb = "pruned" if "kept" in data else "deleted"
    text = f"{verb} {len(data['removed'])} checkpoint(s) of run {data['run_id']!r}: {seqs}"
    if "kept" in data:
        text += f"\nkept: {', '.join(map(str, data['kept'])) or 'none'}"
    return text


def export_text(data: Data) -> str:
    if "path" in data:
        return f"exported run {data['run_id']!r} seq {data['seq']} to {data['path']}"
    return dumps(data)


def stats_text(data: Data) -> str:
    rows = []
    for k, v in data.items():
        if k == "latest_at":
            v = when(v)
        elif k == "by_status":
            v = ", ".join(f"{n} {s}" for s, n in v.items())
        rows.append((k.replace("_", " "), v))
    return "\n".join(f"{k:<20}{v}" for k, v in rows)

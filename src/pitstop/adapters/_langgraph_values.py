"""The LangGraph saver's encodings: run ids, channel versions, list tails, configs
(``adapters.langgraph``)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint

from .._core import SavePlan
from .._records import NodeRow
from .._types import check_id
from ._langgraph_sql import Where

FULL = "langgraph"
"""Serializer tag of a row holding a whole value (LangGraph type + NUL + bytes)."""
APPEND = "langgraph-append"
"""Serializer tag of a row holding the items appended to a list (count + NUL + bytes)."""
TRIGGER = "langgraph"
MISSING = object()

# -- encodings --------------------------------------------------------------------------


CANON = msgspec.msgpack.Encoder()
DECODE_ROWS = msgspec.msgpack.Decoder(list[NodeRow])
ESCAPE = re.compile(r"[%/]")


def run_id_of(thread_id: str, checkpoint_ns: str) -> str:
    """The pitstop run of a LangGraph thread and namespace (``/`` and ``%`` escaped)."""

    def esc(text: str) -> str:
        return ESCAPE.sub(lambda m: "%25" if m.group() == "%" else "%2F", text)

    return check_id("run_id", f"langgraph/{esc(thread_id)}/{esc(checkpoint_ns)}")


def version_text(version: Any) -> str:
    """A channel version as stored in its row's fingerprint (JSON: int and str stay apart)."""
    return str(version) if type(version) is int else json.dumps(version, separators=(",", ":"))


def array_of(data: bytes) -> tuple[int, int] | None:
    """(items, header length) when ``data`` starts with a msgpack array header in its
    shortest form (the one ``array_header`` writes back, so joining tails onto it gives
    the very bytes the serializer wrote)."""
    if not data:
        return None
    first = data[0]
    if 0x90 <= first <= 0x9F:
        n, head = first & 0x0F, 1
    elif first == 0xDC and len(data) >= 3:
        n, head = int.from_bytes(data[1:3], "big"), 3
    elif first == 0xDD and len(data) >= 5:
        n, head = int.from_bytes(data[1:5], "big"), 5
    else:
        return None
    return (n, head) if len(array_header(n)) == head else None


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def write_checksum(parts: tuple[Any, ...]) -> str:
    return hashlib.sha256(CANON.encode(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class Base:
    """What this saver knows of a stored checkpoint, to write its children as deltas."""

    checkpoint_id: str
    seq: int
    root_seq: int
    since_snapshot: int
    ids: frozenset[str]
    """Node ids in the checkpoint's view (every channel its chain wrote)."""
    versions: dict[str, Any]
    lists: dict[str, tuple[int, bytes, int]]
    """Channel -> (items, msgpack bytes, header length) of values that are msgpack arrays."""
    checksum: str
    """The checkpoint's checksum as stored: a delta on it checks that its seq still
    holds it (a seq is given again after commits were lost). Required: an empty one
    would never match, and every child would be written whole."""


@dataclass(slots=True)
class Plan:
    plan: SavePlan
    ids: frozenset[str]
    lists: dict[str, tuple[int, bytes, int]]
    since_snapshot: int


# -- helpers ----------------------------------------------------------------------------


def where_of(config: RunnableConfig) -> Where:
    conf = config.get("configurable") or {}
    if "thread_id" not in conf:
        raise ValueError("config['configurable'] needs a 'thread_id'")
    thread_id = str(conf["thread_id"])
    ns = str(conf.get("checkpoint_ns") or "")
    return Where(thread_id, ns, run_id_of(thread_id, ns))


def config_of(where: Where, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": where.thread_id, "checkpoint_ns": where.ns,
                             "checkpoint_id": checkpoint_id}}  # fmt: skip


def trigger_of(meta: Mapping[str, Any]) -> str:
    source = meta.get("source")
    return f"{TRIGGER}.{source}" if isinstance(source, str) and source else TRIGGER


def json_contains(found: Any, wanted: Any) -> bool:
    """PostgreSQL ``@>`` on JSON for dicts (every key present, recursively); equality else
    (``1 == 1.0`` as JSON numbers, but ``True`` is not ``1``)."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(
            k in found and json_contains(found[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, bool) or isinstance(found, bool):
        return type(found) is type(wanted) and found == wanted
    return bool(found == wanted)


def changed_channels(new: Checkpoint, old: Checkpoint | None) -> ChannelVersions:
    """Channels of ``new`` whose version or value differs from ``old`` (all without one)."""
    versions = new["channel_versions"]
    if old is None:
        return dict(versions)
    out: ChannelVersions = {}
    ov, vals, ovals = old["channel_versions"], new["channel_values"], old["channel_values"]
    for ch, v in versions.items():
        try:
            same = ov.get(ch, MISSING) == v and vals.get(ch, MISSING) == ovals.get(ch, MISSING)
        except Exception:  # values that cannot be compared are copied
            same = False
        if not same:
            out[ch] = v
    return out

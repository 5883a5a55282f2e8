"""The read side of the LangGraph saver: which checkpoints ``list`` returns, and a
loaded checkpoint verified and decoded into a ``CheckpointTuple``
(``adapters.langgraph``)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    writes_sort_key,
)

from .._codec import verify
from .._errors import CorruptCheckpoint
from .._program import gc_paused
from .._records import COMPLETED, PENDING, NodeRow
from .._serde import decode_metadata
from ..codecs._envelope import Envelope, parse
from ..storage._programs import Txn
from ._langgraph_sql import Found, Where, langgraph_get, langgraph_list
from ._langgraph_values import (
    APPEND,
    DECODE_ROWS,
    FULL,
    Base,
    array_header,
    array_of,
    config_of,
    json_contains,
    version_text,
    write_checksum,
)

R = TypeVar("R")


class ReadSide:
    """Mixed into ``PitstopSaver``: its reads, apart from its writes."""

    if TYPE_CHECKING:  # what the reads use of the saver, defined there
        _envelope: Envelope

        def _run(self, program: Callable[..., Txn[R]], *args: Any, write: bool = False) -> R: ...

        def _loads(self, what: str, type_: str, data: bytes) -> Any: ...

        def _remember(self, run_id: str, base: Base, drop: str | None = None) -> None: ...

    def _list_keys(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[tuple[Where, str]]:
        """Which checkpoints ``list`` returns, newest first (metadata filtered here)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
        params: list[Any] = []
        scope, by_id = "all", False
        if config is not None:
            conf = config.get("configurable") or {}
            if "thread_id" not in conf:
                raise ValueError("config['configurable'] needs a 'thread_id'")
            params.append(str(conf["thread_id"]))
            scope = "thread"
            if conf.get("checkpoint_ns") is not None:
                params.append(str(conf["checkpoint_ns"]))
                scope = "ns"
            if checkpoint_id := get_checkpoint_id(config):
                params.append(checkpoint_id)
                by_id = True
        cursor = None if before is None else get_checkpoint_id(before)
        if cursor is not None:
            params.append(cursor)
        key = f"langgraph_list_{scope}_{int(by_id)}_{int(cursor is not None)}"
        rows = self._run(langgraph_list, key, tuple(params))
        out: builtins.list[tuple[Where, str]] = []
        for thread_id, ns, checkpoint_id, run_id, seq, meta in rows:
            if limit is not None and len(out) >= limit:
                break
            if filter:
                try:
                    found = decode_metadata(bytes(meta))
                except ValueError as exc:
                    raise CorruptCheckpoint(run_id, seq, f"damaged metadata: {exc}") from exc
                if not json_contains(found, filter):
                    continue
            out.append((Where(thread_id, ns, run_id), checkpoint_id))
        return out

    def _get_listed(self, key: tuple[Where, str]) -> CheckpointTuple | None:
        found = self._run(langgraph_get, key[0], key[1])
        return None if found is None else self._build(found, remember=False)

    def _open(
        self, row: NodeRow, blobs: Mapping[bytes, tuple[str, bytes]], what: str
    ) -> tuple[str, bytes]:
        """(serializer name, plain payload) of a stored row."""
        ser, _, ref = parse(row.serializer)
        out = row.output or b""
        if not ref:
            return self._envelope.open(row.serializer, out)
        found = blobs.get(out)
        if found is None:
            raise ValueError(f"{what}: its blob is missing")
        recipe, stored = found
        plain = self._envelope.open_blob(ser, recipe, stored)
        if self._envelope.digest_of(recipe, plain) != out:
            raise ValueError(f"{what}: its blob does not match its digest")
        return ser, plain

    def _build(self, found: Found, *, remember: bool) -> CheckpointTuple:
        """Verify a loaded checkpoint and decode it into a CheckpointTuple."""
        loaded, where, seq = found.loaded, found.where, found.seq
        record = loaded.record
        view = verify(record, loaded.chain, loaded.rows, seq)
        run_id = where.run_id

        def corrupt(reason: str) -> CorruptCheckpoint:
            return CorruptCheckpoint(run_id, seq, reason)

        try:
            meta = decode_metadata(record.metadata)
            if record.state is None:
                raise ValueError("the checkpoint has no state")
            ser, plain = self._envelope.open(record.serializer, record.state)
            type_, sep, data = plain.partition(b"\x00")
            if ser != FULL or not sep:
                raise ValueError(f"state written by {ser!r}, not {FULL!r}")
        except ValueError as exc:
            raise corrupt(str(exc)) from exc
        state = self._loads("checkpoint", type_.decode(), data)
        if not isinstance(state, dict) or not isinstance(state.get("checkpoint"), dict):
            raise corrupt("the state is not a LangGraph checkpoint")
        head: dict[str, Any] = dict(state["checkpoint"])
        if head.get("id") != found.checkpoint_id:
            raise corrupt(f"indexed as {found.checkpoint_id!r}, the state says {head.get('id')!r}")
        parent_id = state.get("parent")
        versions: dict[str, Any] = dict(head.get("channel_versions") or {})
        with gc_paused():  # decoding allocates many objects that all survive
            values, lists = self._values(found, view, versions, corrupt)
        head["channel_values"] = values
        if remember:
            chain = loaded.chain
            base = Base(found.checkpoint_id, seq, record.root_seq, len(chain) - 1,
                         frozenset(view), versions, lists, record.checksum)  # fmt: skip
            self._remember(run_id, base)
        writes = self._pending_writes(found, corrupt)
        parent = None if parent_id is None else config_of(where, str(parent_id))
        return CheckpointTuple(
            config_of(where, found.checkpoint_id),
            cast(Checkpoint, head),
            cast(CheckpointMetadata, meta),
            parent,
            writes,
        )

    def _values(
        self,
        found: Found,
        view: Mapping[str, NodeRow],
        versions: Mapping[str, Any],
        corrupt: Callable[[str], CorruptCheckpoint],
    ) -> tuple[dict[str, Any], dict[str, tuple[int, bytes, int]]]:
        loaded = found.loaded
        by_node: dict[str, list[NodeRow]] = {}
        for stored in sorted(loaded.rows, key=lambda r: r.seq):
            by_node.setdefault(stored.node_id, []).append(stored)
        values: dict[str, Any] = {}
        lists: dict[str, tuple[int, bytes, int]] = {}
        for ch, version in versions.items():
            row = view.get(ch)
            if row is None:
                raise corrupt(f"channel {ch!r} has no stored value")
            if row.fingerprint != version_text(version):
                raise corrupt(f"channel {ch!r} was stored at version {row.fingerprint}, "
                              f"the checkpoint names {version_text(version)}")  # fmt: skip
            if row.status == PENDING:
                continue  # versioned but empty
            what = f"channel {ch!r} (written at seq {row.seq})"
            try:
                ser, plain = self._open(row, loaded.blobs, what)
                if ser == FULL:
                    type_b, sep, data = plain.partition(b"\x00")
                    if not sep:
                        raise ValueError(f"{what}: no type")
                    type_ = type_b.decode()
                elif ser == APPEND:
                    type_, data = "msgpack", self._join(found, ch, row, plain, by_node, what)
                else:
                    raise ValueError(f"{what}: written by {ser!r}")
            except (ValueError, msgspec.DecodeError) as exc:
                raise corrupt(str(exc)) from exc
            values[ch] = self._loads(f"channel {ch!r}", type_, data)
            if type_ == "msgpack" and (arr := array_of(data)) is not None:
                lists[ch] = (arr[0], data, arr[1])
        return values, lists

    def _join(
        self,
        found: Found,
        ch: str,
        row: NodeRow,
        plain: bytes,
        by_node: Mapping[str, builtins.list[NodeRow]],
        what: str,
    ) -> bytes:
        """A list stored as tails: walk back along the chain to its last full value (a
        delta's row, else the root snapshot's) and join the items, oldest first."""
        loaded = found.loaded
        earlier = [r for r in by_node.get(ch, ()) if r.seq < row.seq]
        tails: builtins.list[tuple[int, bytes]] = []
        ser, from_snapshot = APPEND, False
        while ser == APPEND:
            count, sep, tail = plain.partition(b"\x00")
            if not sep or not count.isdigit():
                raise ValueError(f"{what}: damaged tail")
            tails.append((int(count), tail))
            if earlier:
                row = earlier.pop()
            elif not from_snapshot:
                from_snapshot = True
                snapshot = DECODE_ROWS.decode(loaded.chain[0].snapshot or b"")
                found_row = next((r for r in snapshot if r.node_id == ch), None)
                if found_row is None:
                    raise ValueError(f"{what}: the list it extends is missing")
                row = found_row
            else:
                raise ValueError(f"{what}: the list it extends is missing")
            ser, plain = self._open(row, loaded.blobs, what)
        base_type, _, base = plain.partition(b"\x00")
        arr = array_of(base)
        if ser != FULL or row.status != COMPLETED or base_type != b"msgpack" or arr is None:
            raise ValueError(f"{what}: it extends a value that is not a stored list")
        head = array_header(arr[0] + sum(c for c, _ in tails))
        parts: builtins.list[bytes | memoryview] = [head, memoryview(base)[arr[1] :]]
        parts.extend(t for _, t in reversed(tails))
        return b"".join(parts)

    def _pending_writes(
        self, found: Found, corrupt: Callable[[str], CorruptCheckpoint]
    ) -> builtins.list[PendingWrite]:
        where = found.where
        out: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for task_id, idx, channel, task_path, type_, recipe, value, checksum in found.writes:
            data = bytes(value) if value is not None else b""
            parts = (where.thread_id, where.ns, found.checkpoint_id, task_id, idx, channel,
                     task_path, type_, recipe, data)  # fmt: skip
            if write_checksum(parts) != checksum:
                raise corrupt(f"pending write {task_id!r}/{idx} ({channel!r}) checksum mismatch")
            plain = self._envelope.open(f"w+{recipe}" if recipe else "w", data)[1]
            decoded = self._loads(f"write of task {task_id!r} to {channel!r}", type_, plain)
            out.append((writes_sort_key(task_path, task_id, idx), (task_id, channel, decoded)))
        out.sort(key=lambda item: item[0])
        return [w for _, w in out]

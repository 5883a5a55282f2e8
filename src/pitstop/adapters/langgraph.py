"""A LangGraph checkpointer on pitstop's stores: ``checkpointer=PitstopSaver("agent.db")``.

``PitstopSaver`` is a ``langgraph.checkpoint.base.BaseCheckpointSaver`` (sync and
async methods) that keeps LangGraph checkpoints in a pitstop store: a SQLite
file, PostgreSQL or ``MemoryStore``. It implements every method LangGraph's
checkpointer conformance suite tests (put, put_writes, get_tuple, list,
delete_thread, delete_for_runs, copy_thread, prune).

Mapping (docs/adapters/langgraph.md has the whole story):

- one LangGraph thread and checkpoint namespace = one pitstop **run**
  (``langgraph/<thread_id>/<checkpoint_ns>``, ``/`` and ``%`` escaped);
- one LangGraph checkpoint = one pitstop **checkpoint** (seq, lineage,
  checksums, snapshot or delta): its LangGraph metadata is the pitstop
  metadata (strict JSON), its id the label, and the rest of the checkpoint
  (id, ts, channel versions, versions seen, parent id) the state blob;
- one channel = one pitstop **node row**, whose output is the channel value and
  whose fingerprint is the channel version. A delta writes only the channels
  whose version changed (or that ``new_versions`` names); every
  ``snapshot_every`` checkpoints (and when the parent is not known to this
  saver) a snapshot writes them all, which bounds what a restore reads;
- a list channel that only grew (messages appended) is written as its new
  tail: the value is encoded whole (as LangGraph's own savers do, so an item
  changed in place is never missed), and when the parent's encoding is the same
  array header and items followed by more items, only those bytes are stored
  (``langgraph-append`` rows, with the number of items). A restore joins the
  tails onto the full value of the last snapshot (or full row) on its chain,
  which gives back the very bytes the serializer wrote;
- the checkpoint index (thread, namespace, checkpoint id -> run, seq) and the
  pending writes (with checksums) live in two tables of the adapter's own,
  ``pitstop_langgraph_checkpoints`` and ``pitstop_langgraph_writes``, created
  on first use in the same database and written in the same transactions
  (``_langgraph_sql``; the encodings are in ``_langgraph_values``, the read side
  in ``_langgraph_read``).

Values are encoded by the saver's ``serde`` (LangGraph's ``JsonPlusSerializer``
by default, or the one you pass), then stored through pitstop's ``Envelope``
(zstd from 4 KiB, content-addressed blobs from 16 KiB, optional encryption).
Every restore is verified by pitstop (headers, lineage, snapshot blob, delta
manifests, the channel versions each value was written with); a mismatch raises
``CorruptCheckpoint``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from .._codec import FORMAT_VERSION, payload_hash
from .._core import RunFields, SavePlan
from .._errors import CorruptCheckpoint, SerializationError, StoreError
from .._records import COMPLETED, PENDING, NodeRow
from .._serde import encode_metadata
from .._types import RunStatus, check_id
from ..codecs._envelope import Envelope
from ..storage._programs import Call, Txn
from ..storage.sql import Store, open_store
from ._langgraph_read import ReadSide
from ._langgraph_sql import (
    Where,
    langgraph_delete_for_runs,
    langgraph_delete_thread,
    langgraph_get,
    langgraph_keep_latest,
    langgraph_put,
    langgraph_put_writes,
    langgraph_setup,
    langgraph_tables,
    langgraph_thread,
)
from ._langgraph_values import (
    APPEND,
    FULL,
    MISSING,
    Base,
    Plan,
    array_of,
    changed_channels,
    config_of,
    run_id_of,
    trigger_of,
    version_text,
    where_of,
    write_checksum,
)

__all__ = ["PitstopSaver", "run_id_of"]

R = TypeVar("R")


class PitstopSaver(ReadSide, BaseCheckpointSaver[int]):
    """LangGraph checkpoints in a pitstop store (SQLite, PostgreSQL or memory).

    Args:
        store: a ``Store`` (stays yours: ``close()`` leaves it open), or a SQLite path
            or database URL (``postgresql://...``) that the saver opens on first use
            and closes on ``close()``.
        serde: LangGraph serializer for values (default ``JsonPlusSerializer``).
        envelope: how pitstop stores encoded bytes: compression (zstd from 4 KiB),
            deduplication (from 16 KiB), encryption at rest (``AesGcmKeys``).
        snapshot_every: write every channel at least every this many checkpoints of a
            thread (bounds what a restore reads); in between, only changed channels.
        cache_size: checkpoints remembered (per saver) to write their children as deltas.

    Raises:
        ValueError / TypeError: a bad target, or bad numbers.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        envelope: Envelope | None = None,
        snapshot_every: int = 50,
        cache_size: int = 64,
    ) -> None:
        super().__init__(serde=serde)
        for name, value in (("snapshot_every", snapshot_every), ("cache_size", cache_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if envelope is not None and not isinstance(envelope, Envelope):
            raise TypeError(f"envelope must be an Envelope, got {type(envelope).__name__}")
        self._owns_store = not isinstance(store, Store)
        self._store: Store = open_store(store) if not isinstance(store, Store) else store
        self._envelope = envelope or Envelope()
        self._snapshot_every = snapshot_every
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Base] = OrderedDict()
        self._lock = threading.Lock()
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"

    @property
    def store(self) -> Store:
        return self._store

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> PitstopSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> PitstopSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store if this saver opened it (a Store you passed stays open)."""
        with self._lock:
            self._cache.clear()
            self._closed = True
        if self._owns_store:
            self._store.close()

    def setup(self) -> None:
        """Create this adapter's two tables if they are missing (done on first use).

        Raises:
            StoreError: the store cannot be reached, or it is read-only and has no
                LangGraph checkpoints.
        """
        if self._ready:
            return
        store = self._store
        # Read first: an up-to-date database is never locked for writing by a new saver.
        if store.execute(Call(langgraph_tables, (), False)) != 2:
            if store.readonly:
                raise StoreError(f"{store.url} holds no LangGraph checkpoints (opened read-only)")
            store.execute(Call(langgraph_setup, (), True))
        self._ready = True

    def _run(self, program: Callable[..., Txn[R]], *args: Any, write: bool = False) -> R:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        self.setup()
        return self._store.execute(Call(program, args, write))

    async def _hop(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn`` (one sync method: its encoding and its transactions) on the store's
        thread, as pitstop's async manager does; ``MemoryStore`` runs it inline."""
        if not self._store.hops:
            return fn(*args)
        return await self._store.hop(fn, *args)

    # -- cache -------------------------------------------------------------------------

    def _remember(self, run_id: str, base: Base, drop: str | None = None) -> None:
        with self._lock:
            if drop is not None:
                self._cache.pop((run_id, drop), None)
            self._cache[(run_id, base.checkpoint_id)] = base
            self._cache.move_to_end((run_id, base.checkpoint_id))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, runs: Sequence[str]) -> None:
        doomed = set(runs)
        with self._lock:
            for key in [k for k in self._cache if k[0] in doomed]:
                del self._cache[key]

    def _base(self, run_id: str, checkpoint_id: str | None) -> Base | None:
        if checkpoint_id is None:
            return None
        with self._lock:
            return self._cache.get((run_id, checkpoint_id))

    # -- encoding ----------------------------------------------------------------------

    def _dumps(self, what: str, value: Any) -> tuple[str, bytes]:
        try:
            type_, data = self.serde.dumps_typed(value)
        except Exception as exc:
            raise SerializationError(f"{what}: {type(exc).__name__}: {exc}", tag=FULL) from exc
        if "\x00" in type_:
            raise SerializationError(f"{what}: serde type {type_!r} contains NUL", tag=FULL)
        return type_, bytes(data)

    def _loads(self, what: str, type_: str, data: bytes) -> Any:
        try:
            return self.serde.loads_typed((type_, data))
        except Exception as exc:
            raise SerializationError(f"{what}: {type(exc).__name__}: {exc}", tag=FULL) from exc

    def _seal(
        self, tag: str, payload: bytes, refs: dict[str, tuple[str, bytes]]
    ) -> tuple[str, bytes]:
        sealed = self._envelope.seal(tag, payload)
        if sealed.blob is not None:
            digest, recipe, stored = sealed.blob
            refs[digest] = (recipe, stored)
        return sealed.tag, sealed.data

    def _plan(
        self,
        where: Where,
        checkpoint: Checkpoint,
        new_versions: ChannelVersions,
        base: Base | None,
        header: dict[str, Any],
    ) -> Plan:
        """Encode what this checkpoint writes: every channel (snapshot) or the changed ones."""
        versions = dict(checkpoint["channel_versions"])
        values = checkpoint["channel_values"]
        snapshot = base is None or base.since_snapshot + 1 >= self._snapshot_every
        if snapshot or base is None:
            changed = list(versions)
            removed: list[str] = []
            lists: dict[str, tuple[int, bytes, int]] = {}
            old_lists: Mapping[str, tuple[int, bytes, int]] = {}
        else:
            old = base.versions
            changed = [ch for ch, v in versions.items()
                       if ch in new_versions or old.get(ch, MISSING) != v]  # fmt: skip
            removed = [ch for ch in old if ch not in versions]
            old_lists = base.lists
            lists = {ch: v for ch, v in old_lists.items() if ch in versions}
        rows: list[NodeRow] = []
        refs: dict[str, tuple[str, bytes]] = {}
        for ch in changed:
            check_id("channel", ch)
            fp = version_text(versions[ch])
            lists.pop(ch, None)
            if ch not in values:  # a versioned channel with no value (empty)
                rows.append(NodeRow(ch, PENDING, 0, None, None, None, (), FULL, None,
                                    fingerprint=fp))  # fmt: skip
                continue
            type_, data = self._dumps(f"channel {ch!r}", values[ch])
            tag, payload = FULL, type_.encode() + b"\x00" + data
            arr = array_of(data) if type_ == "msgpack" else None
            if arr is not None:
                lists[ch] = (arr[0], data, arr[1])
                prev = old_lists.get(ch)
                if prev is not None and prev[0] > 0 and arr[0] >= prev[0]:
                    items, old_data, old_head = prev
                    body = memoryview(old_data)[old_head:]
                    if data.startswith(body, arr[1]):  # the old items, unchanged: append
                        tail = data[arr[1] + len(body) :]
                        tag, payload = APPEND, b"%d\x00" % (arr[0] - items) + tail
            tag, out = self._seal(tag, payload, refs)
            rows.append(NodeRow(ch, COMPLETED, 0, None, None, None, (), tag, out,
                                fingerprint=fp))  # fmt: skip
        for ch in removed:  # gone from the checkpoint: a tombstone keeps deltas small
            rows.append(NodeRow(ch, PENDING, 0, None, None, None, (), FULL, None))
        written = frozenset(r.node_id for r in rows)
        ids = written if snapshot or base is None else base.ids | written
        size = len(header["metadata"]) + len(header["state"] or b"")
        size += sum(len(r.output or b"") for r in rows)
        plan = SavePlan(
            run_id=where.run_id, rows=rows, changed=set(written), snapshot=snapshot,
            parent_seq=None if base is None else base.seq,
            root_seq=None if base is None else base.root_seq,
            expected_hwm=None, base_checksum=None if base is None else base.checksum,
            node_count=len(ids),
            header=dict(header, size=size),
            run=RunFields(where.run_id, RunStatus.RUNNING, 1, None, None, None, None),
            keep_last=None, meta={}, run_changed=False,
            refs=tuple(sorted(refs)), blobs=refs,
        )  # fmt: skip
        since = 0 if snapshot or base is None else base.since_snapshot + 1
        return Plan(plan, ids, lists, since)

    # -- sync API ----------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: a delta of the changed channels on top of its parent.

        Raises:
            SerializationError: a value cannot be encoded by ``serde``, or the metadata
                is not plain JSON; nothing is written.
            StoreError: the backend failed; nothing is written.
        """
        where = where_of(config)
        parent_id = get_checkpoint_id(config)
        checkpoint_id = str(checkpoint["id"])
        meta_dict = dict(get_serializable_checkpoint_metadata(config, metadata))
        meta = encode_metadata(meta_dict)
        rest = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        state_type, state_data = self._dumps(
            "checkpoint", {"checkpoint": rest, "parent": parent_id}
        )
        sealed = self._envelope.seal(FULL, state_type.encode() + b"\x00" + state_data, dedup=False)
        header = dict(created_at=time.time(), trigger=trigger_of(meta_dict), label=checkpoint_id,
                      node=None, schema_version=FORMAT_VERSION, serializer=sealed.tag,
                      metadata=meta, state=sealed.data,
                      payload_hash=payload_hash(meta, sealed.data))  # fmt: skip
        lg_run = meta_dict.get("run_id")
        lg_run_id = None if lg_run is None else str(lg_run)
        base = self._base(where.run_id, parent_id)
        planned = self._plan(where, checkpoint, new_versions, base, header)
        args = (where, checkpoint_id, parent_id, lg_run_id)
        seq = self._run(langgraph_put, planned.plan, *args, write=True)
        if seq is None:  # the parent's chain was deleted meanwhile: write every channel
            planned = self._plan(where, checkpoint, new_versions, None, header)
            seq = self._run(langgraph_put, planned.plan, *args, write=True)
            if seq is None:
                raise StoreError(f"run {where.run_id!r}: a full snapshot found no base")
        record = planned.plan.record
        if record is None:
            raise StoreError(f"run {where.run_id!r}: the save did not finalize its checkpoint")
        versions = dict(checkpoint["channel_versions"])
        self._remember(where.run_id, Base(checkpoint_id, seq, record.root_seq,
                                           planned.since_snapshot, planned.ids, versions,
                                           planned.lists, record.checksum),
                       drop=parent_id)  # fmt: skip
        return config_of(where, checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against a checkpoint (committed before the next one;
        as durable as the store's ``durability``).

        A write of a special channel (error, interrupt, ...) replaces an earlier one;
        others are kept as first written (LangGraph's rule).
        """
        where = where_of(config)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id is None:
            raise ValueError("put_writes needs config['configurable']['checkpoint_id']")
        rows = []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            type_, data = self._dumps(f"write of task {task_id!r} to {channel!r}", value)
            sealed = self._envelope.seal("w", data, dedup=False)
            recipe = sealed.tag[2:]
            parts = (where.thread_id, where.ns, checkpoint_id, str(task_id), idx, channel,
                     task_path, type_, recipe, sealed.data)  # fmt: skip
            rows.append((*parts, write_checksum(parts)))
        replace = all(w[0] in WRITES_IDX_MAP for w in writes)
        self._run(langgraph_put_writes, rows, replace, write=True)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its latest when it names no id), verified."""
        where = where_of(config)
        found = self._run(langgraph_get, where, get_checkpoint_id(config))
        if found is None:
            return None
        return self._build(found, remember=True)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (by checkpoint id), each verified and loaded in turn.

        ``filter`` matches metadata: every key must be present and equal (dicts match
        when they contain the filter's items, as PostgreSQL's ``@>``).
        """
        for key in self._list_keys(config, filter, before, limit):
            tup = self._get_listed(key)
            if tup is not None:  # deleted meanwhile: skipped
                yield tup

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread (every namespace)."""
        runs = self._run(langgraph_delete_thread, str(thread_id), write=True)
        self._forget(runs)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is given.

        Checkpoints built on a deleted one stay loadable: their chain's rows are kept.
        """
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run IDs, not a str")
        ids = [str(r) for r in run_ids]
        if ids:
            self._forget(self._run(langgraph_delete_for_runs, ids, write=True))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's latest checkpoint (and its writes);
        ``"delete"``: delete the threads. Each thread is one transaction."""
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        for thread_id in [str(t) for t in thread_ids]:
            if strategy == "delete":
                self.delete_thread(thread_id)
            else:
                self._forget(self._run(langgraph_keep_latest, thread_id, write=True))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every live checkpoint (same ids, lineage, metadata, values) and every
        write of a thread to another thread.

        Each checkpoint is loaded (verified) and put again, oldest first, so the copy
        is stored as compactly as the source (deltas, appended tails).
        """
        source, target = str(source_thread_id), str(target_thread_id)
        live, writes = self._run(langgraph_thread, source)
        previous: dict[str, CheckpointTuple] = {}
        for ns, checkpoint_id, _, _ in sorted(live, key=lambda r: (r[0], r[2])):
            found = self._run(langgraph_get, Where(source, ns, run_id_of(source, ns)),
                              checkpoint_id)  # fmt: skip
            if found is None:
                continue
            tup = self._build(found, remember=False)
            parent = None if tup.parent_config is None else get_checkpoint_id(tup.parent_config)
            config: RunnableConfig = {"configurable": {"thread_id": target, "checkpoint_ns": ns}}
            if parent is not None:
                config["configurable"]["checkpoint_id"] = parent
            before = previous.get(ns)
            same = before is not None and before.checkpoint["id"] == parent
            self.put(
                config,
                tup.checkpoint,
                tup.metadata,
                changed_channels(tup.checkpoint, before.checkpoint if same and before else None),
            )
            previous[ns] = tup
        rows = []
        for row in writes:
            parts = (*row[:9], b"" if row[9] is None else bytes(row[9]))
            if write_checksum(parts) != row[10]:
                raise CorruptCheckpoint(run_id_of(source, str(row[1])), 0,
                                        f"write {row[3]!r}/{row[4]} of checkpoint {row[2]!r} "
                                        "checksum mismatch")  # fmt: skip
            moved = (target, *parts[1:])
            rows.append((*moved, write_checksum(moved)))
        self._run(langgraph_put_writes, rows, False, write=True)

    # -- async API ---------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._hop(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        keys = await self._hop(self._list_keys, config, filter, before, limit)
        for key in keys:
            tup = await self._hop(self._get_listed, key)
            if tup is not None:
                yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._hop(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._hop(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._hop(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._hop(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._hop(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._hop(functools.partial(self.prune, strategy=strategy), thread_ids)

    # -- reads -------------------------------------------------------------------------

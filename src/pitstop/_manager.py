"""CheckpointManager: the one object a runner holds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from ._codec import FORMAT_VERSION, decode_checkpoint, encode_metadata, encode_node, record_checksum
from ._errors import CheckpointingDisabled, PitstopError, StaleBaseError
from ._events import ERROR, LOAD, PRUNE, SAVE, CheckpointEvent, Observer, emit
from ._hooks import HooksMixin, NodeRecord
from ._policy import CheckpointPolicy, PolicyClock
from ._serde import JsonSerializer, Serializer
from ._types import Checkpoint, CheckpointInfo, NodeState
from .storage.base import CheckpointRecord, NodeRow, Store

DEFAULT_STORE = "pitstop.db"
"""SQLite file (relative to the working directory) used when no store is given."""

_UNSET: Any = object()


class CheckpointManager(HooksMixin):
    """Checkpoints for one run, saved only when ``save_checkpoint`` is called.

    Args:
        run_id: names the run; pass the same id to resume it. None makes a new uuid.
        store: a Store, or a SQLite path / database URL (``postgresql://...``) that the
            manager opens lazily and closes in ``aclose()``. None: ``DEFAULT_STORE``.
        enabled: off by default; runners check this plain attribute before each hook.
        serializer: for outputs and state; strict JSON by default.
        policy: automatic saves and retention (default: none).
        metadata: stored with every checkpoint (plain JSON), merged with per-save metadata.
        observers: callables receiving CheckpointEvent for save/load/resume/prune/error.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        store: Store | str | os.PathLike[str] | None = None,
        enabled: bool = False,
        serializer: Serializer | None = None,
        policy: CheckpointPolicy | None = None,
        metadata: Mapping[str, Any] | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise TypeError(f"run_id must be a non-empty str or None, got {run_id!r}")
        self.enabled = bool(enabled)
        self.run_id = run_id or uuid.uuid4().hex
        self.serializer: Serializer = serializer or JsonSerializer()
        self.policy = policy or CheckpointPolicy()
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.state: Any = None
        self._observers = list(observers)
        self._serializers: dict[str, Serializer] = {"json": JsonSerializer()}
        self._serializers[self.serializer.tag] = self.serializer
        self._store_target: str | os.PathLike[str] | None = None
        self._store: Store | None = None
        self._owns_store = not (store is not None and not isinstance(store, (str, os.PathLike)))
        if self._owns_store:
            self._store_target = DEFAULT_STORE if store is None else store  # type: ignore[assignment]
        else:
            self._store = store  # type: ignore[assignment]
        self._store_lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()
        self._nodes: dict[str, NodeRecord] = {}
        self._dirty: set[str] = set()
        self._base_seq: int | None = None
        self._restored: Checkpoint | None = None
        self._ended = False
        self._clock = PolicyClock(self.policy)

    def __repr__(self) -> str:
        return f"CheckpointManager(run_id={self.run_id!r}, enabled={self.enabled})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store if the manager opened it; a Store you passed stays open."""
        if self._owns_store and self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def store(self) -> Store:
        """The store, opened on first use."""
        if self._store is not None and not self._owns_store:
            return self._store
        async with self._store_lock:
            if self._store is None:
                from .storage.sql import open_store

                store = open_store(self._store_target or DEFAULT_STORE)
                await store.open()
                self._store = store
            return self._store

    async def save_checkpoint(
        self,
        *,
        trigger: str = "manual",
        label: str | None = None,
        node: str | None = None,
        nodes: Mapping[str, NodeState] | Iterable[NodeState] | None = None,
        state: Any = _UNSET,
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Write a checkpoint: every node changed since the last one, the state, metadata.

        Args:
            trigger: why it was taken ("manual", "every_n_nodes", "pause", ...).
            label: free text shown by ``pitstop list``.
            node: the node the save is about, if any.
            nodes: explicit node states, merged into the bookkeeping before saving.
            state: user state to store (replaces ``manager.state``).
            metadata: merged over the manager's metadata for this checkpoint.

        Raises:
            CheckpointingDisabled: the manager is disabled.
            SerializationError: an output, the state or metadata cannot be encoded;
                nothing is written and the changes stay pending for the next save.
            StoreError: the backend failed; the previous checkpoint stays intact.
        """
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        if nodes is not None:
            items = nodes.values() if isinstance(nodes, Mapping) else nodes
            for ns in items:
                if not isinstance(ns, NodeState):
                    raise TypeError(f"nodes must hold NodeState, got {type(ns).__name__}")
                self._nodes[ns.node_id] = NodeRecord.from_state(ns)
                self._dirty.add(ns.node_id)
        if state is not _UNSET:
            self.state = state
        async with self._save_lock:
            started = time.perf_counter()
            try:
                info = await self._write(trigger, label, node, metadata)
            except PitstopError as exc:
                emit(
                    self._observers, CheckpointEvent(ERROR, self.run_id, trigger=trigger, error=exc)
                )
                raise
            self._clock.saved()
            emit(
                self._observers,
                CheckpointEvent(
                    SAVE, self.run_id, info.seq, trigger, time.perf_counter() - started, info
                ),
            )
        if self.policy.keep_last is not None:
            try:
                await self.prune(self.policy.keep_last)
            except PitstopError as exc:
                # The checkpoint is written; a failed retention pass must not make the
                # save look failed. It is reported, and the next save prunes again.
                event = CheckpointEvent(ERROR, self.run_id, info.seq, "retention", error=exc)
                emit(self._observers, event)
        return info

    async def _write(
        self, trigger: str, label: str | None, node: str | None, metadata: Mapping[str, Any] | None
    ) -> CheckpointInfo:
        store = await self.store()
        changed, self._dirty = self._dirty, set()
        try:
            ser = self.serializer
            meta = encode_metadata({**self.metadata, **(metadata or {})})
            blob = None if self.state is None else ser.dumps(self.state)
            base_size = len(meta) + len(blob or b"")

            def encode(ids: Iterable[str]) -> tuple[CheckpointRecord, list[NodeRow]]:
                rows = [encode_node(self._nodes[n].freeze(n), ser) for n in sorted(ids)]
                size = base_size + sum(len(r.output or b"") for r in rows)
                r = CheckpointRecord(
                    run_id=self.run_id, seq=0, parent_seq=self._base_seq,
                    created_at=time.time(), trigger=trigger, label=label, node=node,
                    schema_version=FORMAT_VERSION, serializer=ser.tag, metadata=meta,
                    state=blob, checksum="", size=size, nodes_written=len(rows),
                )  # fmt: skip
                return dataclasses.replace(r, checksum=record_checksum(r)), rows

            # The first save of a manager is a full snapshot; later ones write the delta.
            rec, rows = encode(self._nodes.keys() if self._base_seq is None else changed)
            try:
                seq = await store.save(rec, rows, base_seq=self._base_seq)
            except StaleBaseError:
                # Our base is not the run's latest (restored an older seq, or the run
                # was pruned/deleted): a delta would mix lineages, so write everything.
                rec, rows = encode(self._nodes.keys())
                seq = await store.save(rec, rows, base_seq=None)
        except BaseException:
            self._dirty |= changed
            raise
        self._base_seq = seq
        return dataclasses.replace(rec, seq=seq).info()

    async def restore_checkpoint(self, seq: int | None = None) -> Checkpoint:
        """Load and verify a checkpoint (latest by default) and adopt it as the run's state.

        Raises:
            CheckpointNotFound: no such checkpoint.
            CorruptCheckpoint: a checksum failed; older checkpoints stay loadable.
            SchemaVersionError: written by a newer pitstop.
            SerializationError: a payload cannot be decoded (e.g. pickle not opted in).
        """
        started = time.perf_counter()
        record, rows = await (await self.store()).load(self.run_id, seq)
        cp = decode_checkpoint(record, rows, self._serializers)
        self._nodes = {k: NodeRecord.from_state(v) for k, v in cp.nodes.items()}
        self._dirty = set()
        self._base_seq = cp.seq
        self.state = cp.state
        self._restored = cp
        self._ended = False
        emit(
            self._observers,
            CheckpointEvent(
                LOAD, self.run_id, cp.seq, cp.info.trigger, time.perf_counter() - started, cp.info
            ),
        )
        return cp

    async def can_resume(self) -> bool:
        """Whether the run has a checkpoint to restore."""
        return await (await self.store()).latest_seq(self.run_id) is not None

    async def list_checkpoints(self) -> list[CheckpointInfo]:
        """The run's checkpoints, oldest first."""
        return await (await self.store()).list_checkpoints(self.run_id)

    async def delete(self, seq: int | None = None) -> int:
        """Delete one checkpoint, or the whole run; raises CheckpointNotFound if none."""
        return await (await self.store()).delete(self.run_id, seq)

    async def prune(self, keep: int) -> list[int]:
        """Keep the newest ``keep`` checkpoints; return the removed seqs."""
        removed = await (await self.store()).prune(self.run_id, keep)
        if removed:
            emit(self._observers, CheckpointEvent(PRUNE, self.run_id, removed=tuple(removed)))
        return removed

    async def _auto_save(
        self, trigger: str, node: str | None = None, label: str | None = None
    ) -> None:
        try:
            await self.save_checkpoint(trigger=trigger, node=node, label=label)
        except PitstopError:
            if self.policy.on_error == "raise":
                raise
            # on_error="log": save_checkpoint already logged and emitted checkpoint.error.

    def _forget_run(self) -> None:
        self._nodes, self._dirty = {}, set()
        self.state = None
        self._base_seq = None  # the next save is a full snapshot
        self._restored = None
        self._ended = False

    async def _finish_run(self, success: bool) -> None:
        self._restored = None
        self._ended = True
        if not success:
            if self.policy.on_failure:
                await self._auto_save("run_failed")
            return
        if self.policy.preserve:
            return
        try:
            removed = await self.list_checkpoints()
            if not removed:
                return
            await self.delete()
        except PitstopError as exc:
            emit(self._observers, CheckpointEvent(ERROR, self.run_id, trigger="success", error=exc))
            if self.policy.on_error == "raise":
                raise
            return
        self._base_seq = None
        seqs = tuple(i.seq for i in removed)
        emit(self._observers, CheckpointEvent(PRUNE, self.run_id, trigger="success", removed=seqs))

"""What both managers do, written once as programs: generators that yield the
store transactions they need (``Call``) and get each one's result back.

The sync manager runs a program by calling the store; the async one hops onto
the store's thread for each call. Neither adds logic of its own, so every
method below behaves the same in both. Hooks return None (nothing to run)
unless a policy makes a save due.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import (
    Collection,
    Iterable,
    Mapping,
)
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    cast,
)

from ._codec import decode_checkpoint, verify
from ._core import RunCore, SavePlan
from ._errors import (
    CheckpointingDisabled,
    CheckpointNotFound,
    PitstopError,
    SerializationError,
    StoreError,
)
from ._events import ERROR, LOAD, PRUNE, RESUME, SAVE, CheckpointEvent, Observer, emit, logger
from ._policy import CheckpointPolicy
from ._program import Program, ProgramFn, Work, gc_paused, is_large, op, twin_method
from ._records import NodeRow
from ._serde import JsonSerializer, Serializer
from ._types import (
    Checkpoint,
    CheckpointInfo,
    NodeMap,
    NodeState,
    RunInfo,
    check_id,
)
from .codecs._envelope import Envelope
from .codecs._typed import TypedSerializer
from .storage import _programs as P
from .storage._programs import Call
from .storage._urls import parse_target

if TYPE_CHECKING:
    from .storage.sql import Store

DEFAULT_STORE = "pitstop.db"
"""SQLite file (relative to the working directory) used when no store is given."""

_UNSET: Any = object()


def _seq(seq: object) -> int | None:
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"seq must be an int or None, got {type(seq).__name__}")
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    return seq


def _opt_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")


class ManagerBase:
    """State and programs shared by ``CheckpointManager`` and ``SyncCheckpointManager``.

    Args:
        run_id: names the run; pass the same id to resume it. None makes a new uuid.
        store: a Store, or a SQLite path / database URL (``postgresql://...``) that the
            manager opens on first use and closes on close. None: ``DEFAULT_STORE``.
        enabled: off by default; runners check this plain attribute before each hook.
        serializer: for outputs and state; ``TypedSerializer()`` by default (exact
            round trips of typed values, numpy and pandas included; no pickle). Stores
            written with JSON (or pickle, if you pass ``PickleSerializer()``) stay readable.
        readers: more serializers to read with (e.g. ``PickleSerializer()`` to load
            old pickled checkpoints while writing typed ones); JSON and typed are
            always read.
        envelope: compression, deduplication and encryption of stored payloads
            (default: zstd from 4 KiB, dedup from 16 KiB, no encryption).
        policy: automatic saves and retention (default: none).
        metadata: stored with every checkpoint (strict JSON), merged with per-save metadata.
        observers: callables receiving CheckpointEvent for save/load/resume/prune/error.

    Raises:
        ValueError / TypeError: a bad run id (empty, NUL, lone surrogate), a store
            target that looks like a URL but does not parse, bad metadata.
    """

    _OPS: ClassVar[dict[str, ProgramFn]] = {}
    _offload: ClassVar[bool] = False
    """Whether large outputs are encoded off the caller's thread (the async twin)."""

    _METHOD: ClassVar[str]
    """The source of each twin's methods (``twin_method``): its own kind of function
    running an op's program. A hook that only updates bookkeeping has nothing to run
    (most calls): its program is None, and the method returns None at once."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, program in ManagerBase._OPS.items():
            method = functools.wraps(program)(twin_method(name, program, cls._METHOD))
            method.__name__, method.__qualname__ = name, f"{cls.__qualname__}.{name}"
            setattr(cls, name, method)

    def __init__(
        self,
        run_id: str | None = None,
        *,
        store: Store | str | os.PathLike[str] | None = None,
        enabled: bool = False,
        serializer: Serializer | None = None,
        readers: Iterable[Serializer] = (),
        envelope: Envelope | None = None,
        policy: CheckpointPolicy | None = None,
        metadata: Mapping[str, Any] | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        self.enabled = bool(enabled)
        serializer = serializer or TypedSerializer()
        if not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must be a Serializer, got {type(serializer).__name__}")
        if envelope is not None and not isinstance(envelope, Envelope):
            raise TypeError(f"envelope must be an Envelope, got {type(envelope).__name__}")
        self._envelope = envelope or Envelope()
        self._core = RunCore(uuid.uuid4().hex if run_id is None else run_id, serializer,
                             policy or CheckpointPolicy(), metadata or {},
                             self._envelope)  # fmt: skip
        self._observers = list(observers)
        # Readers read every format: JSON and typed always, pickle only when given.
        self._serializers: dict[str, Serializer] = {"json": JsonSerializer()}
        if serializer.tag != "typed":
            self._serializers["typed"] = TypedSerializer()
        for reader in readers:
            if not isinstance(reader, Serializer):
                raise TypeError(f"readers must hold Serializers, got {type(reader).__name__}")
            self._serializers[reader.tag] = reader
        self._serializers[serializer.tag] = serializer
        self._store: Store | None = None
        self._target: str | os.PathLike[str] | None = None
        if store is None or isinstance(store, (str, os.PathLike)):
            self._target = DEFAULT_STORE if store is None else store
            parse_target(self._target)  # typos raise here, not at the first save
        else:
            self._store = store
        self._owns_store = self._target is not None
        self._setup()

    def _setup(self) -> None:
        """The twin's own state (its writer lock)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run_id={self.run_id!r}, enabled={self.enabled})"

    @property
    def run_id(self) -> str:
        return self._core.run_id

    @property
    def policy(self) -> CheckpointPolicy:
        return self._core.policy

    @property
    def serializer(self) -> Serializer:
        return self._core.serializer

    @property
    def metadata(self) -> dict[str, Any]:
        return self._core.metadata

    @property
    def state(self) -> Any:
        """User state saved with the next checkpoint (restored with each one)."""
        return self._core.state

    @state.setter
    def state(self, value: Any) -> None:
        self._core.state = value

    def _get_store(self) -> Store:
        if self._store is None:
            from .storage.sql import open_store

            self._store = open_store(self._target or DEFAULT_STORE)
        return self._store

    def _release_store(self) -> None:
        if self._owns_store and self._store is not None:
            store, self._store = self._store, None
            store.close()

    def _emit(self, name: str, **fields: Any) -> None:
        # An event nobody observes and the log would drop is not built (a save's
        # hot path); errors always go through (they log at ERROR).
        if self._observers or "error" in fields or logger.isEnabledFor(logging.INFO):
            emit(self._observers, CheckpointEvent(name, self.run_id, **fields))

    # -- saves ---------------------------------------------------------------

    def _save_checkpoint(
        self,
        *,
        trigger: str = "manual",
        label: str | None = None,
        node: str | None = None,
        nodes: Mapping[str, NodeState] | Iterable[NodeState] | None = None,
        state: Any = _UNSET,
        metadata: Mapping[str, Any] | None = None,
    ) -> Program[CheckpointInfo]:
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
            StaleBaseError: another writer saved this run meanwhile; nothing written.
            StoreError: the backend failed; the previous checkpoint stays intact.
        """
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        if not isinstance(trigger, str) or not trigger:
            raise TypeError("trigger must be a non-empty str")
        _opt_str("label", label)
        _opt_str("node", node)
        if nodes is None and state is _UNSET:  # nothing to apply first
            return self._save(trigger, label, node, metadata)
        items = (
            None if nodes is None else list(nodes.values() if isinstance(nodes, Mapping) else nodes)
        )
        return self._apply_then_save(items, state, trigger, label, node, metadata)

    def _apply_then_save(
        self,
        nodes: list[NodeState] | None,
        state: Any,
        trigger: str,
        label: str | None,
        node: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Program[CheckpointInfo]:
        # Applied inside the program, so under the manager's writer lock: a save
        # queued behind another never writes the other's state or nodes.
        self._core.merge(nodes)
        if state is not _UNSET:
            self._core.state = state
        return (yield from self._save(trigger, label, node, metadata))

    def _save(
        self, trigger: str, label: str | None, node: str | None, metadata: Mapping[str, Any] | None
    ) -> Program[CheckpointInfo]:
        core, started = self._core, time.perf_counter()
        plan: SavePlan | None = None
        try:
            plan = core.plan(trigger, label, node, metadata)
            saved: P.Saved = yield Call(P.save, (plan,), True)
            if saved.seq is None:
                # The base checkpoint was deleted meanwhile: start a new lineage.
                core.abort(plan)
                core.forget_lineage()
                plan = core.plan(trigger, label, node, metadata, snapshot=True)
                saved = yield Call(P.save, (plan,), True)
            if saved.seq is None or plan.record is None:
                raise StoreError(f"run {self.run_id!r}: a full snapshot found no base")
        except BaseException as exc:
            if plan is not None:
                core.abort(plan)
            if isinstance(exc, PitstopError):
                self._emit(ERROR, trigger=trigger, error=exc)
            raise
        core.commit(plan, saved.seq)
        info = plan.record.info(plan.meta)
        if self._observers or logger.isEnabledFor(logging.INFO):  # else no event is built
            self._emit(SAVE, seq=info.seq, trigger=trigger, info=info,
                       duration_s=time.perf_counter() - started)  # fmt: skip
            if saved.removed:
                self._emit(PRUNE, seq=info.seq, trigger="retention", removed=saved.removed)
        return info

    def _auto(
        self, trigger: str, node: str | None = None, label: str | None = None
    ) -> Program[None]:
        """A save a policy made due; on_error="log" keeps the run going if it fails."""
        try:
            yield from self._save(trigger, label, node, None)
        except PitstopError:
            if self.policy.on_error == "raise":
                raise

    def _set_status(self) -> Program[None]:
        try:
            fields = self._core.run_fields()
            yield Call(P.set_run, (fields,), True)
            self._core.run_written = fields
        except PitstopError as exc:
            self._emit(ERROR, trigger="status", error=exc)
            if self.policy.on_error == "raise":
                raise

    # -- reads ---------------------------------------------------------------

    def _restore_checkpoint(
        self, seq: int | None = None, *, fingerprints: Mapping[str, str] | None = None
    ) -> Program[Checkpoint]:
        """Load and verify a checkpoint (latest by default) and adopt it as the run's state.

        ``fingerprints`` (node id -> what its output is computed from now: a code
        hash, a task token, the run's inputs) makes resume safe across changes: a
        completed node whose stored fingerprint differs, and every node downstream of
        it, comes back pending (``Checkpoint.stale`` says why), so the runner runs
        it again. They also become the fingerprints of the nodes finished later.

        Raises:
            CheckpointingDisabled: the manager is disabled (it touches nothing).
            CheckpointNotFound: no such checkpoint.
            CorruptCheckpoint: a checksum or the manifest failed; older ones stay loadable.
            SchemaVersionError: written by a newer pitstop.
            SerializationError: a payload cannot be decoded (e.g. pickle not opted in).
        """
        if fingerprints is not None:
            self._core.set_fingerprints(fingerprints)
        return self._load(_seq(seq), adopt=True, outputs=True, fingerprints=fingerprints)

    def _load_checkpoint(
        self, seq: int | None = None, *, outputs: bool = True
    ) -> Program[Checkpoint]:
        """Load and verify a checkpoint without adopting it (inspection; writes nothing).

        With ``outputs=False`` node outputs and the state come back as ``Undecoded``
        (verified, not decoded: no codec, no pickle needed).
        """
        return self._load(_seq(seq), adopt=False, outputs=outputs)

    def _load(
        self,
        seq: int | None,
        *,
        adopt: bool,
        outputs: bool,
        fingerprints: Mapping[str, str] | None = None,
    ) -> Program[Checkpoint]:
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        started = time.perf_counter()
        loaded: P.Loaded = yield Call(P.load, (self.run_id, seq, outputs), False)
        with gc_paused():
            view = verify(loaded.record, loaded.chain, loaded.rows, seq)
            cp = decode_checkpoint(loaded.record, view, self._serializers, outputs=outputs,
                                   envelope=self._envelope, blobs=loaded.blobs)  # fmt: skip
            if adopt:
                self._core.adopt(loaded.record, view, loaded.run, loaded.chain, loaded.blobs)
                if fingerprints:
                    cp = _without_stale(cp, self._core.mark_stale(fingerprints), self._core.rows)
                self._core.state = cp.state
        self._emit(LOAD, seq=cp.seq, trigger=cp.info.trigger, info=cp.info,
                   duration_s=time.perf_counter() - started)  # fmt: skip
        return cp

    def _can_resume(self) -> Program[bool]:
        """Whether the run has a live checkpoint and did not succeed (False when disabled)."""
        if not self.enabled:
            return False
        run: RunInfo | None = yield Call(P.run_info, (self.run_id,), False)
        return run is not None and run.can_resume

    def _run_info(self) -> Program[RunInfo | None]:
        """The run's row (status, error, high-water seq) and live checkpoints; None if unknown."""
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        run: RunInfo | None = yield Call(P.run_info, (self.run_id,), False)
        return run

    def _list_checkpoints(self) -> Program[list[CheckpointInfo]]:
        """The run's live checkpoints, oldest first."""
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        records = yield Call(P.list_checkpoints, (self.run_id,), False)
        return [r.info() for r in records]

    # -- deletes -------------------------------------------------------------

    def _delete(self, seq: int | None = None) -> Program[int]:
        """Delete one checkpoint, or every checkpoint of the run (its seqs are never reused).

        Raises:
            CheckpointNotFound: nothing to delete.
        """
        seq = _seq(seq)
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        n: int = yield Call(P.delete, (self.run_id, seq), True)
        if seq is None or seq == self._core.base_seq:
            self._core.forget_lineage()  # the next save writes every node
        self._emit(PRUNE, trigger="delete", removed=() if seq is None else (seq,))
        return n

    def _prune(self, keep: int) -> Program[list[int]]:
        """Keep the newest ``keep`` checkpoints; return the removed seqs, oldest first."""
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise TypeError(f"keep must be an int, got {type(keep).__name__}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not self.enabled:
            raise CheckpointingDisabled(self.run_id)
        removed: tuple[int, ...] = yield Call(P.prune, (self.run_id, keep), True)
        if removed:
            self._emit(PRUNE, trigger="prune", removed=removed)
        return list(removed)

    # -- hooks ---------------------------------------------------------------

    def _on_run_start(
        self,
        *,
        graph: Mapping[str, Collection[str]] | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> Program[None] | None:
        """Before the first node runs; graph maps node -> dependencies. Raises GraphMismatch.

        ``fingerprints`` are stored with the nodes that finish in this run (see
        ``restore_checkpoint``).
        """
        if not self.enabled:
            return None
        core = self._core
        core.set_fingerprints(fingerprints)
        core.run_started(graph)
        if core.announce_resume:
            core.announce_resume = False
            self._emit(RESUME, seq=core.restored_seq, trigger=core.restored_trigger)
        return None

    def _on_node_start(
        self, *, node_id: str, deps: Collection[str] | None = None
    ) -> Program[None] | None:
        """Before a node runs; a failed 'before_nodes' save raises unless on_error='log'.

        ``deps``: the nodes it depends on, for a node the graph given to
        ``on_run_start`` did not have (found at run time); they tell a resume what is
        downstream of a stale node.
        """
        if not self.enabled:
            return None
        if node_id in self._core.policy.before_nodes:
            return self._save_then_start(node_id, deps)
        self._core.node_started(node_id, deps)
        return None

    def _save_then_start(self, node_id: str, deps: Collection[str] | None) -> Program[None]:
        yield from self._auto("before_node", node_id)
        self._core.node_started(node_id, deps)

    def _on_node_finish(
        self, *, node_id: str, output: Any = None, fingerprint: str | None = None
    ) -> Program[None] | None:
        """After a node succeeded: its output is encoded now; may save (see on_error).

        ``fingerprint`` (what the output was computed from) overrides the one given
        to ``on_run_start`` for this node.
        """
        if not self.enabled:
            return None
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        if self._offload and is_large(output):
            return self._finish_off_loop(node_id, output, fingerprint)
        try:
            trigger = self._core.node_finished(node_id, output, fingerprint)
        except SerializationError as exc:
            self._emit(ERROR, trigger="output", error=exc)
            if self.policy.on_error == "raise":
                raise
            return None  # the node stays unfinished: resume runs it again
        return None if trigger is None else self._auto(trigger, node_id)

    def _finish_off_loop(self, node_id: str, output: Any, fingerprint: str | None) -> Program[None]:
        if node_id not in self._core.rows:
            check_id("node_id", node_id)
        try:
            sealed = yield Work(self._core.encode_output, (node_id, output))
        except SerializationError as exc:
            self._emit(ERROR, trigger="output", error=exc)
            if self.policy.on_error == "raise":
                raise
            return  # the node stays unfinished: resume runs it again
        trigger = self._core.node_encoded(node_id, sealed, fingerprint)
        if trigger is not None:
            yield from self._auto(trigger, node_id)

    def _on_node_error(self, *, node_id: str, error: BaseException | str) -> Program[None] | None:
        """After a node raised; bookkeeping only (its output is dropped), never a save."""
        if self.enabled:
            self._core.node_failed(node_id, error)
        return None

    def _on_run_pause(self, *, reason: str | None = None) -> Program[None] | None:
        """When the runner pauses: saves if policy.on_pause, else records the status."""
        if not self.enabled:
            return None
        self._core.paused()
        if self.policy.on_pause:
            return self._auto("pause", label=reason)
        return self._set_status() if self._core.has_row else None

    def _on_run_end(
        self, *, success: bool, error: BaseException | None = None
    ) -> Program[None] | None:
        """After the last node: records success or failure (and its error).

        Failure saves if policy.on_failure. A checkpoint failure never replaces
        the runner's own ``error``: it is attached to it as a note and reported
        as a checkpoint.error event.
        """
        if not self.enabled:
            return None
        core = self._core
        core.ended(bool(success), error)
        if success:
            if self.policy.delete_on_success and core.has_row:
                return self._delete_finished()
            return self._set_status() if core.has_row else None
        if self.policy.on_failure:
            prog: Program[None] | None = self._save_failed_run()
        else:
            prog = self._set_status() if core.has_row else None
        return prog if prog is None or error is None else self._shielding(prog, error)

    def _save_failed_run(self) -> Program[None]:
        try:
            yield from self._save("run_failed", None, None, None)
        except PitstopError:
            if self._core.has_row:  # the checkpoint failed: record the failure at least
                with contextlib.suppress(PitstopError):
                    yield Call(P.set_run, (self._core.run_fields(),), True)
            if self.policy.on_error == "raise":
                raise

    def _delete_finished(self) -> Program[None]:
        yield from self._set_status()
        with contextlib.suppress(CheckpointNotFound):  # nothing left to delete
            yield from self._delete()

    def _shielding(self, prog: Program[None], error: BaseException) -> Program[None]:
        try:
            yield from prog
        except PitstopError as exc:
            error.add_note(f"pitstop: the checkpoint at run end failed too: {exc!r}")

    save_checkpoint = op(_save_checkpoint)
    restore_checkpoint = op(_restore_checkpoint)
    load_checkpoint = op(_load_checkpoint)
    can_resume = op(_can_resume)
    run_info = op(_run_info)
    list_checkpoints = op(_list_checkpoints)
    delete = op(_delete)
    prune = op(_prune)
    on_run_start = op(_on_run_start)
    on_node_start = op(_on_node_start)
    on_node_finish = op(_on_node_finish)
    on_node_error = op(_on_node_error)
    on_run_pause = op(_on_run_pause)
    on_run_end = op(_on_run_end)


def _without_stale(
    cp: Checkpoint, stale: Mapping[str, str], rows: Mapping[str, NodeRow]
) -> Checkpoint:
    """``cp`` with its stale nodes as ``rows`` (the manager's bookkeeping) now has them:
    pending, their outputs dropped."""
    if not stale:
        return cp
    nodes = cast(NodeMap, cp.nodes)  # a Checkpoint always holds a NodeMap
    fields = dict(nodes.fields)
    fields.update((node_id, rows[node_id]) for node_id in stale)
    outputs = {k: v for k, v in nodes.outputs.items() if k not in stale}
    return Checkpoint(info=cp.info, nodes=NodeMap(fields, outputs), state=cp.state, stale=stale)

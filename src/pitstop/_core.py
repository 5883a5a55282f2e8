"""The run's bookkeeping, with no I/O: node states, the dirty set, policy
decisions, and the plan of each save (encoded rows, lineage, manifest).

Both managers drive one ``RunCore``; it never awaits, never starts a thread
and never touches a store. A lock guards the bookkeeping so a sync runner may
call hooks from several threads while another thread saves.
"""

from __future__ import annotations

import hashlib
import json
import operator
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import msgspec

from ._codec import (
    _OUTPUT,
    FORMAT_VERSION,
    digest,
    manifest_hex,
    manifest_term,
    node_checksum,
    payload_hash,
    record_checksum,
    snapshot_blob,
)
from ._errors import GraphMismatch, SerializationError
from ._policy import CheckpointPolicy, PolicyClock, dag_levels
from ._records import COMPLETED as _COMPLETED
from ._records import FAILED as _FAILED
from ._records import PENDING as _PENDING
from ._records import RUNNING as _RUNNING
from ._records import CheckpointRecord, NodeRow
from ._serde import Serializer, encode_metadata
from ._types import NodeState, NodeStatus, RunInfo, RunStatus, check_id
from .codecs._envelope import Envelope, Sealed, is_ref


def graph_fingerprint(graph: Mapping[str, Collection[str]]) -> str:
    """A short stable digest of a graph (node ids and their dependency sets)."""
    canon = sorted((k, sorted(v)) for k, v in graph.items())
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


def error_text(error: BaseException | str) -> str:
    """An error as storable text: NUL and lone surrogates (which PostgreSQL or UTF-8
    refuse) escaped, so recording a failure can never itself fail."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class RunFields:
    """The run's row, as a save or a status change writes it."""

    run_id: str
    status: RunStatus
    attempt: int
    started_at: float | None
    ended_at: float | None
    error: str | None
    graph_fingerprint: str | None


_RUN_VALUES = operator.attrgetter(*[f.name for f in fields(RunFields)][1:])
"""A RunFields' values after its run id, in field order (as ``RunCore.run_fields``
passes them)."""


SMALL_VIEW_ROWS = 64
"""A view of at most this many rows whose outputs hold at most
``CheckpointPolicy.snapshot_small`` bytes is saved whole at every save."""


class SavePlan(msgspec.Struct):
    """Everything one save writes, encoded before the transaction starts (a Struct:
    one per save, built in C).

    ``finalize(seq)`` runs inside the transaction, once the seq is known: a
    snapshot encodes every row into one blob; a delta checksums its own rows
    (the checksums cover the seq) and sums them into its manifest.
    """

    run_id: str
    rows: list[NodeRow]
    changed: set[str]
    snapshot: bool
    parent_seq: int | None
    root_seq: int | None
    expected_hwm: int | None
    base_checksum: str | None
    """Checksum of the checkpoint at ``parent_seq`` as this manager wrote or read it
    (None when there is no base): a save whose base seq now holds another checkpoint
    (the seq was given again after commits were lost) is stale, not a base."""
    node_count: int
    """Nodes in the view this checkpoint makes: the base's and any new ones."""
    header: dict[str, Any]
    run: RunFields
    keep_last: int | None
    meta: dict[str, Any]
    """The metadata as written (for the CheckpointInfo the save returns)."""
    run_changed: bool
    """Whether the run's row must be written (its fields changed since last written)."""
    refs: tuple[str, ...] = ()
    """Digests (hex) of the blobs this checkpoint's rows refer to."""
    blobs: Mapping[str, tuple[str, bytes]] = msgspec.field(default_factory=dict)
    """Digest (hex) -> (recipe, stored bytes) of every ref, to write those the store lacks."""
    collect: bool = True
    """Whether retention (``keep_last``) also deletes what no live checkpoint reads."""
    record: CheckpointRecord | None = None

    def finalize(self, seq: int) -> tuple[CheckpointRecord, list[NodeRow]]:
        """The checkpoint row, and the node rows to insert (none for a snapshot)."""
        run_id, blob = self.run_id, None
        if self.snapshot:
            # A snapshot's rows carry no checksum of their own (the blob's digest is the
            # manifest): a stale one from an earlier delta would be dead weight to read.
            blob = snapshot_blob(list(map(partial(_replace, seq=seq, checksum=""), self.rows)))
            rows, manifest = [], _DIGEST(blob)
            written = count = len(self.rows)
        else:
            rows = [row.replace(seq=seq, checksum=node_checksum(run_id, seq, row))
                    for row in self.rows]  # fmt: skip
            manifest = manifest_hex(sum(manifest_term(row.checksum) for row in rows))
            written = len(rows)
            count = self.node_count
        record = CheckpointRecord(
            run_id=run_id, seq=seq, parent_seq=self.parent_seq,
            root_seq=seq if self.snapshot else (self.root_seq or seq),
            nodes_written=written, node_count=count, manifest=manifest, snapshot=blob,
            **self.header,
        )  # fmt: skip
        # Set once here, before anything has seen it.
        record.checksum = record_checksum(record)
        self.record = record
        return self.record, rows


_replace = msgspec.structs.replace
_DIGEST = digest(FORMAT_VERSION)
_NO_METADATA = encode_metadata({})
_NO_PAYLOAD_HASH = payload_hash(_NO_METADATA, None)
"""The payload hash of a checkpoint with no metadata and no state (most of them)."""


def _output_bytes(rows: Iterable[NodeRow]) -> int:
    """The stored bytes of the outputs ``rows`` hold (in C-level passes: a small run
    counts them at every save)."""
    return sum(map(len, filter(None, map(_OUTPUT, rows))))


class RunCore:
    """Bookkeeping of one run, shared by the sync and async managers."""

    def __init__(
        self,
        run_id: str,
        serializer: Serializer,
        policy: CheckpointPolicy,
        metadata: Mapping[str, Any],
        envelope: Envelope,
    ) -> None:
        self.run_id = check_id("run_id", run_id)
        self.serializer = serializer
        self.tag = serializer.tag
        self.envelope = envelope
        self.fingerprints: dict[str, str] = {}
        """Each node's current fingerprint, as the runner declared it (none: unknown)."""
        self.blobs: dict[bytes, tuple[str, bytes]] = {}
        """Digest -> (recipe, stored bytes) of the blobs the rows refer to (and, until
        the next pruning, of some they no longer do)."""
        self.blobs_kept = 0
        """How many blobs the last pruning of ``blobs`` kept."""
        self.policy = policy
        self.metadata = dict(metadata)
        encode_metadata(self.metadata)  # refuse bad metadata at construction
        self.state: Any = None
        self.lock = threading.Lock()
        self.clock = PolicyClock(policy)
        self.rows: dict[str, NodeRow] = {}
        self.dirty: set[str] = set()
        self.hwm: int | None = None
        """The run's high-water seq as this manager last saw it (None: never read)."""
        self.restored_seq: int | None = None
        self.restored_trigger: str | None = None
        self.announce_resume = False
        self._new_lineage()
        self.status: RunStatus | None = None
        self.attempt = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error: str | None = None
        self.graph_fp: str | None = None
        self.run_written: RunFields | None = None
        """The run's fields as this manager last wrote them (None: unknown)."""

    def _new_lineage(self) -> None:
        self.base_seq: int | None = None
        self.root_seq: int | None = None
        self.base_checksum: str | None = None
        self.since_snapshot = 0
        self.rows_since_snapshot = 0
        self.since_collect = 0
        """Saves since retention last collected garbage (see ``plan``)."""

    # -- hooks: bookkeeping only ---------------------------------------------

    def run_started(self, graph: Mapping[str, Collection[str]] | None) -> None:
        """A run (or a retry of it) starts. Raises GraphMismatch, ValueError on a bad graph
        (or none, when the policy saves after each level: levels come from the graph)."""
        if graph is None and self.policy.after_each_level:
            raise ValueError(
                "CheckpointPolicy(after_each_level=True) needs on_run_start(graph=...): "
                "without the graph there are no levels, and it would never save"
            )
        levels = {} if graph is None else dag_levels(graph)
        with self.lock:
            if self.status is RunStatus.SUCCEEDED:
                # Running a finished run again starts it fresh, as a new lineage.
                self.rows, self.dirty = {}, set()
                self.state, self.attempt, self.restored_seq = None, 0, None
                self._new_lineage()
            if graph is not None:
                if self.restored_seq is not None:
                    self._check_graph(graph)
                for node_id, deps in graph.items():
                    if node_id not in self.rows:
                        check_id("node_id", node_id)
                        self.rows[node_id] = NodeRow(node_id, _PENDING, 0, None, None, None,
                                                     tuple(deps), self.tag, None)  # fmt: skip
                        self.dirty.add(node_id)
                self.graph_fp = graph_fingerprint(graph)
            self.status = RunStatus.RUNNING
            self.attempt += 1
            self.started_at, self.ended_at, self.error = time.time(), None, None
            done = [k for k, r in self.rows.items() if r.status == _COMPLETED]
            self.clock.start(levels, done)

    def _check_graph(self, graph: Mapping[str, Collection[str]]) -> None:
        old = {k: set(r.deps) for k, r in self.rows.items()}
        new = {k: set(v) for k, v in graph.items()}
        if old == new:
            return
        changed = [k for k in old.keys() & new.keys() if old[k] != new[k]]
        added, removed = new.keys() - old.keys(), old.keys() - new.keys()
        raise GraphMismatch(self.run_id, added=added, removed=removed, changed=changed)

    # Hooks run on the runner's hot path: each builds the node's new row in one
    # call (rows are immutable named tuples, replaced whole under the lock).

    def node_started(self, node_id: str, deps: Collection[str] | None = None) -> None:
        if node_id not in self.rows:
            check_id("node_id", node_id)
        given = None
        if deps is not None:  # a node found at run time, with what it depends on
            if isinstance(deps, str):
                raise TypeError("deps must be a collection of node ids, not a str")
            given = tuple(deps)
            for dep in given:
                check_id("dependency", dep)
        now = time.time()
        with self.lock:
            rows = self.rows  # a restore may have swapped the dict meanwhile
            old = rows.get(node_id)
            # A re-run drops the previous output and error: they no longer hold.
            if old is None:
                rows[node_id] = NodeRow(node_id, _RUNNING, 1, None, now, None, given or (),
                                        self.tag, None)  # fmt: skip
            else:
                rows[node_id] = NodeRow(node_id, _RUNNING, old.attempt + 1, None, now, None,
                                        old.deps if given is None else given, self.tag,
                                        None)  # fmt: skip
            self.dirty.add(node_id)

    def set_fingerprints(self, fingerprints: Mapping[str, str] | None) -> None:
        if fingerprints is None:
            return
        for node_id, fp in fingerprints.items():
            check_id("node_id", node_id)
            if not isinstance(fp, str):
                raise TypeError(
                    f"fingerprint of {node_id!r} must be a str, got {type(fp).__name__}"
                )
        with self.lock:
            self.fingerprints.update(fingerprints)

    def mark_stale(self, fingerprints: Mapping[str, str]) -> dict[str, str]:
        """Completed nodes whose fingerprint is not the one given, and every node
        downstream of them, become pending again (their outputs dropped). Returns
        why, by node id. Nodes ``fingerprints`` does not name are not judged."""
        with self.lock:
            rows = self.rows
            why: dict[str, str] = {}
            for node_id, fp in fingerprints.items():
                row = rows.get(node_id)
                if row is None or row.status != _COMPLETED or row.fingerprint == fp:
                    continue
                was = "none" if row.fingerprint is None else repr(row.fingerprint[:16])
                why[node_id] = f"fingerprint changed (was {was}, now {fp[:16]!r})"
            children: dict[str, list[str]] = {}
            for node_id, row in rows.items():
                for dep in row.deps:
                    children.setdefault(dep, []).append(node_id)
            todo = sorted(why)
            while todo:
                parent = todo.pop()
                for child in children.get(parent, ()):
                    if child not in why and rows[child].status == _COMPLETED:
                        why[child] = f"upstream node {parent!r} is stale"
                        todo.append(child)
            for node_id, reason in why.items():
                old = rows[node_id]
                rows[node_id] = NodeRow(node_id, _PENDING, old.attempt, f"stale: {reason}", None,
                                        None, old.deps, self.tag, None)  # fmt: skip
                self.dirty.add(node_id)
            return why

    def node_finished(
        self, node_id: str, output: Any, fingerprint: str | None = None
    ) -> str | None:
        """Capture the output now (encoded, so later mutation cannot change it).

        Returns the trigger of a save the policy makes due, if any.

        Raises:
            SerializationError: the output cannot be encoded; the node stays as it was.
        """
        if node_id not in self.rows:
            check_id("node_id", node_id)
        return self.node_encoded(node_id, self.encode_output(node_id, output), fingerprint)

    def encode_output(self, node_id: str, output: Any) -> Sealed:
        """A node's output as stored (thread-safe: the async twin may call it off the loop).

        Raises:
            SerializationError: naming the node and the path inside the output.
        """
        try:
            return self.envelope.seal(self.tag, self.serializer.dumps(output))
        except SerializationError as exc:
            raise exc.about(f"output of node {node_id!r} ", node_id) from exc

    def node_encoded(
        self, node_id: str, sealed: Sealed, fingerprint: str | None = None
    ) -> str | None:
        """``node_finished`` with the output already encoded."""
        tag, out = sealed.tag, sealed.data
        now = time.time()
        with self.lock:
            fp = fingerprint if fingerprint is not None else self.fingerprints.get(node_id)
            if sealed.blob is not None:
                self.blobs[out] = sealed.blob[1:]
            rows = self.rows  # a restore may have swapped the dict meanwhile
            old = rows.get(node_id)
            if old is None:
                rows[node_id] = NodeRow(node_id, _COMPLETED, 0, None, None, now, (), tag, out,
                                        fingerprint=fp)  # fmt: skip
            else:
                rows[node_id] = NodeRow(node_id, _COMPLETED, old.attempt, None, old.started_at,
                                        now, old.deps, tag, out, fingerprint=fp)  # fmt: skip
            self.dirty.add(node_id)
            if old is not None and old.status == _COMPLETED:
                return None
            return self.clock.finished(node_id)

    def node_failed(self, node_id: str, error: BaseException | str) -> None:
        if node_id not in self.rows:
            check_id("node_id", node_id)
        text, now = error_text(error), time.time()
        with self.lock:
            rows = self.rows  # a restore may have swapped the dict meanwhile
            old = rows.get(node_id)
            if old is None:
                rows[node_id] = NodeRow(node_id, _FAILED, 0, text, None, now, (), self.tag, None)
            else:
                rows[node_id] = NodeRow(node_id, _FAILED, old.attempt, text, old.started_at, now,
                                        old.deps, self.tag, None)  # fmt: skip
            self.dirty.add(node_id)

    def paused(self) -> None:
        self.status = RunStatus.PAUSED

    def ended(self, success: bool, error: BaseException | str | None) -> None:
        self.status = RunStatus.SUCCEEDED if success else RunStatus.FAILED
        self.ended_at = time.time()
        self.error = None if success or error is None else error_text(error)

    @property
    def has_row(self) -> bool:
        """Whether the store holds this run as far as this manager knows."""
        return self.hwm is not None

    # -- saves ---------------------------------------------------------------

    def merge(self, nodes: Iterable[NodeState] | None) -> None:
        """Adopt explicit node states given to ``save_checkpoint`` (encoded now)."""
        if nodes is None:
            return
        rows = []
        blobs: dict[bytes, tuple[str, bytes]] = {}
        for ns in nodes:
            if not isinstance(ns, NodeState):
                raise TypeError(f"nodes must hold NodeState, got {type(ns).__name__}")
            out, tag = None, self.tag
            if ns.status is NodeStatus.COMPLETED or ns.output is not None:
                sealed = self.encode_output(ns.node_id, ns.output)
                out, tag = sealed.data, sealed.tag
                if sealed.blob is not None:
                    blobs[out] = sealed.blob[1:]
            error = None if ns.error is None else error_text(ns.error)
            rows.append(NodeRow(ns.node_id, ns.status.value, ns.attempt, error, ns.started_at,
                                ns.finished_at, ns.deps, tag, out,
                                fingerprint=ns.fingerprint))  # fmt: skip
        with self.lock:
            self.blobs.update(blobs)
            for row in rows:
                self.rows[row.node_id] = row
                self.dirty.add(row.node_id)

    def run_fields(self) -> RunFields:
        """The run's row as it is now: the one last written when nothing changed since
        (so a save compares by identity, and builds nothing, when the run is as it was)."""
        values = (self.status or RunStatus.RUNNING, max(self.attempt, 1), self.started_at,
                  self.ended_at, self.error, self.graph_fp)  # fmt: skip
        w = self.run_written
        if w is not None and _RUN_VALUES(w) == values:
            return w
        return RunFields(self.run_id, *values)

    def plan(
        self,
        trigger: str,
        label: str | None,
        node: str | None,
        metadata: Mapping[str, Any] | None,
        *,
        snapshot: bool = False,
    ) -> SavePlan:
        """Take the changes since the last save out of the dirty set and encode them.

        Raises:
            SerializationError: the state or metadata cannot be encoded (nothing changes).
        """
        meta_dict = {**self.metadata, **(metadata or {})}
        meta = encode_metadata(meta_dict) if meta_dict else _NO_METADATA
        state, state_tag = None, self.tag
        if self.state is not None:
            try:
                sealed = self.envelope.seal(self.tag, self.serializer.dumps(self.state),
                                            dedup=False)  # fmt: skip
            except SerializationError as exc:
                raise exc.about("state ", None) from exc
            state, state_tag = sealed.data, sealed.tag
        with self.lock:
            # A snapshot bounds what a restore reads: at most snapshot_every checkpoints,
            # and delta rows (each dearer to read than a snapshot's) to a quarter of
            # the nodes (or 64, below which it does not matter).
            snapshot = (
                snapshot
                or self.base_seq is None
                or self.since_snapshot + 1 >= self.policy.snapshot_every
                or self.rows_since_snapshot + len(self.dirty) > max(64, len(self.rows) // 4)
            )
            # Retention collects garbage at the snapshots above; a small view's
            # snapshot (below) is only cheaper to read back. A small run writes only
            # such snapshots, so the count above never comes due for it: collect
            # every snapshot_every saves as well, or its retired checkpoints pile up
            # and every save's retention reads through them (measured, keep_last=5 at
            # K=10: 2.0 ms a save after 1,000 saves, 3.5 ms after 2,000).
            collect = snapshot or self.since_collect + 1 >= self.policy.snapshot_every
            # A small view is written whole at every save: its snapshot costs what
            # a delta does, and a restore then reads one checkpoint, not a chain.
            small, held = self.policy.snapshot_small, None
            if not snapshot and small > 0 and len(self.rows) <= SMALL_VIEW_ROWS:
                held = _output_bytes(self.rows.values())
                snapshot = held <= small
            changed, self.dirty = self.dirty, set()
            # Every row is in the base's view or changed since (a new node is dirty
            # from its first event): the new view is every row held now.
            node_count = len(self.rows)
            rows = list(map(self.rows.__getitem__, sorted(self.rows if snapshot else changed)))
            refs: set[bytes] = set()
            if self.blobs:  # only a run that stored a blob has rows referring to one
                refs = {r.output for r in rows if r.output is not None and is_ref(r.serializer)}
            blobs = {d.hex(): self.blobs[d] for d in refs if d in self.blobs} if refs else {}
        # (A small run's snapshot holds every row: their bytes were just counted.)
        outs = held if held is not None and snapshot else _output_bytes(rows)
        size = len(meta) + len(state or b"") + outs
        header = dict(created_at=time.time(), trigger=trigger, label=label, node=node,
                      schema_version=FORMAT_VERSION, serializer=state_tag, metadata=meta,
                      state=state, size=size,
                      payload_hash=_NO_PAYLOAD_HASH if state is None and meta is _NO_METADATA
                      else payload_hash(meta, state))  # fmt: skip
        run = self.run_fields()
        return SavePlan(
            run_id=self.run_id, rows=rows, changed=changed, snapshot=snapshot,
            parent_seq=self.base_seq, root_seq=self.root_seq, expected_hwm=self.hwm,
            base_checksum=self.base_checksum,
            node_count=node_count, header=header,
            run=run, keep_last=self.policy.keep_last, meta=meta_dict,
            run_changed=run is not self.run_written, refs=tuple(sorted(d.hex() for d in refs)),
            blobs=blobs, collect=collect,
        )  # fmt: skip

    def abort(self, plan: SavePlan) -> None:
        """The save did not happen: its changes are pending again."""
        with self.lock:
            self.dirty |= plan.changed

    def commit(self, plan: SavePlan, hwm: int) -> None:
        """The save is durable: it becomes the base of the next delta."""
        record = plan.record
        if record is None:
            raise RuntimeError("commit of a plan that was never finalized")
        with self.lock:
            self.base_seq, self.root_seq = record.seq, record.root_seq
            self.base_checksum = record.checksum
            self.since_snapshot = 0 if plan.snapshot else self.since_snapshot + 1
            self.since_collect = 0 if plan.collect else self.since_collect + 1
            self.rows_since_snapshot = (
                0 if plan.snapshot else self.rows_since_snapshot + len(plan.rows)
            )
            self.hwm = hwm
            self.run_written = plan.run
            self.clock.saved()
            # Forget blobs no row refers to any more. That reads every row, so it runs
            # only once the blobs held have doubled since the last time: saves stay
            # flat in K, and memory within twice what the rows refer to.
            if len(self.blobs) > 2 * self.blobs_kept:
                live = {r.output for r in self.rows.values() if is_ref(r.serializer)}
                self.blobs = {d: b for d, b in self.blobs.items() if d in live}
                self.blobs_kept = len(self.blobs)

    def adopt(
        self,
        record: CheckpointRecord,
        view: Mapping[str, NodeRow],
        run: RunInfo,
        chain: Sequence[CheckpointRecord],
        blobs: Mapping[bytes, tuple[str, bytes]],
    ) -> None:
        """Make a loaded (verified) checkpoint the base of this run's next saves."""
        with self.lock:
            self.rows = dict(view)
            self.blobs = dict(blobs)
            self.blobs_kept = len(self.blobs)
            self.dirty = set()
            self.base_seq, self.root_seq = record.seq, record.root_seq
            self.base_checksum = record.checksum
            self.since_snapshot = len(chain) - 1
            # When retention last collected is not known here: the first save after a
            # restore collects (else a worker that restores and saves a few times,
            # over and over, would never reach snapshot_every saves, and a small
            # run's retired checkpoints would pile up again).
            self.since_collect = self.policy.snapshot_every
            self.rows_since_snapshot = sum(r.nodes_written for r in chain[1:])
            self.hwm = run.last_seq
            self.restored_seq, self.restored_trigger = record.seq, record.trigger
            self.run_written = None
            self.announce_resume = True
            self.status, self.attempt, self.graph_fp = None, run.attempt, run.graph_fingerprint
            self.started_at, self.ended_at, self.error = run.started_at, None, None

    def forget_lineage(self) -> None:
        """The run's checkpoints were deleted: the next save is a full snapshot."""
        with self.lock:
            self._new_lineage()

"""The async Store protocol and the encoded rows stores keep.

Stores move bytes; they never serialize user values nor verify checksums (the
manager does both, in one place, so every backend behaves the same).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .._errors import CorruptCheckpoint
from .._types import CheckpointInfo, RunInfo


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node's state as stored: written only when it changed since the base checkpoint."""

    node_id: str
    status: str
    attempt: int
    error: str | None
    started_at: float | None
    finished_at: float | None
    deps: tuple[str, ...]
    serializer: str
    output: bytes | None
    checksum: str
    seq: int = 0
    """Seq of the checkpoint that wrote this row (set by the store)."""


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One checkpoint row as stored (node rows travel beside it)."""

    run_id: str
    seq: int
    """0 when handed to ``Store.save``; the store assigns the real one."""
    parent_seq: int | None
    created_at: float
    trigger: str
    label: str | None
    node: str | None
    schema_version: int
    serializer: str
    metadata: bytes
    """JSON object, always stdlib JSON whatever the serializer."""
    state: bytes | None
    checksum: str
    size: int
    nodes_written: int

    def info(self) -> CheckpointInfo:
        """The header as users see it.

        Raises:
            CorruptCheckpoint: the metadata column is not a JSON object.
        """
        try:
            meta = json.loads(self.metadata) if self.metadata else {}
        except ValueError as exc:
            raise CorruptCheckpoint(self.run_id, self.seq, f"metadata is not JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise CorruptCheckpoint(self.run_id, self.seq, "metadata is not a JSON object")
        return CheckpointInfo(
            run_id=self.run_id,
            seq=self.seq,
            parent_seq=self.parent_seq,
            created_at=self.created_at,
            trigger=self.trigger,
            label=self.label,
            node=self.node,
            schema_version=self.schema_version,
            serializer=self.serializer,
            checksum=self.checksum,
            size=self.size,
            nodes_written=self.nodes_written,
            metadata=meta,
        )


@runtime_checkable
class Store(Protocol):
    """Async checkpoint storage. Use as ``async with store:`` (or open()/close())."""

    async def open(self) -> None:
        """Connect and create tables; idempotent."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def save(
        self, record: CheckpointRecord, nodes: Sequence[NodeRow], *, base_seq: int | None
    ) -> int:
        """Write a checkpoint and its changed node rows in one transaction; return its seq.

        ``base_seq`` is the checkpoint ``nodes`` is a delta against (``None``: a full
        snapshot). Raises ``StaleBaseError`` when it is not the run's latest seq.
        """
        ...

    async def load(
        self, run_id: str, seq: int | None = None
    ) -> tuple[CheckpointRecord, list[NodeRow]]:
        """The checkpoint (latest when ``seq`` is None) and, per node, its newest row <= seq.

        Raises ``CheckpointNotFound``.
        """
        ...

    async def latest_seq(self, run_id: str) -> int | None:
        """Seq of the run's newest checkpoint, None when it has none."""
        ...

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """Every checkpoint of a run, oldest first (empty when none)."""
        ...

    async def list_runs(self) -> list[RunInfo]:
        """Every run with at least one checkpoint, by run_id."""
        ...

    async def delete(self, run_id: str, seq: int | None = None) -> int:
        """Delete one checkpoint (or the whole run); return checkpoints removed.

        Node rows still needed by remaining checkpoints are kept.
        Raises ``CheckpointNotFound`` when there was nothing to delete.
        """
        ...

    async def prune(self, run_id: str, keep: int) -> list[int]:
        """Keep the newest ``keep`` checkpoints of a run; return the seqs removed."""
        ...


class StoreContext:
    """``async with store:`` for stores: open on entry, close on exit."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def unneeded_rows(
    rows: Iterable[tuple[str, int]], kept_seqs: Sequence[int]
) -> set[tuple[str, int]]:
    """Node rows (node_id, seq) that no kept checkpoint reads any more.

    A checkpoint at seq S reads, per node, the newest row with seq <= S; a row
    is needed when some kept S reads it.
    """
    kept = sorted(kept_seqs)
    by_node: dict[str, list[int]] = {}
    for node_id, seq in rows:
        by_node.setdefault(node_id, []).append(seq)
    drop: set[tuple[str, int]] = set()
    for node_id, seqs in by_node.items():
        seqs.sort()
        needed: set[int] = set()
        i = 0
        for s in kept:
            while i + 1 < len(seqs) and seqs[i + 1] <= s:
                i += 1
            if seqs[i] <= s:
                needed.add(seqs[i])
        drop.update((node_id, s) for s in seqs if s not in needed)
    return drop


def keep_range(seqs: Sequence[int], keep: int) -> tuple[list[int], list[int]]:
    """Split seqs into (kept newest ``keep``, removed). Raises ValueError for keep < 1."""
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int, got {type(keep).__name__}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ordered = sorted(seqs)
    return ordered[-keep:], ordered[:-keep]

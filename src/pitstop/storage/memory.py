"""In-memory store for tests and short-lived runs: same contract, nothing on disk."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from .._errors import CheckpointNotFound, StaleBaseError
from .._types import CheckpointInfo, RunInfo
from .base import CheckpointRecord, NodeRow, StoreContext, keep_range, unneeded_rows


class MemoryStore(StoreContext):
    """Keeps checkpoints in dicts; every method holds one lock, like a transaction."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, dict[int, CheckpointRecord]] = {}
        # run_id -> node_id -> seq -> row
        self._nodes: dict[str, dict[str, dict[int, NodeRow]]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save(
        self, record: CheckpointRecord, nodes: Sequence[NodeRow], *, base_seq: int | None
    ) -> int:
        async with self._lock:
            run = self._checkpoints.setdefault(record.run_id, {})
            # Seqs are inserted in increasing order, so the last key is the latest.
            latest = next(reversed(run)) if run else None
            if base_seq is not None and base_seq != latest:
                raise StaleBaseError(record.run_id, base_seq, latest)
            seq = (latest or 0) + 1
            run[seq] = dataclasses.replace(record, seq=seq)
            run_nodes = self._nodes.setdefault(record.run_id, {})
            for row in nodes:
                run_nodes.setdefault(row.node_id, {})[seq] = dataclasses.replace(row, seq=seq)
            return seq

    async def load(
        self, run_id: str, seq: int | None = None
    ) -> tuple[CheckpointRecord, list[NodeRow]]:
        async with self._lock:
            run = self._checkpoints.get(run_id)
            if not run:
                raise CheckpointNotFound(run_id, seq)
            target = next(reversed(run)) if seq is None else seq
            record = run.get(target)
            if record is None:
                raise CheckpointNotFound(run_id, seq)
            rows: list[NodeRow] = []
            for versions in self._nodes.get(run_id, {}).values():
                newest = next((s for s in reversed(versions) if s <= target), None)
                if newest is not None:
                    rows.append(versions[newest])
            return record, rows

    async def latest_seq(self, run_id: str) -> int | None:
        run = self._checkpoints.get(run_id)
        return next(reversed(run)) if run else None

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        run = self._checkpoints.get(run_id, {})
        return [run[s].info() for s in sorted(run)]

    async def list_runs(self) -> list[RunInfo]:
        out = []
        for run_id in sorted(self._checkpoints):
            run = self._checkpoints[run_id]
            if not run:
                continue
            latest = run[max(run)]
            out.append(
                RunInfo(
                    run_id=run_id,
                    checkpoints=len(run),
                    first_seq=min(run),
                    latest_seq=latest.seq,
                    latest_at=latest.created_at,
                    size=sum(r.size for r in run.values()),
                )
            )
        return out

    async def delete(self, run_id: str, seq: int | None = None) -> int:
        async with self._lock:
            run = self._checkpoints.get(run_id)
            if not run or (seq is not None and seq not in run):
                raise CheckpointNotFound(run_id, seq)
            doomed = list(run) if seq is None else [seq]
            self._drop(run_id, doomed)
            return len(doomed)

    async def prune(self, run_id: str, keep: int) -> list[int]:
        async with self._lock:
            _, doomed = keep_range(list(self._checkpoints.get(run_id, {})), keep)
            self._drop(run_id, doomed)
            return doomed

    def _drop(self, run_id: str, seqs: Sequence[int]) -> None:
        run = self._checkpoints.get(run_id, {})
        for s in seqs:
            del run[s]
        nodes = self._nodes.get(run_id, {})
        pairs = [(n, s) for n, versions in nodes.items() for s in versions]
        for node_id, s in unneeded_rows(pairs, list(run)):
            del nodes[node_id][s]
            if not nodes[node_id]:
                del nodes[node_id]
        if not run:
            self._checkpoints.pop(run_id, None)
            self._nodes.pop(run_id, None)

"""The RunnerHooks protocol a runner calls, and the manager's implementation.

A runner guards every call site with the manager's plain ``enabled``
attribute (one truthiness check, no call), or reads it once per run and takes
a hook-free loop. Hooks only update in-memory bookkeeping; storage is written
only when a policy decides to call ``save_checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from ._errors import GraphMismatch
from ._events import RESUME, CheckpointEvent, Observer, emit
from ._policy import CheckpointPolicy, PolicyClock, dag_levels
from ._types import Checkpoint, NodeState, NodeStatus


@runtime_checkable
class RunnerHooks(Protocol):
    """What a runner may call; every method is optional to call and keyword-only."""

    async def on_run_start(self, *, graph: Mapping[str, Collection[str]] | None = None) -> None:
        """Before the first node runs; graph maps node -> dependencies. Raises GraphMismatch."""
        ...

    async def on_node_start(self, *, node_id: str) -> None:
        """Before a node runs; a failed 'before_nodes' save raises unless on_error='log'."""
        ...

    async def on_node_finish(self, *, node_id: str, output: Any = None) -> None:
        """After a node succeeded; a failed policy save raises unless on_error='log'."""
        ...

    async def on_node_error(self, *, node_id: str, error: BaseException | str) -> None:
        """After a node raised; only bookkeeping, never a save."""
        ...

    async def on_run_pause(self, *, reason: str | None = None) -> None:
        """When the runner pauses; saves if policy.on_pause (failure: as on_node_finish)."""
        ...

    async def on_run_end(self, *, success: bool, error: BaseException | None = None) -> None:
        """After the last node; success deletes checkpoints unless preserve, failure saves."""
        ...


class NodeRecord:
    """Mutable per-node bookkeeping (frozen NodeState is built only at save time)."""

    __slots__ = ("attempt", "deps", "error", "finished_at", "output", "started_at", "status")

    def __init__(self, deps: tuple[str, ...] = ()) -> None:
        self.status = NodeStatus.PENDING
        self.output: Any = None
        self.attempt = 0
        self.error: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.deps = deps

    @classmethod
    def from_state(cls, s: NodeState) -> NodeRecord:
        rec = cls(s.deps)
        rec.status, rec.output, rec.attempt, rec.error = s.status, s.output, s.attempt, s.error
        rec.started_at, rec.finished_at = s.started_at, s.finished_at
        return rec

    def freeze(self, node_id: str) -> NodeState:
        return NodeState(
            node_id=node_id,
            status=self.status,
            output=self.output,
            attempt=self.attempt,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            deps=self.deps,
        )


class HooksMixin:
    """RunnerHooks implemented over the manager's bookkeeping."""

    enabled: bool
    run_id: str
    policy: CheckpointPolicy
    _nodes: dict[str, NodeRecord]
    _dirty: set[str]
    _clock: PolicyClock
    _restored: Checkpoint | None
    _observers: list[Observer]
    _ended: bool

    async def _auto_save(
        self, trigger: str, node: str | None = None, label: str | None = None
    ) -> None:
        raise NotImplementedError

    async def _finish_run(self, success: bool) -> None:
        raise NotImplementedError

    def _forget_run(self) -> None:
        raise NotImplementedError

    def _node(self, node_id: str) -> NodeRecord:
        rec = self._nodes.get(node_id)
        if rec is None:
            rec = self._nodes[node_id] = NodeRecord()
        self._dirty.add(node_id)
        return rec

    async def on_run_start(self, *, graph: Mapping[str, Collection[str]] | None = None) -> None:
        if not self.enabled:
            return
        if self._ended:
            # The manager is reused for a new run: start from an empty slate.
            self._forget_run()
        levels: dict[str, int] = {}
        if graph is not None:
            levels = dag_levels(graph)
            if self._restored is not None:
                self._check_graph(graph)
            for node_id, deps in graph.items():
                if node_id not in self._nodes:
                    self._nodes[node_id] = NodeRecord(tuple(deps))
                    self._dirty.add(node_id)
        done = [k for k, r in self._nodes.items() if r.status is NodeStatus.COMPLETED]
        self._clock.start(levels, done)
        if self._restored is not None:
            r = self._restored
            emit(self._observers, CheckpointEvent(RESUME, self.run_id, r.seq, r.info.trigger))

    def _check_graph(self, graph: Mapping[str, Collection[str]]) -> None:
        old = {k: r.deps for k, r in self._nodes.items()}
        new = {k: tuple(v) for k, v in graph.items()}
        if old == new:
            return
        changed = [k for k in old.keys() & new.keys() if set(old[k]) != set(new[k])]
        added, removed = new.keys() - old.keys(), old.keys() - new.keys()
        if added or removed or changed:
            raise GraphMismatch(self.run_id, added=added, removed=removed, changed=changed)

    async def on_node_start(self, *, node_id: str) -> None:
        if not self.enabled:
            return
        if node_id in self.policy.before_nodes:
            await self._auto_save("before_node", node_id)
        rec = self._node(node_id)
        rec.status = NodeStatus.RUNNING
        rec.attempt += 1
        rec.error = None
        rec.started_at = time.time()
        rec.finished_at = None

    async def on_node_finish(self, *, node_id: str, output: Any = None) -> None:
        if not self.enabled:
            return
        rec = self._node(node_id)
        first = rec.status is not NodeStatus.COMPLETED
        rec.status = NodeStatus.COMPLETED
        rec.output = output
        rec.error = None
        rec.finished_at = time.time()
        if first:
            trigger = self._clock.finished(node_id)
            if trigger is not None:
                await self._auto_save(trigger, node_id)

    async def on_node_error(self, *, node_id: str, error: BaseException | str) -> None:
        if not self.enabled:
            return
        rec = self._node(node_id)
        rec.status = NodeStatus.FAILED
        rec.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        rec.finished_at = time.time()

    async def on_run_pause(self, *, reason: str | None = None) -> None:
        if self.enabled and self.policy.on_pause:
            await self._auto_save("pause", label=reason)

    async def on_run_end(self, *, success: bool, error: BaseException | None = None) -> None:
        if not self.enabled:
            return
        await self._finish_run(success)

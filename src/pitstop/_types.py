"""Domain types returned to users: frozen, separate from the storage rows."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class NodeStatus(enum.StrEnum):
    """Where a node stood when the checkpoint was taken."""

    PENDING = "pending"
    """Not started yet: runs on resume."""
    RUNNING = "running"
    """Started but not finished (interrupted): re-runs on resume (at-least-once)."""
    COMPLETED = "completed"
    """Finished; its output is kept and it is skipped on resume."""
    FAILED = "failed"
    """Raised an error; runs again on resume."""


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node's state inside a checkpoint."""

    node_id: str
    status: NodeStatus = NodeStatus.PENDING
    output: Any = None
    attempt: int = 0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise TypeError(f"node_id must be a non-empty str, got {self.node_id!r}")
        object.__setattr__(self, "status", NodeStatus(self.status))
        if self.attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {self.attempt}")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What a checkpoint is, without its payload (what ``list_checkpoints`` returns)."""

    run_id: str
    seq: int
    parent_seq: int | None
    created_at: float
    trigger: str
    label: str | None
    node: str | None
    schema_version: int
    serializer: str
    checksum: str
    size: int
    nodes_written: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run known to a store."""

    run_id: str
    checkpoints: int
    first_seq: int
    latest_seq: int
    latest_at: float
    size: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A restored, verified checkpoint.

    ``nodes`` holds every node's state; the properties sort them by what resume
    does with them.
    """

    info: CheckpointInfo
    nodes: Mapping[str, NodeState]
    state: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def seq(self) -> int:
        return self.info.seq

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.info.metadata

    @property
    def completed(self) -> Mapping[str, Any]:
        """Outputs of completed nodes, by node id: resume skips these."""
        return {k: n.output for k, n in self.nodes.items() if n.status is NodeStatus.COMPLETED}

    @property
    def interrupted(self) -> tuple[str, ...]:
        """Nodes that were running when the checkpoint was taken: resume re-runs them."""
        return self._with(NodeStatus.RUNNING)

    @property
    def pending(self) -> tuple[str, ...]:
        """Nodes that had not started: resume runs them."""
        return self._with(NodeStatus.PENDING)

    @property
    def failed(self) -> Mapping[str, str | None]:
        """Errors of failed nodes, by node id: resume runs them again."""
        return {k: n.error for k, n in self.nodes.items() if n.status is NodeStatus.FAILED}

    @property
    def to_run(self) -> tuple[str, ...]:
        """Every node resume must (re-)run: interrupted, failed and pending."""
        return tuple(k for k, n in self.nodes.items() if n.status is not NodeStatus.COMPLETED)

    @property
    def attempts(self) -> Mapping[str, int]:
        return {k: n.attempt for k, n in self.nodes.items()}

    @property
    def graph(self) -> Mapping[str, tuple[str, ...]]:
        """Dependencies of each node, as the runner declared them."""
        return {k: n.deps for k, n in self.nodes.items()}

    def _with(self, status: NodeStatus) -> tuple[str, ...]:
        return tuple(k for k, n in self.nodes.items() if n.status is status)

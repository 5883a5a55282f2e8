"""Domain types returned to users: frozen, separate from the storage rows."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ._records import NodeRow


def check_id(kind: str, value: object) -> str:
    """Validate a run or node id once, where it enters pitstop.

    Raises:
        TypeError: not a str.
        ValueError: empty, or holds NUL or a lone surrogate (no backend can store those).
    """
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{kind} {value!r} contains NUL, which PostgreSQL cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{kind} {value!r} is not valid UTF-8 (lone surrogate?)") from exc
    return value


def check_time(name: str, value: object) -> float | None:
    """A timestamp as float (whole numbers included), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


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


class RunStatus(enum.StrEnum):
    """Where a run stands, as its row in the store says."""

    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


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
    fingerprint: str | None = None
    """What the output was computed from (code version, inputs), as the runner or its
    adapter said; a resume re-runs a completed node whose fingerprint changed."""

    def __post_init__(self) -> None:
        check_id("node_id", self.node_id)
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise TypeError(f"fingerprint must be a str or None, got {type(self.fingerprint)}")
        object.__setattr__(self, "status", NodeStatus(self.status))
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int):
            raise TypeError(f"attempt must be an int, got {type(self.attempt).__name__}")
        if self.attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {self.attempt}")
        if self.error is not None and not isinstance(self.error, str):
            raise TypeError(f"error must be a str or None, got {type(self.error).__name__}")
        object.__setattr__(self, "started_at", check_time("started_at", self.started_at))
        object.__setattr__(self, "finished_at", check_time("finished_at", self.finished_at))
        deps = tuple(self.deps)
        for dep in deps:
            check_id("dependency", dep)
        object.__setattr__(self, "deps", deps)


def _trusted_node_state(
    node_id: str,
    status: NodeStatus,
    output: Any,
    attempt: int,
    error: str | None,
    started_at: float | None,
    finished_at: float | None,
    deps: tuple[str, ...],
    fingerprint: str | None = None,
) -> NodeState:
    """A NodeState from verified storage, without re-validating every field.

    A restore of 10,000 nodes builds 10,000 of them; validation already happened
    when they were written, and the checksums prove nothing changed since.
    """
    ns = object.__new__(NodeState)
    put = object.__setattr__
    put(ns, "node_id", node_id)
    put(ns, "status", status)
    put(ns, "output", output)
    put(ns, "attempt", attempt)
    put(ns, "error", error)
    put(ns, "started_at", started_at)
    put(ns, "finished_at", finished_at)
    put(ns, "deps", deps)
    put(ns, "fingerprint", fingerprint)
    return ns


@dataclass(frozen=True, slots=True)
class Undecoded:
    """An output that was verified but not decoded (inspection without codecs)."""

    codec: str
    size: int


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
    """Format version of the checkpoint payload layout."""
    serializer: str
    checksum: str
    size: int
    nodes_written: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    root_seq: int = 0
    """Seq of the full snapshot this checkpoint's chain of deltas starts from."""
    node_count: int = 0

    @property
    def snapshot(self) -> bool:
        """Whether this checkpoint wrote every node (a compacted snapshot)."""
        return self.root_seq == self.seq


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run known to a store: its row in the runs table and its live checkpoints."""

    run_id: str
    status: RunStatus
    attempt: int
    started_at: float | None
    ended_at: float | None
    error: str | None
    graph_fingerprint: str | None
    last_seq: int
    """High-water mark: the highest seq ever given to this run (never reused)."""
    checkpoints: int
    latest_seq: int | None
    latest_at: float | None
    size: int

    @property
    def can_resume(self) -> bool:
        """A live checkpoint exists and the run did not succeed."""
        return self.latest_seq is not None and self.status is not RunStatus.SUCCEEDED


_STATUS_OF = {s.value: s for s in NodeStatus}
_DONE, _FAILED, _RUNNING, _PENDING = "completed", "failed", "running", "pending"


class NodeMap(Mapping[str, NodeState]):
    """The node states of a checkpoint, each built on first access.

    A restore of 10,000 nodes hands back ``completed`` and ``to_run`` without
    building 10,000 ``NodeState`` objects; ``nodes[id]`` builds (and keeps) one.
    It holds the verified rows themselves (``fields``), not copies of them.
    """

    __slots__ = ("_cache", "_outputs", "_values", "fields")

    def __init__(
        self,
        fields: dict[str, NodeRow],
        outputs: dict[str, Any] | None = None,
        *,
        values: list[Any] | None = None,
    ) -> None:
        """``outputs``: by node id. ``values`` instead: every node completed, and these
        are their outputs in ``fields``' order (a finished run's restore; the mapping
        by id is then built only if asked for)."""
        if (outputs is None) == (values is None):
            raise TypeError("NodeMap takes outputs or values, not both or neither")
        if values is not None and len(values) != len(fields):
            raise ValueError(f"{len(values)} values for {len(fields)} nodes")
        self.fields = fields
        self._outputs = outputs
        self._values = values
        self._cache: dict[str, NodeState] = {}

    @property
    def outputs(self) -> dict[str, Any]:
        """The decoded outputs by node id (of the nodes that hold one)."""
        found = self._outputs
        if found is None:
            found = self._outputs = dict(zip(self.fields, self._values or (), strict=True))
        return found

    def completed(self) -> dict[str, Any]:
        """A new dict of the outputs of completed nodes, in ``fields``' order."""
        if self._values is not None:  # every node completed: no pass over the rows
            return dict(zip(self.fields, self._values, strict=True))
        outputs = self.outputs
        return {k: outputs.get(k) for k, f in self.fields.items() if f.status == _DONE}

    @classmethod
    def of(cls, nodes: Mapping[str, NodeState]) -> NodeMap:
        """A NodeMap holding NodeStates built elsewhere."""
        from ._records import NodeRow  # it imports this module

        out = cls({k: NodeRow(k, n.status.value, n.attempt, n.error, n.started_at, n.finished_at,
                              n.deps, "", None, fingerprint=n.fingerprint)
                   for k, n in nodes.items()},
                  {k: n.output for k, n in nodes.items()})  # fmt: skip
        out._cache.update(nodes)
        return out

    def __getitem__(self, node_id: str) -> NodeState:
        found = self._cache.get(node_id)
        if found is None:
            f = self.fields[node_id]
            found = _trusted_node_state(node_id, _STATUS_OF[f.status], self.outputs.get(node_id),
                                        f.attempt, f.error, f.started_at, f.finished_at, f.deps,
                                        f.fingerprint)  # fmt: skip
            self._cache[node_id] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.fields

    def __repr__(self) -> str:
        return f"NodeMap({len(self.fields)} nodes)"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A restored, verified checkpoint.

    ``nodes`` holds every node's state (a read-only mapping); the properties
    sort them by what resume does with them.
    """

    info: CheckpointInfo
    nodes: Mapping[str, NodeState]
    state: Any = None
    stale: Mapping[str, str] = field(default_factory=dict)
    """Nodes the checkpoint held as completed that a resume must run again, with why
    (their fingerprint changed, or that of a node upstream); they are pending here."""

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, NodeMap):
            object.__setattr__(self, "nodes", NodeMap.of(dict(self.nodes)))

    @property
    def _map(self) -> NodeMap:
        return cast(NodeMap, self.nodes)  # __post_init__ made it one

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
        return self._map.completed()

    @property
    def interrupted(self) -> tuple[str, ...]:
        """Nodes that were running when the checkpoint was taken: resume re-runs them."""
        return self._with(_RUNNING)

    @property
    def pending(self) -> tuple[str, ...]:
        """Nodes that had not started: resume runs them."""
        return self._with(_PENDING)

    @property
    def failed(self) -> Mapping[str, str | None]:
        """Errors of failed nodes, by node id: resume runs them again."""
        return {k: f.error for k, f in self._map.fields.items() if f.status == _FAILED}

    @property
    def to_run(self) -> tuple[str, ...]:
        """Every node resume must (re-)run: interrupted, failed and pending."""
        return tuple(k for k, f in self._map.fields.items() if f.status != _DONE)

    @property
    def attempts(self) -> Mapping[str, int]:
        return {k: f.attempt for k, f in self._map.fields.items()}

    @property
    def graph(self) -> Mapping[str, tuple[str, ...]]:
        """Dependencies of each node, as the runner declared them."""
        return {k: f.deps for k, f in self._map.fields.items()}

    def _with(self, status: str) -> tuple[str, ...]:
        return tuple(k for k, f in self._map.fields.items() if f.status == status)

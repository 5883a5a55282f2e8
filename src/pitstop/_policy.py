"""When saves happen on their own: every N nodes, every T seconds, after each
DAG level, before named critical nodes, on pause, on failure. Each is just a
condition checked in a hook that then calls ``save_checkpoint``. The policy
also says how much history is kept (``keep_last``, ``snapshot_every``,
``delete_on_success``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal


def _count(name: str, value: object, *, optional: bool, least: int = 1) -> None:
    """An exact int >= ``least`` (or None when optional): bools and floats are mistakes here."""
    if value is None and optional:
        return
    if type(value) is not int:
        want = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")


def _flag(name: str, value: object) -> None:
    if type(value) is not bool:
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _node_ids(nodes: object) -> frozenset[str]:
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Collection):
        raise TypeError(
            f"before_nodes must be a collection of node ids (str), got {type(nodes).__name__}"
        )
    for node in nodes:
        if not isinstance(node, str):
            raise TypeError(
                f"before_nodes must hold str node ids, got {type(node).__name__} {node!r}"
            )
        if not node:
            raise ValueError("before_nodes holds an empty node id")
    return frozenset(nodes)


SNAPSHOT_SMALL = 4096
"""Default of ``CheckpointPolicy.snapshot_small`` (bytes)."""


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Automatic saves and retention. The default saves nothing on its own.

    Checkpoints are kept after the run succeeds unless ``delete_on_success``.

    Args:
        every_n_nodes: save after every N finished nodes.
        every_seconds: save when a node finishes and T seconds passed since the
            last save (checked in hooks: no timer thread).
        after_each_level: save when every node of a DAG level has completed
            (needs the graph given to ``on_run_start``).
        before_nodes: save just before these nodes start.
        on_pause: save when the runner calls ``on_run_pause``.
        on_failure: save when the run ends unsuccessfully.
        keep_last: after each save, prune the run to its newest N checkpoints.
        snapshot_every: a save writes every node (a compacted snapshot) when
            this many saves passed since the last snapshot; bounds restore cost
            and lets retention reclaim space.
        snapshot_small: a run of at most 64 nodes whose outputs hold at most
            this many bytes (default 4096) is saved whole at every save: such a
            snapshot costs what a delta does, and a restore reads one checkpoint
            instead of a chain. 0: only ``snapshot_every`` and the size bound
            make snapshots.
        delete_on_success: delete the run's checkpoints when the run succeeds
            (False, the default, keeps them).
        on_error: "raise" (fail fast) or "log" (log, emit checkpoint.error and
            continue) for saves made by hooks; explicit ``save_checkpoint``
            calls always raise.

    Raises:
        TypeError: a field has the wrong type (``True`` or ``2.5`` for a count,
            ``1`` for a flag, a str for ``before_nodes``).
        ValueError: a count below 1 (``snapshot_small`` below 0), ``every_seconds``
            not finite and > 0, an empty node id, or an unknown ``on_error``.
    """

    every_n_nodes: int | None = None
    every_seconds: float | None = None
    after_each_level: bool = False
    before_nodes: frozenset[str] = field(default_factory=frozenset)
    on_pause: bool = True
    on_failure: bool = True
    keep_last: int | None = None
    snapshot_every: int = 50
    snapshot_small: int = field(default_factory=lambda: SNAPSHOT_SMALL)
    delete_on_success: bool = False
    on_error: Literal["raise", "log"] = "raise"

    def __post_init__(self) -> None:
        _count("every_n_nodes", self.every_n_nodes, optional=True)
        _count("keep_last", self.keep_last, optional=True)
        _count("snapshot_every", self.snapshot_every, optional=False)
        _count("snapshot_small", self.snapshot_small, optional=False, least=0)
        seconds = self.every_seconds
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(
                    f"every_seconds must be a number or None, got {type(seconds).__name__} "
                    f"{seconds!r}"
                )
            # math.isfinite would overflow on a huge int; only floats can be NaN or inf
            if (isinstance(seconds, float) and not math.isfinite(seconds)) or seconds <= 0:
                raise ValueError(f"every_seconds must be finite and > 0, got {seconds}")
        for name in ("after_each_level", "on_pause", "on_failure", "delete_on_success"):
            _flag(name, getattr(self, name))
        if self.on_error not in ("raise", "log"):
            raise ValueError(f"on_error must be 'raise' or 'log', got {self.on_error!r}")
        object.__setattr__(self, "before_nodes", _node_ids(self.before_nodes))


def dag_levels(graph: Mapping[str, Collection[str]]) -> dict[str, int]:
    """Level of each node: 0 without dependencies, else 1 + the deepest dependency.

    Raises ValueError on an unknown dependency or a cycle.
    """
    levels: dict[str, int] = {}
    visiting: set[str] = set()
    for root in graph:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if node in levels:
                continue
            if done:
                visiting.discard(node)
                levels[node] = 1 + max((levels[d] for d in graph[node]), default=-1)
                continue
            if node in visiting:
                raise ValueError(f"dependency cycle through node {node!r}")
            visiting.add(node)
            stack.append((node, True))
            for dep in graph[node]:
                if dep not in graph:
                    raise ValueError(f"node {node!r} depends on unknown node {dep!r}")
                if dep in visiting:
                    raise ValueError(f"dependency cycle through node {dep!r}")
                if dep not in levels:
                    stack.append((dep, False))
    return levels


class PolicyClock:
    """Per-run counters the hooks consult after each finished node."""

    def __init__(self, policy: CheckpointPolicy) -> None:
        self.policy = policy
        self.since_save = 0
        self.last_save = time.monotonic()
        self.level_of: dict[str, int] = {}
        self.level_left: dict[int, int] = {}

    def start(self, levels: Mapping[str, int], completed: Iterable[str]) -> None:
        self.since_save = 0
        self.last_save = time.monotonic()
        self.level_of = dict(levels)
        self.level_left = {}
        for lvl in levels.values():
            self.level_left[lvl] = self.level_left.get(lvl, 0) + 1
        for node in completed:
            if node in self.level_of:
                self.level_left[self.level_of[node]] -= 1

    def saved(self) -> None:
        self.since_save = 0
        self.last_save = time.monotonic()

    def finished(self, node_id: str) -> str | None:
        """Count a completed node; return the trigger of the save now due, if any."""
        p = self.policy
        self.since_save += 1
        trigger = None
        lvl = self.level_of.get(node_id)
        if lvl is not None:
            self.level_left[lvl] -= 1
            if p.after_each_level and self.level_left[lvl] == 0:
                trigger = f"level:{lvl}"
        if trigger is None and p.every_n_nodes is not None and self.since_save >= p.every_n_nodes:
            trigger = "every_n_nodes"
        if (
            trigger is None
            and p.every_seconds is not None
            and time.monotonic() - self.last_save >= p.every_seconds
        ):
            trigger = "every_seconds"
        return trigger

"""A small async DAG runner, written as if it pre-dated pitstop.

Nodes run level by level: the nodes of one level run concurrently with
``asyncio.gather`` and receive their dependencies' outputs as positional
arguments, in the order of ``Node.deps``.

pitstop is optional. ``run_dag`` takes a ``CheckpointManager`` or None and
calls its hooks only when it is enabled, in one of two guard styles:

* ``guard="site"``: every hook site checks ``mgr is not None and mgr.enabled``
  (one attribute check per site, no call when disabled).
* ``guard="once"``: the flag is read once per run; a disabled run takes the
  hook-free loop, so it costs exactly what ``run_dag_plain`` costs.

``run_dag_plain`` is the same runner without any hook code (benchmark baseline).
When the manager's run can be resumed (``can_resume()``: it has a checkpoint and
did not succeed), ``run_dag`` restores it: completed nodes are skipped with their
restored outputs, every other node runs. A run that succeeded is not resumed:
running it again starts it fresh (its checkpoints stay until deleted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pitstop import CheckpointManager

logger = logging.getLogger("dag_runner")

NodeFn = Callable[..., Awaitable[Any]]
Guard = Literal["site", "once"]


@dataclass(frozen=True, slots=True)
class Node:
    """One step: ``await fn(*outputs of deps)`` once every dependency is done."""

    id: str
    fn: NodeFn
    deps: tuple[str, ...] = ()


def levels(nodes: Iterable[Node]) -> list[list[Node]]:
    """Group nodes by depth: level 0 has no dependencies, level k needs levels < k.

    Raises:
        ValueError: a duplicate node id, an unknown dependency or a cycle.
    """
    remaining: dict[str, Node] = {}
    for node in nodes:
        if node.id in remaining:
            raise ValueError(f"duplicate node id {node.id!r}")
        remaining[node.id] = node
    for node in remaining.values():
        for dep in node.deps:
            if dep not in remaining:
                raise ValueError(f"node {node.id!r} depends on unknown node {dep!r}")
    placed: set[str] = set()
    out: list[list[Node]] = []
    while remaining:
        ready = [n for n in remaining.values() if placed.issuperset(n.deps)]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        for node in ready:
            del remaining[node.id]
        placed.update(n.id for n in ready)
        out.append(ready)
    return out


def graph_of(nodes: Iterable[Node]) -> dict[str, tuple[str, ...]]:
    """node id -> dependencies, the shape ``on_run_start(graph=...)`` expects."""
    return {n.id: n.deps for n in nodes}


def _collect(level: Sequence[Node], results: Sequence[Any], outputs: dict[str, Any]) -> None:
    # gather(return_exceptions=True) lets every sibling finish (and be recorded)
    # before the first error fails the run.
    for result in results:
        if isinstance(result, BaseException):
            raise result
    outputs.update(zip((n.id for n in level), results, strict=True))


# --- the plain runner: no hook code at all -------------------------------------------


async def _node_plain(node: Node, outputs: dict[str, Any]) -> Any:
    return await node.fn(*[outputs[d] for d in node.deps])


async def _levels_plain(lvls: list[list[Node]]) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for level in lvls:
        results = await asyncio.gather(
            *(_node_plain(n, outputs) for n in level), return_exceptions=True
        )
        _collect(level, results, outputs)
    return outputs


async def run_dag_plain(nodes: Iterable[Node]) -> dict[str, Any]:
    """Run the graph without any checkpoint support; return outputs by node id."""
    return await _levels_plain(levels(nodes))


# --- the same runner with optional pitstop hooks -------------------------------------


async def run_dag(
    nodes: Iterable[Node], *, manager: CheckpointManager | None = None, guard: Guard = "site"
) -> dict[str, Any]:
    """Run the graph, checkpointing through ``manager`` when it is enabled.

    Args:
        nodes: the graph; ids unique, dependencies declared in ``Node.deps``.
        manager: optional; disabled or None means no pitstop call at all.
        guard: "site" checks the flag at every hook site, "once" reads it once per run.

    Returns:
        Every node's output by node id (restored outputs included).

    Raises:
        ValueError: a bad graph or an unknown guard style.
        GraphMismatch: resuming a checkpoint whose graph differs from ``nodes``.
    """
    nodes = list(nodes)
    if guard == "site":
        return await _run_site(nodes, manager)
    if guard == "once":
        hooks = manager if manager is not None and manager.enabled else None
        if hooks is None:
            return await _levels_plain(levels(nodes))  # the hook-free loop
        return await _run_hooked(nodes, hooks)
    raise ValueError(f"guard must be 'site' or 'once', got {guard!r}")


async def _resume(mgr: CheckpointManager) -> tuple[dict[str, Any], int | None]:
    """Adopt the latest checkpoint: (completed outputs, seq), or ({}, None) if none to resume."""
    if not await mgr.can_resume():
        return {}, None
    cp = await mgr.restore_checkpoint()
    return dict(cp.completed), cp.seq


def _to_run(level: list[Node], restored: dict[str, Any], seq: int | None) -> list[Node]:
    if seq is None:
        return level
    for node in level:
        if node.id in restored:
            logger.info("%s: skipped (restored from checkpoint seq %d)", node.id, seq)
    return [n for n in level if n.id not in restored]


# Style 1: every hook site checks the manager's plain ``enabled`` attribute.


async def _node_site(node: Node, outputs: dict[str, Any], mgr: CheckpointManager | None) -> Any:
    if mgr is not None and mgr.enabled:
        await mgr.on_node_start(node_id=node.id)
    try:
        output = await node.fn(*[outputs[d] for d in node.deps])
    except Exception as exc:
        if mgr is not None and mgr.enabled:
            await mgr.on_node_error(node_id=node.id, error=exc)
        raise
    if mgr is not None and mgr.enabled:
        await mgr.on_node_finish(node_id=node.id, output=output)
    return output


async def _run_site(nodes: list[Node], mgr: CheckpointManager | None) -> dict[str, Any]:
    lvls = levels(nodes)
    outputs: dict[str, Any] = {}
    seq: int | None = None
    if mgr is not None and mgr.enabled:
        outputs, seq = await _resume(mgr)
        await mgr.on_run_start(graph=graph_of(nodes))
    try:
        for level in lvls:
            todo = _to_run(level, outputs, seq)
            results = await asyncio.gather(
                *(_node_site(n, outputs, mgr) for n in todo), return_exceptions=True
            )
            _collect(todo, results, outputs)
    except Exception as exc:
        if mgr is not None and mgr.enabled:
            await mgr.on_run_end(success=False, error=exc)
        raise
    if mgr is not None and mgr.enabled:
        await mgr.on_run_end(success=True)
    return outputs


# Style 2: the flag was read once by ``run_dag``; this loop only runs when enabled.


async def _node_hooked(node: Node, outputs: dict[str, Any], hooks: CheckpointManager) -> Any:
    await hooks.on_node_start(node_id=node.id)
    try:
        output = await node.fn(*[outputs[d] for d in node.deps])
    except Exception as exc:
        await hooks.on_node_error(node_id=node.id, error=exc)
        raise
    await hooks.on_node_finish(node_id=node.id, output=output)
    return output


async def _run_hooked(nodes: list[Node], hooks: CheckpointManager) -> dict[str, Any]:
    lvls = levels(nodes)
    outputs, seq = await _resume(hooks)
    await hooks.on_run_start(graph=graph_of(nodes))
    try:
        for level in lvls:
            todo = _to_run(level, outputs, seq)
            results = await asyncio.gather(
                *(_node_hooked(n, outputs, hooks) for n in todo), return_exceptions=True
            )
            _collect(todo, results, outputs)
    except Exception as exc:
        await hooks.on_run_end(success=False, error=exc)
        raise
    await hooks.on_run_end(success=True)
    return outputs

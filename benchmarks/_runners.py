"""Minimal runners and workflows used to measure what pitstop's hook sites cost.

The sync loop runner calls ``N`` no-op nodes one after another. Its three forms
differ only in how they talk to a ``SyncCheckpointManager``:

- ``run_plain``: no hook code at all (the baseline);
- ``run_site_guard``: ``if mgr.enabled:`` before every hook call (one truthiness
  check per site, per node);
- ``run_once``: reads ``mgr.enabled`` once per run and, when disabled, takes a
  loop identical to ``run_plain`` (inlined, not called, so the only difference
  is one attribute read per run).

The hook-free loops are deliberately written out three times instead of shared:
a helper call would add a frame per run that the baseline does not pay.

The async runner is ``examples/dag_runner.py`` itself (``run_dag_plain`` and
``run_dag(guard="site" | "once")``); ``dag_workflow`` builds its input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dag_runner import Node

from pitstop import SyncCheckpointManager

SyncNode = Callable[[], Any]
"""A workflow node of the sync runner: a callable taking no arguments."""

SyncWorkflow = Sequence[tuple[str, SyncNode]]
"""Nodes in execution order, each with its id."""


def noop() -> None:
    """A node that does nothing (so the runner's own cost dominates)."""
    return None


async def anoop(*deps: Any) -> None:
    """An async node that does nothing with its dependencies' outputs."""
    return None


def sync_workflow(n: int) -> list[tuple[str, SyncNode]]:
    """``n`` no-op nodes named ``n0`` .. ``n{n-1}``."""
    return [(f"n{i}", noop) for i in range(n)]


def dag_workflow(n: int, width: int = 10) -> list[Node]:
    """``n`` no-op async nodes in levels of ``width``; node i depends on node i - width."""
    return [Node(f"n{i}", anoop, () if i < width else (f"n{i - width}",)) for i in range(n)]


def run_plain(nodes: SyncWorkflow) -> int:
    """Baseline: no hook code at all; returns how many nodes ran."""
    done = 0
    for _node_id, node in nodes:
        node()
        done += 1
    return done


def run_site_guard(nodes: SyncWorkflow, mgr: SyncCheckpointManager) -> int:
    """Guard every hook site with ``if mgr.enabled:`` (the documented per-site pattern)."""
    if mgr.enabled:
        mgr.on_run_start()
    done = 0
    for node_id, node in nodes:
        if mgr.enabled:
            mgr.on_node_start(node_id=node_id)
        output = node()
        if mgr.enabled:
            mgr.on_node_finish(node_id=node_id, output=output)
        done += 1
    if mgr.enabled:
        mgr.on_run_end(success=True)
    return done


def run_once(nodes: SyncWorkflow, mgr: SyncCheckpointManager) -> int:
    """Read ``mgr.enabled`` once per run; when off, run the same loop as ``run_plain``."""
    if mgr.enabled:
        return _run_hooked(nodes, mgr)
    done = 0
    for _node_id, node in nodes:
        node()
        done += 1
    return done


def _run_hooked(nodes: SyncWorkflow, mgr: SyncCheckpointManager) -> int:
    mgr.on_run_start()
    done = 0
    for node_id, node in nodes:
        mgr.on_node_start(node_id=node_id)
        output = node()
        mgr.on_node_finish(node_id=node_id, output=output)
        done += 1
    mgr.on_run_end(success=True)
    return done

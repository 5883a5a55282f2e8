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

``placements`` makes copies of a runner, each with bytecode of its own, so that a
benchmark can spread its samples over several places in memory (see there).

The async runner is ``examples/dag_runner.py`` itself (``run_dag_plain`` and
``run_dag(guard="site" | "once")``); ``dag_workflow`` builds its input.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dag_runner import Node

from pitstop import SyncCheckpointManager

F = TypeVar("F", bound=Callable[..., Any])

PLACEMENTS = 8
"""Copies of each runner the sync loop benchmark takes its samples from, in turn."""

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


def placements(fn: F, k: int = PLACEMENTS) -> list[F]:
    """``k`` copies of ``fn``, each with a code object, and so bytecode, of its own.

    Why: at N=100 a run of the sync loop takes ~2.4 µs, and where a loop's bytecode
    lies in memory moves that by about the 2% the target allows. Measured in one
    process (3,000 interleaved rounds; copies compiled again from the source), eight
    copies of ``run_plain`` had p50s from 2,474 to 2,514 ns and eight of ``run_once``
    from 2,484 to 2,534 ns; and one process's ``once / plain`` ratio went from 1.066
    and 1.030 to 1.013 and 1.005 when 3,000 unused objects were allocated at import
    beforehand (nothing else changed). Samples spread over copies measure the code,
    not one placement of it.
    """
    code, found = fn.__code__, []
    for _ in range(k):
        copy = types.FunctionType(code.replace(), fn.__globals__, fn.__name__, fn.__defaults__)
        found.append(copy)
    return found  # type: ignore[return-value]  # each copy is fn with other bytecode

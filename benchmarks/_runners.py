"""Minimal async runners used to measure what pitstop's hook sites cost.

Each runner awaits ``N`` no-op async nodes one after another. They differ only
in how they talk to a ``CheckpointManager``:

- ``run_plain``: no hook code at all (the baseline);
- ``run_site_guard``: ``if mgr.enabled:`` before every hook call (one truthiness
  check per site, per node);
- ``run_once``: reads ``mgr.enabled`` once per run and, when disabled, takes a
  loop identical to ``run_plain`` (inlined, not called, so the only difference
  is one attribute read per run).

The hook-free loops are deliberately written out three times instead of shared:
a helper call would add a coroutine frame per run that the baseline does not pay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pytest_benchmark.fixture import BenchmarkFixture

from pitstop import CheckpointManager

T = TypeVar("T")

Node = Callable[[], Awaitable[Any]]
"""A workflow node: an async callable taking no arguments."""

Workflow = Sequence[tuple[str, Node]]
"""Nodes in execution order, each with its id."""


async def noop() -> None:
    """A node that does nothing (so the runner's own cost dominates)."""
    return None


def make_workflow(n: int) -> list[tuple[str, Node]]:
    """``n`` no-op nodes named ``n0`` .. ``n{n-1}``."""
    return [(f"n{i}", noop) for i in range(n)]


async def run_plain(nodes: Workflow) -> int:
    """Baseline: no hook code at all; returns how many nodes ran."""
    done = 0
    for _node_id, node in nodes:
        await node()
        done += 1
    return done


async def run_site_guard(nodes: Workflow, mgr: CheckpointManager) -> int:
    """Guard every hook site with ``if mgr.enabled:`` (the documented per-site pattern)."""
    if mgr.enabled:
        await mgr.on_run_start()
    done = 0
    for node_id, node in nodes:
        if mgr.enabled:
            await mgr.on_node_start(node_id=node_id)
        output = await node()
        if mgr.enabled:
            await mgr.on_node_finish(node_id=node_id, output=output)
        done += 1
    if mgr.enabled:
        await mgr.on_run_end(success=True)
    return done


async def run_once(nodes: Workflow, mgr: CheckpointManager) -> int:
    """Read ``mgr.enabled`` once per run; when off, run the same loop as ``run_plain``."""
    if mgr.enabled:
        return await _run_hooked(nodes, mgr)
    done = 0
    for _node_id, node in nodes:
        await node()
        done += 1
    return done


async def _run_hooked(nodes: Workflow, mgr: CheckpointManager) -> int:
    await mgr.on_run_start()
    done = 0
    for node_id, node in nodes:
        await mgr.on_node_start(node_id=node_id)
        output = await node()
        await mgr.on_node_finish(node_id=node_id, output=output)
        done += 1
    await mgr.on_run_end(success=True)
    return done


def pedantic(
    benchmark: BenchmarkFixture,
    target: Callable[[], T],
    *,
    rounds: int,
    warmup_rounds: int = 0,
    setup: Callable[[], None] | None = None,
) -> T:
    """``benchmark.pedantic`` with a type (pytest-benchmark leaves it untyped).

    One call of ``target`` per round, so ``setup`` (untimed) can run before each.
    """
    result: T = benchmark.pedantic(  # type: ignore[no-untyped-call]
        target, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1
    )
    return result

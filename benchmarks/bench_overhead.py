"""What a disabled (and an enabled) CheckpointManager costs a runner.

Each group (one per N) holds, side by side in the same run:

- ``plain``: no hook code at all (the "off" baseline);
- ``site_guard``: ``if mgr.enabled:`` at every hook site, manager disabled;
- ``once``: ``mgr.enabled`` read once per run, manager disabled;
- ``enabled``: the site-guard runner with an enabled manager on a MemoryStore and
  no policy (hook bookkeeping only; nothing is saved), for information.

A round is one whole run of N no-op async nodes on the module's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from _runners import Workflow, make_workflow, pedantic, run_once, run_plain, run_site_guard
from pytest_benchmark.fixture import BenchmarkFixture

from pitstop import CheckpointManager, MemoryStore

SIZES = [100, 1_000, 10_000]
# Rounds per size: a few tenths of a second per disabled variant (a few seconds for
# "enabled"), enough for medians that repeat to about 1% on a quiet machine.
ROUNDS = {100: 20_000, 1_000: 3_000, 10_000: 300}
WARMUP = {100: 1_000, 1_000: 100, 10_000: 10}

Factory = Callable[[Workflow, CheckpointManager], Coroutine[Any, Any, int]]


async def _plain(nodes: Workflow, mgr: CheckpointManager) -> int:
    return await run_plain(nodes)


VARIANTS: dict[str, tuple[Factory, bool]] = {
    "plain": (_plain, False),
    "once": (run_once, False),
    "site_guard": (run_site_guard, False),
    "enabled": (run_site_guard, True),
}


# Variant varies fastest: each group's members run back to back (less drift
# between a baseline and its variants), "once" right after "plain".
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"N={n}")
def test_overhead(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, variant: str, n: int
) -> None:
    factory, enabled = VARIANTS[variant]
    nodes = make_workflow(n)
    benchmark.group = f"overhead N={n}"
    benchmark.extra_info.update(kind="overhead", variant=variant, n=n)
    managers: list[CheckpointManager] = []

    def fresh_manager() -> None:
        # A new manager per round: every round is a first run (no bookkeeping left
        # over from the previous one), which is what "enabled" should show.
        mgr = CheckpointManager("bench-overhead", store=MemoryStore(), enabled=enabled)
        managers[:] = [mgr]

    if variant == "plain":
        # The baseline must not even see a manager: run_plain is called directly.
        def target() -> int:
            return loop.run_until_complete(run_plain(nodes))
    else:

        def target() -> int:
            return loop.run_until_complete(factory(nodes, managers[-1]))

    done = pedantic(
        benchmark, target, rounds=ROUNDS[n], warmup_rounds=WARMUP[n], setup=fresh_manager
    )
    assert done == n

"""What a disabled manager costs a runner: nothing once per run, a few ns per guarded site.

Two runners, each in three forms side by side (interleaved round by round):

- async: ``examples/dag_runner.py``, the DAG runner users copy. ``plain`` is
  ``run_dag_plain`` (no hook code: the baseline); ``once`` and ``site_guard``
  are ``run_dag(guard="once" | "site")`` with a disabled ``CheckpointManager``.
  The graph: N no-op async nodes in levels of 10, each depending on the node
  10 before it. A round is one whole run, timed inside the module's event loop.
- sync: the loop runner of ``_runners.py`` over N no-op sync nodes with a
  disabled ``SyncCheckpointManager``: ``plain`` (no hook code), ``once`` (flag
  read once per run), ``site_guard`` (``if mgr.enabled:`` at every site). Each
  form's samples come from ``_runners.PLACEMENTS`` copies of its function in turn,
  each with bytecode of its own (``_runners.placements`` says why).

The target: ``once`` within noise of ``plain`` (p50 ratio <= 1.02) at every N.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from _harness import Recorder, Sample, interleave, timed_async
from _runners import (
    dag_workflow,
    placements,
    run_once,
    run_plain,
    run_site_guard,
    sync_workflow,
)
from dag_runner import run_dag, run_dag_plain

from pitstop import CheckpointManager, SyncCheckpointManager

DAG_ROUNDS = {100: 1_000, 1_000: 100}
LOOP_ROUNDS = {100: 20_000, 1_000: 3_000, 10_000: 300}


@pytest.mark.parametrize("n", list(DAG_ROUNDS), ids=lambda n: f"N={n}")
def test_async_dag(recorder: Recorder, loop: asyncio.AbstractEventLoop, n: int) -> None:
    nodes = dag_workflow(n)
    mgr = CheckpointManager("bench-overhead")  # disabled, the default
    assert not mgr.enabled
    variants = {
        "plain": timed_async(loop, lambda: run_dag_plain(nodes)),
        "once": timed_async(loop, lambda: run_dag(nodes, manager=mgr, guard="once")),
        "site_guard": timed_async(loop, lambda: run_dag(nodes, manager=mgr, guard="site")),
    }
    rounds = DAG_ROUNDS[n]
    summaries = interleave(variants, rounds=rounds, warmup=max(1, rounds // 20))
    recorder.add("overhead", "async DAG", n, "run", summaries)
    outputs = loop.run_until_complete(run_dag(nodes, manager=mgr, guard="once"))
    assert len(outputs) == n


@pytest.mark.parametrize("n", list(LOOP_ROUNDS), ids=lambda n: f"N={n}")
def test_sync_loop(recorder: Recorder, n: int) -> None:
    nodes = sync_workflow(n)
    mgr = SyncCheckpointManager("bench-overhead")  # disabled, the default
    assert not mgr.enabled

    # Each form's samples take its copies in turn (``_runners.placements``: where one
    # copy's bytecode lies moves a run by more than the 2% limit at N=100).
    plains = itertools.cycle(placements(run_plain))
    onces = itertools.cycle(placements(run_once))
    guards = itertools.cycle(placements(run_site_guard))

    # Written out three times so each sample is the runner call and nothing else.
    def plain() -> int:
        run = next(plains)
        t0 = time.perf_counter_ns()
        run(nodes)
        return time.perf_counter_ns() - t0

    def once() -> int:
        run = next(onces)
        t0 = time.perf_counter_ns()
        run(nodes, mgr)
        return time.perf_counter_ns() - t0

    def site_guard() -> int:
        run = next(guards)
        t0 = time.perf_counter_ns()
        run(nodes, mgr)
        return time.perf_counter_ns() - t0

    variants: dict[str, Sample] = {"plain": plain, "once": once, "site_guard": site_guard}
    rounds = LOOP_ROUNDS[n]
    summaries = interleave(variants, rounds=rounds, warmup=rounds // 20)
    recorder.add("overhead", "sync loop", n, "run", summaries)
    assert run_once(nodes, mgr) == n

"""examples/ (DAG runner hooks, crash/resume demo) and the code in the docs that cite it.

``examples/`` is not a package: it goes on ``sys.path`` and ``dag_runner`` and
``pipeline_demo`` are imported as top-level modules, as the demo script does.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import pitstop
from pitstop import (
    Checkpoint,
    CheckpointEvent,
    CheckpointManager,
    CheckpointPolicy,
    GraphMismatch,
    MemoryStore,
    NodeStatus,
    Store,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import dag_runner  # noqa: E402
import pipeline_demo  # noqa: E402
from dag_runner import Guard, Node, run_dag, run_dag_plain  # noqa: E402

digest = pipeline_demo._digest  # "report sha256: X" line of a demo's output -> X
Target = Store | Path
RUN = "example-run"
GUARDS: list[Guard] = ["site", "once"]
KEEP = CheckpointPolicy(every_n_nodes=1, preserve=True)
EXPECTED = {"load": [3, 1, 2], "sorted": [1, 2, 3], "total": 6, "report": {"s": [1, 2, 3], "t": 6}}


@pytest.fixture(params=["memory", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Where checkpoints go: one MemoryStore shared by the test's managers, or a SQLite file."""
    return MemoryStore() if request.param == "memory" else tmp_path / "run.db"


def manager(target: Target, policy: CheckpointPolicy = KEEP, run: str = RUN) -> CheckpointManager:
    return CheckpointManager(run, store=target, enabled=True, policy=policy)


async def peek(target: Target, run: str = RUN) -> Checkpoint:
    async with manager(target, run=run) as mgr:
        return await mgr.restore_checkpoint()


def diamond(calls: Counter[str], failing: Collection[str] = ()) -> list[Node]:
    """load -> (sorted, total) -> report; nodes in ``failing`` raise while they are in it."""

    def node(node_id: str, fn: Callable[..., Any], deps: tuple[str, ...] = ()) -> Node:
        async def run(*inputs: Any) -> Any:
            calls[node_id] += 1
            if node_id in failing:
                raise RuntimeError(f"{node_id} failed")
            return fn(*inputs)

        return Node(node_id, run, deps)

    return [
        node("load", lambda: [3, 1, 2]),
        node("sorted", sorted, ("load",)),
        node("total", sum, ("load",)),
        node("report", lambda s, t: {"s": s, "t": t}, ("sorted", "total")),
    ]


def test_levels_group_by_depth_and_reject_bad_graphs() -> None:
    lvls = dag_runner.levels(diamond(Counter()))
    assert [[n.id for n in level] for level in lvls] == [["load"], ["sorted", "total"], ["report"]]
    noop = diamond(Counter())[0].fn
    with pytest.raises(ValueError, match="unknown node 'x'"):
        dag_runner.levels([Node("a", noop, ("x",))])
    with pytest.raises(ValueError, match="cycle"):
        dag_runner.levels([Node("a", noop, ("b",)), Node("b", noop, ("a",))])
    with pytest.raises(ValueError, match="duplicate"):
        dag_runner.levels([Node("a", noop), Node("a", noop)])


@pytest.mark.parametrize("guard", GUARDS)
async def test_nodes_of_a_level_run_concurrently(guard: Guard) -> None:
    barrier = asyncio.Barrier(2)  # deadlocks (times out) unless both run at once

    async def meet() -> int:
        return await barrier.wait()

    nodes = [Node("a", meet), Node("b", meet)]
    async with manager(MemoryStore()) as mgr:
        out = await asyncio.wait_for(run_dag(nodes, manager=mgr, guard=guard), 5)
    assert sorted(out.values()) == [0, 1]
    assert sorted((await asyncio.wait_for(run_dag_plain(nodes), 5)).values()) == [0, 1]


async def test_guard_styles_and_plain_runner_give_identical_outputs() -> None:
    outputs = [await run_dag_plain(diamond(Counter()))]
    for guard in GUARDS:
        outputs.append(await run_dag(diamond(Counter()), guard=guard))
        for enabled in (False, True):
            mgr = CheckpointManager(RUN, store=MemoryStore(), enabled=enabled)
            outputs.append(await run_dag(diamond(Counter()), manager=mgr, guard=guard))
    assert outputs == [EXPECTED] * 7
    with pytest.raises(ValueError, match="guard"):
        await run_dag(diamond(Counter()), guard="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("enabled", [False, True], ids=["disabled", "enabled"])
async def test_disabled_manager_calls_no_pitstop_code_and_writes_nothing(
    guard: Guard, enabled: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    memory = MemoryStore()  # below: the default ./pitstop.db, a named file, a Store
    managers = [CheckpointManager(RUN), manager(tmp_path / "x.db"), manager(memory)]
    package = str(Path(pitstop.__file__).parent)
    called: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(package):
            called.append(frame.f_code.co_name)

    for mgr in managers:
        mgr.enabled = enabled
        sys.setprofile(profile)
        try:
            out = await run_dag(diamond(Counter()), manager=mgr, guard=guard)
        finally:
            sys.setprofile(None)
        assert out == EXPECTED
        await mgr.aclose()
    if enabled:  # the control: the profiler does see pitstop when it is on
        assert "on_node_finish" in called
        assert (tmp_path / "pitstop.db").exists()
    else:
        assert called == []
        assert list(tmp_path.iterdir()) == []
        assert await memory.list_runs() == []


@pytest.mark.parametrize("guard", GUARDS)
async def test_resume_skips_completed_and_reruns_failed(guard: Guard, target: Target) -> None:
    calls: Counter[str] = Counter()
    fail = {"total"}
    async with manager(target) as mgr:
        with pytest.raises(RuntimeError, match="total failed"):
            await run_dag(diamond(calls, fail), manager=mgr, guard=guard)
    cp = await peek(target)
    assert cp.info.trigger == "run_failed"
    assert cp.completed == {"load": [3, 1, 2], "sorted": [1, 2, 3]}  # the sibling finished too
    assert cp.failed == {"total": "RuntimeError: total failed"}
    assert cp.pending == ("report",)

    fail.clear()
    async with manager(target) as mgr:
        assert await run_dag(diamond(calls, fail), manager=mgr, guard=guard) == EXPECTED
    assert calls == Counter(load=1, sorted=1, total=2, report=1)
    final = await peek(target)
    assert final.attempts == {"load": 1, "sorted": 1, "total": 2, "report": 1}


@pytest.mark.parametrize("guard", GUARDS)
async def test_interrupted_node_reruns_with_attempt_2(guard: Guard, target: Target) -> None:
    runs: Counter[str] = Counter()
    started, release, saved = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def fast() -> str:
        runs["fast"] += 1
        await started.wait()  # finish (and save) only once "slow" is running
        return "fast-out"

    async def slow() -> str:
        runs["slow"] += 1
        started.set()
        await release.wait()
        return "slow-out"

    async def join(a: str, b: str) -> list[str]:
        runs["join"] += 1
        return [a, b]

    def on_event(event: CheckpointEvent) -> None:
        if event.name == "checkpoint.save":
            saved.set()

    nodes = [Node("fast", fast), Node("slow", slow), Node("join", join, ("fast", "slow"))]
    mgr = CheckpointManager(RUN, store=target, enabled=True, policy=KEEP, observers=[on_event])
    async with mgr:
        task = asyncio.create_task(run_dag(nodes, manager=mgr, guard=guard))
        await asyncio.wait_for(saved.wait(), 5)  # "fast" was saved while "slow" runs
        task.cancel()  # the process dies: no error hook, no run end
        with pytest.raises(asyncio.CancelledError):
            await task
    cp = await peek(target)
    assert cp.completed == {"fast": "fast-out"}
    assert (cp.interrupted, cp.pending) == (("slow",), ("join",))
    assert cp.nodes["slow"].status is NodeStatus.RUNNING and cp.attempts["slow"] == 1

    release.set()
    async with manager(target) as mgr:
        out = await run_dag(nodes, manager=mgr, guard=guard)
    assert out == {"fast": "fast-out", "slow": "slow-out", "join": ["fast-out", "slow-out"]}
    assert runs == Counter(fast=1, slow=2, join=1)
    assert (await peek(target)).attempts == {"fast": 1, "slow": 2, "join": 1}


@pytest.mark.parametrize("guard", GUARDS)
async def test_resume_with_changed_graph_raises_before_running(guard: Guard) -> None:
    store, calls = MemoryStore(), Counter[str]()
    with pytest.raises(RuntimeError):
        await run_dag(diamond(calls, {"report"}), manager=manager(store), guard=guard)
    changed = [*diamond(calls), Node("extra", diamond(calls)[0].fn)]
    with pytest.raises(GraphMismatch) as info:
        await run_dag(changed, manager=manager(store), guard=guard)
    assert info.value.added == ("extra",)
    assert calls == Counter(load=1, sorted=1, total=1, report=1)


async def test_after_each_level_policy_and_delete_on_success(target: Target) -> None:
    policy = CheckpointPolicy(after_each_level=True, preserve=True)
    async with manager(target, policy) as mgr:
        await run_dag(diamond(Counter()), manager=mgr)
        triggers = [i.trigger for i in await mgr.list_checkpoints()]
    assert triggers == ["level:0", "level:1", "level:2"]
    async with manager(target, CheckpointPolicy(every_n_nodes=1), "other") as mgr:
        await run_dag(diamond(Counter()), manager=mgr)
        assert await mgr.list_checkpoints() == []  # preserve=False: deleted on success


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline_demo.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_demo_crashes_then_resumes_from_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    crashed = demo("--db", str(db), "--crash-at", "analyze", cwd=tmp_path)
    assert crashed.returncode == 1, crashed.stderr
    assert "preprocess: executing" in crashed.stdout and "analyze: CRASH" in crashed.stdout
    assert digest(crashed.stdout) is None and "report: executing" not in crashed.stdout
    cp = await peek(db, pipeline_demo.RUN_ID)
    assert (cp.run_id, cp.seq, cp.pending) == (pipeline_demo.RUN_ID, 2, ("analyze", "report"))
    assert set(cp.completed) == {"ingest", "preprocess"}

    resumed = demo("--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for stage in ("ingest", "preprocess"):
        assert f"{stage}: skipped (restored from checkpoint seq 2)" in resumed.stdout
        assert f"{stage}: executing" not in resumed.stdout
    assert "analyze: executing" in resumed.stdout and "report: executing" in resumed.stdout

    clean = demo("--db", str(tmp_path / "clean.db"), cwd=tmp_path)
    assert clean.returncode == 0 and "skipped" not in clean.stdout
    assert digest(resumed.stdout) == digest(clean.stdout) is not None
    plain = await run_dag_plain(pipeline_demo.build_pipeline())  # no pitstop at all
    assert plain["report"]["sha256"] == digest(clean.stdout)


def test_demo_story_passes_and_can_be_repeated(tmp_path: Path) -> None:
    for _ in range(2):  # the story deletes its databases first
        story = demo("--story", cwd=tmp_path)
        assert story.returncode == 0, story.stdout + story.stderr
        lines = story.stdout.splitlines()
        assert lines[-1] == "PASS" and "FAILED" not in story.stdout
        assert "  -> exit code 1" in lines
        assert "      [dag_runner] preprocess: skipped (restored from checkpoint seq 2)" in lines
    assert {p.name for p in tmp_path.glob("*.db")} == {"pitstop-demo.db", "pitstop-demo-clean.db"}


@pytest.mark.parametrize("doc", ["quickstart", "integration", "semantics"])
def test_doc_examples_run_and_quote_the_runner(doc: str, tmp_path: Path) -> None:
    text = (EXAMPLES.parent / "docs" / f"{doc}.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)  # complete programs, run in order
    driver = "import sys\nfor b in sys.argv[1:]: exec(b, {'__name__': '__main__'})"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", driver, *blocks],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert blocks and proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    source = (EXAMPLES / "dag_runner.py").read_text().splitlines()
    code = {line.split("  #")[0].strip() for line in source}
    for fragment in re.findall(r"```py\n(.*?)```", text, re.S):  # quotes of dag_runner.py
        for line in fragment.splitlines():
            assert line.split("  #")[0].strip() in code, line

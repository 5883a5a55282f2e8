"""examples/ (the DAG runner's hooks, the crash/resume stories) and the docs that cite them.

``examples/`` is not a package: it goes on ``sys.path`` and ``dag_runner``,
``pipeline_demo`` and ``sync_runner`` are imported as top-level modules, as the
scripts do. The stories run as real processes: the crashing one leaves through
``os._exit``, the resuming one reads the SQLite file it left behind.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from stories import EXAMPLES, example

import pitstop
from pitstop import (
    Checkpoint,
    CheckpointEvent,
    CheckpointManager,
    CheckpointPolicy,
    GraphMismatch,
    MemoryStore,
    NodeStatus,
    RunInfo,
    RunStatus,
    Store,
    SyncCheckpointManager,
)
from pitstop.storage import _programs as P
from pitstop.storage._programs import Call

sys.path.insert(0, str(EXAMPLES))

import dag_runner
import frame_pipeline
import pipeline_demo
import sync_runner
from _story import digest_in
from dag_runner import Guard, Node, run_dag, run_dag_plain

digest = digest_in  # the "report sha256: X" line of an example's output -> X
Target = Store | Path
RUN = "example-run"
GUARDS: list[Guard] = ["site", "once"]
EVERY = CheckpointPolicy(every_n_nodes=1)
EXPECTED = {"load": [3, 1, 2], "sorted": [1, 2, 3], "total": 6, "report": {"s": [1, 2, 3], "t": 6}}


@pytest.fixture(params=["memory", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Where checkpoints go: one MemoryStore shared by the test's managers, or a SQLite file."""
    if request.param == "memory":
        with MemoryStore() as memory:
            yield memory
    else:
        yield tmp_path / "run.db"


def manager(target: Target, policy: CheckpointPolicy = EVERY, run: str = RUN) -> CheckpointManager:
    return CheckpointManager(run, store=target, enabled=True, policy=policy)


async def peek(target: Target, run: str = RUN) -> Checkpoint:
    """The run's latest checkpoint, read without adopting it (works on a succeeded run)."""
    async with manager(target, run=run) as mgr:
        return await mgr.load_checkpoint()


async def info(target: Target, run: str = RUN) -> RunInfo | None:
    async with manager(target, run=run) as mgr:
        return await mgr.run_info()


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


# --- dag_runner ----------------------------------------------------------------------


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
    async with MemoryStore() as store, manager(store) as mgr:
        out = await asyncio.wait_for(run_dag(nodes, manager=mgr, guard=guard), 5)
    assert sorted(out.values()) == [0, 1]
    assert sorted((await asyncio.wait_for(run_dag_plain(nodes), 5)).values()) == [0, 1]


async def test_guard_styles_and_plain_runner_give_identical_outputs() -> None:
    outputs = [await run_dag_plain(diamond(Counter()))]
    async with MemoryStore() as store:
        for guard in GUARDS:
            outputs.append(await run_dag(diamond(Counter()), guard=guard))
            for enabled in (False, True):
                mgr = CheckpointManager(f"{guard}-{enabled}", store=store, enabled=enabled)
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
    with MemoryStore() as memory:  # below: the default ./pitstop.db, a named file, a Store
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
        runs = memory.execute(Call(P.list_runs, (), False))
    if enabled:  # the control: the profiler does see pitstop when it is on
        assert "_on_node_finish" in called and "_save" in called
        assert (tmp_path / "pitstop.db").exists()
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    else:
        assert called == []
        assert list(tmp_path.iterdir()) == []
        assert runs == []


def test_disabled_run_imports_no_storage_or_database_module(tmp_path: Path) -> None:
    # A fresh interpreter: this test process has long imported the stores.
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "from dag_runner import Node, run_dag\n"
        "from pitstop import CheckpointManager\n"
        "async def one(): return 1\n"
        "for guard in ('site', 'once'):\n"
        "    assert asyncio.run(run_dag([Node('a', one)], manager=CheckpointManager('r'),"
        " guard=guard)) == {'a': 1}\n"
        "bad = ('pitstop.storage.sql', 'sqlite3', 'psycopg', 'sqlalchemy', 'sqlmodel')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m in bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


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
    run = await info(target)
    assert run is not None and run.status is RunStatus.FAILED and run.can_resume

    fail.clear()
    async with manager(target) as mgr:
        assert await run_dag(diamond(calls, fail), manager=mgr, guard=guard) == EXPECTED
        assert not await mgr.can_resume()  # succeeded: nothing left to resume
    assert calls == Counter(load=1, sorted=1, total=2, report=1)
    final = await peek(target)
    assert final.attempts == {"load": 1, "sorted": 1, "total": 2, "report": 1}
    run = await info(target)
    assert run is not None and (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)


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
    mgr = CheckpointManager(RUN, store=target, enabled=True, policy=EVERY, observers=[on_event])
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
    calls = Counter[str]()
    async with MemoryStore() as store:
        with pytest.raises(RuntimeError):
            await run_dag(diamond(calls, {"report"}), manager=manager(store), guard=guard)
        changed = [*diamond(calls), Node("extra", diamond(calls)[0].fn)]
        with pytest.raises(GraphMismatch) as mismatch:
            await run_dag(changed, manager=manager(store), guard=guard)
    assert mismatch.value.added == ("extra",)
    assert calls == Counter(load=1, sorted=1, total=1, report=1)


async def test_success_keeps_checkpoints_and_a_rerun_starts_fresh(target: Target) -> None:
    calls: Counter[str] = Counter()
    async with manager(target, CheckpointPolicy(after_each_level=True)) as mgr:
        await run_dag(diamond(calls), manager=mgr)
        triggers = [i.trigger for i in await mgr.list_checkpoints()]
    assert triggers == ["level:0", "level:1", "level:2"]  # kept after success
    async with manager(target, CheckpointPolicy(after_each_level=True)) as mgr:
        assert not await mgr.can_resume()
        assert await run_dag(diamond(calls), manager=mgr) == EXPECTED
        infos = await mgr.list_checkpoints()
    assert calls == Counter(load=2, sorted=2, total=2, report=2)  # nothing was skipped
    assert [i.seq for i in infos] == [1, 2, 3, 4, 5, 6]  # seqs are never reused
    assert infos[3].snapshot and infos[3].parent_seq is None  # a new lineage starts at 4


async def test_delete_on_success_removes_the_checkpoints(target: Target) -> None:
    async with manager(target, CheckpointPolicy(every_n_nodes=1, delete_on_success=True)) as mgr:
        await run_dag(diamond(Counter()), manager=mgr)
        assert await mgr.list_checkpoints() == []
        run = await mgr.run_info()
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert (run.last_seq, run.checkpoints, run.latest_seq) == (4, 0, None)


# --- pipeline_demo.py (the README's demo) ----------------------------------------------


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return example("pipeline_demo.py", *args, cwd=cwd)


async def test_demo_crashes_then_resumes_from_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    crashed = demo("--db", str(db), "--crash-at", "analyze", cwd=tmp_path)
    assert crashed.returncode == 1, crashed.stderr
    assert "preprocess: executing" in crashed.stdout and "analyze: CRASH" in crashed.stdout
    assert digest(crashed.stdout) is None and "report: executing" not in crashed.stdout
    assert "Traceback" not in crashed.stderr  # os._exit, not an exception
    cp = await peek(db, pipeline_demo.RUN_ID)
    assert (cp.run_id, cp.seq, cp.pending) == (pipeline_demo.RUN_ID, 2, ("analyze", "report"))
    assert set(cp.completed) == {"ingest", "preprocess"}
    run = await info(db, pipeline_demo.RUN_ID)
    assert run is not None and run.status is RunStatus.RUNNING and run.can_resume

    resumed = demo("--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr == ""
    for stage in ("ingest", "preprocess"):
        assert f"{stage}: skipped (restored from checkpoint seq 2)" in resumed.stdout
        assert f"{stage}: executing" not in resumed.stdout
    assert "analyze: executing" in resumed.stdout and "report: executing" in resumed.stdout

    clean = demo("--db", str(tmp_path / "clean.db"), cwd=tmp_path)
    assert clean.returncode == 0 and "skipped" not in clean.stdout
    assert digest(resumed.stdout) == digest(clean.stdout) is not None
    plain = await run_dag_plain(pipeline_demo.build_pipeline())  # no pitstop at all
    assert plain["report"]["sha256"] == digest(clean.stdout)

    again = demo("--db", str(db), cwd=tmp_path)  # the run succeeded: a fresh run, seq 5..8
    assert again.returncode == 0 and "skipped" not in again.stdout
    assert digest(again.stdout) == digest(clean.stdout)
    assert "checkpoint.save run=pipeline-demo seq=8" in again.stdout


def test_demo_story_passes_and_can_be_repeated(tmp_path: Path) -> None:
    for _ in range(2):  # the story deletes its databases first
        story = demo("--story", cwd=tmp_path)
        assert story.returncode == 0, story.stdout + story.stderr
        lines = story.stdout.splitlines()
        assert lines[-1] == "PASS" and "FAILED" not in story.stdout
        assert "  -> exit code 1" in lines
        assert "    analyze: CRASH (simulated power cut: os._exit(1))" in lines
        for stage in ("ingest", "preprocess"):
            assert f"      [dag_runner] {stage}: skipped (restored from checkpoint seq 2)" in lines
        assert "  [ok] resume skipped ingest, preprocess" in lines
        assert "  [ok] run marked succeeded, so the next run starts fresh" in lines
        digests = {line.split()[-1] for line in lines if "report sha256: " in line}
        assert len(digests) == 1  # the resumed and the clean run agree
    assert {p.name for p in tmp_path.glob("*.db")} == {"pitstop-demo.db", "pitstop-demo-clean.db"}


# --- sync_runner.py --------------------------------------------------------------------

LOOP = sync_runner.LOOP_BANNER
DONE_BEFORE_CRASH = ["load", "clean"]
RUN_AFTER_CRASH = ["features", "train", "report"]


def sync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return example("sync_runner.py", *args, cwd=cwd)


@pytest.fixture(scope="module")
def sync_clean_digest() -> str:
    """The pipeline's digest from one uninterrupted run, checkpoints off."""
    return sync_runner.clean_digest()


@pytest.mark.parametrize("inside_loop", [False, True], ids=["plain", "inside-loop"])
def test_sync_story_passes(inside_loop: bool, tmp_path: Path, sync_clean_digest: str) -> None:
    flags = ["--inside-loop"] if inside_loop else []
    for _ in range(2):  # the story deletes its database first
        story = sync("--story", *flags, cwd=tmp_path)
        assert story.returncode == 0, story.stdout + story.stderr
        lines = story.stdout.splitlines()
        assert lines[-1] == "PASS" and "FAILED" not in story.stdout
        assert f"  -> exit code {sync_runner.CRASH_EXIT}" in lines
        assert "  [ok] resume skipped load, clean" in lines
        assert "  [ok] resume ran features, train, report" in lines
        assert f"  [ok] resumed digest == clean digest ({sync_clean_digest})" in lines
        assert ("  [ok] both processes ran it inside a running event loop" in lines) is inside_loop
        assert story.stdout.count(LOOP) == (2 if inside_loop else 0)  # both children
    assert [p.name for p in tmp_path.iterdir()] == ["pitstop-sync-demo.db"]


@pytest.mark.parametrize("inside_loop", [False, True], ids=["plain", "inside-loop"])
def test_sync_runner_dies_in_stage_3_and_a_second_process_resumes(
    inside_loop: bool, tmp_path: Path, sync_clean_digest: str
) -> None:
    db = tmp_path / "sync.db"
    flags = ["--db", str(db), *(["--inside-loop"] if inside_loop else [])]
    crashed = sync(*flags, "--crash-at", "features", cwd=tmp_path)
    assert crashed.returncode == sync_runner.CRASH_EXIT, crashed.stdout + crashed.stderr
    assert "features: CRASH" in crashed.stdout and "Traceback" not in crashed.stderr
    assert digest(crashed.stdout) is None and "train: executing" not in crashed.stdout
    assert (LOOP in crashed.stdout) is inside_loop
    with SyncCheckpointManager(sync_runner.RUN_ID, store=db, enabled=True) as mgr:
        run = mgr.run_info()
        assert run is not None and run.status is RunStatus.RUNNING and mgr.can_resume()
        cp = mgr.load_checkpoint()
    assert cp.seq == 2 and sorted(cp.completed) == sorted(DONE_BEFORE_CRASH)
    assert sorted(cp.pending) == sorted(RUN_AFTER_CRASH)
    assert cp.attempts == {"load": 1, "clean": 1, "features": 0, "train": 0, "report": 0}
    assert cp.graph == {k: tuple(v) for k, v in sync_runner.GRAPH.items()}

    resumed = sync(*flags, cwd=tmp_path)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert (LOOP in resumed.stdout) is inside_loop
    for stage in DONE_BEFORE_CRASH:
        assert f"{stage}: skipped (restored from checkpoint)" in resumed.stdout
        assert f"{stage}: executing" not in resumed.stdout
    for stage in RUN_AFTER_CRASH:
        assert f"{stage}: executing" in resumed.stdout
    assert digest(resumed.stdout) == sync_clean_digest
    with SyncCheckpointManager(sync_runner.RUN_ID, store=db, enabled=True) as mgr:
        run = mgr.run_info()
        assert run is not None and run.status is RunStatus.SUCCEEDED and not mgr.can_resume()
        assert [i.seq for i in mgr.list_checkpoints()] == [1, 2, 3, 4, 5]
        assert mgr.load_checkpoint().attempts == dict.fromkeys(sync_runner.STAGES, 1)

    again = sync(*flags, cwd=tmp_path)  # the run succeeded: the next one starts fresh
    assert again.returncode == 0 and "skipped" not in again.stdout
    assert digest(again.stdout) == sync_clean_digest
    assert "checkpoint.save run=house-prices seq=10" in again.stdout


async def test_sync_runner_called_inside_a_running_loop_in_process(
    tmp_path: Path, sync_clean_digest: str
) -> None:
    asyncio.get_running_loop()  # pytest-asyncio runs this test body in a loop
    db = tmp_path / "sync.db"
    assert sync_runner.pipeline_digest(db) == sync_clean_digest  # no await anywhere
    with SyncCheckpointManager(sync_runner.RUN_ID, store=db, enabled=True) as mgr:
        assert len(mgr.list_checkpoints()) == len(sync_runner.STAGES)


def test_sync_runner_records_a_failing_stage_and_resume_reruns_it(tmp_path: Path) -> None:
    stages = sync_runner.build_stages(log=lambda message: None)
    real_train = stages["train"]

    def broken(feats: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("singular matrix")

    db, policy = tmp_path / "sync.db", CheckpointPolicy(every_n_nodes=1)
    with SyncCheckpointManager("failing", store=db, enabled=True, policy=policy) as mgr:
        with pytest.raises(ValueError, match="singular"):
            sync_runner.run_pipeline(sync_runner.GRAPH, {**stages, "train": broken}, mgr)
        run = mgr.run_info()
        cp = mgr.load_checkpoint()
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error == "ValueError: singular matrix"
    assert cp.info.trigger == "run_failed" and cp.interrupted == ("train",)
    assert sorted(cp.completed) == ["clean", "features", "load"]

    with SyncCheckpointManager("failing", store=db, enabled=True, policy=policy) as mgr:
        out = sync_runner.run_pipeline(sync_runner.GRAPH, {**stages, "train": real_train}, mgr)
        assert mgr.load_checkpoint().attempts["train"] == 2
    assert out["report"]["sha256"] == sync_runner.clean_digest()


def test_sync_runner_pitstop_lines_are_marked_and_counted() -> None:
    """The docstring's claim: 9 lines of pitstop wire the runner, each marked."""
    source = (EXAMPLES / "sync_runner.py").read_text()
    marked = re.findall(r"# pitstop (\d)/(\d)", source)
    assert [int(n) for n, _ in marked] == list(range(1, 10))  # numbered in reading order
    assert {total for _, total in marked} == {"9"} and "pitstop takes 9 lines" in source
    # Every line of the runner section that names pitstop or calls the manager is marked.
    wiring = source[source.index("# --- the runner") : source.index("# --- the stages")]
    for line in wiring.splitlines():
        code = line.split("#")[0]
        if re.search(r"mgr\.|CheckpointPolicy\(|SyncCheckpointManager\(", code):
            assert "# pitstop" in line, line
    import_line = next(line for line in source.splitlines() if line.startswith("from pitstop"))
    assert "# pitstop 1/9" in import_line


# --- docs ------------------------------------------------------------------------------


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


# --- frame_pipeline.py (pandas outputs, the default typed codec) -------------------------


def test_frame_story_passes(tmp_path: Path) -> None:
    story = example("frame_pipeline.py", "--story", cwd=tmp_path)
    assert story.returncode == 0, story.stdout + story.stderr
    lines = story.stdout.splitlines()
    assert lines[-1] == "PASS" and "FAILED" not in story.stdout
    assert "  [ok] pitstop show lists 2 completed, 3 pending" in lines
    assert "  [ok] pitstop export wrote the DataFrame (20,000 rows)" in lines


def test_frame_pipeline_outputs_restore_exactly_without_pickle(tmp_path: Path) -> None:
    import pandas as pd

    db = tmp_path / "frames.db"
    crashed = example("frame_pipeline.py", "--db", str(db), "--crash-at", "enriched", cwd=tmp_path)
    assert crashed.returncode == frame_pipeline.CRASH_EXIT, crashed.stdout + crashed.stderr
    with SyncCheckpointManager(frame_pipeline.RUN_ID, store=db, enabled=True) as mgr:
        cp = mgr.load_checkpoint()
    assert {i.serializer for i in [cp.info]} == {"typed"}
    pd.testing.assert_frame_equal(cp.completed["raw_orders"], frame_pipeline.raw_orders())
    pd.testing.assert_frame_equal(cp.completed["customers"], frame_pipeline.customers())
    dtypes = cp.completed["raw_orders"].dtypes.astype(str).to_dict()
    assert dtypes == {"order_id": "int64", "customer": "int32", "placed_at": dtypes["placed_at"],
                      "amount": "float64", "channel": "category", "coupon": "Int64"}  # fmt: skip
    assert dtypes["placed_at"].startswith("datetime64[") and "UTC" in dtypes["placed_at"]


def test_serialization_doc_runs_and_prints_what_it_shows(tmp_path: Path) -> None:
    """docs/serialization.md: its programs run in order, as one script (so their
    classes live in ``__main__``), and print exactly its text blocks."""
    text = (EXAMPLES.parent / "docs" / "serialization.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    driver = "import sys\nfor b in sys.argv[1:]: exec(b, sys.modules['__main__'].__dict__)"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", driver, *blocks],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(re.findall(r"```text\n(.*?)```", text, re.S))

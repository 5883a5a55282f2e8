"""pitstop.adapters.pydantic_graph on the real pydantic-graph, with real SQLite files.

The crash stories run as processes that die through ``os._exit`` (the example).
In-process tests make a step raise once instead, which fails the run (a
``run_failed`` checkpoint), then resume it with a second manager; each runs
on both twins (``SyncCheckpointManager`` and ``CheckpointManager``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import pytest
from pydantic import BaseModel, PrivateAttr
from pydantic_graph import (
    BaseNode,
    End,
    Graph,
    GraphBuilder,
    GraphRunContext,
    reduce_list_append,
)
from stories import EXAMPLES, STRICT_ENV
from stories import example as example_process

from pitstop import (
    CheckpointManager,
    CheckpointPolicy,
    NodeStatus,
    RunStatus,
    SerializationError,
    SyncCheckpointManager,
)
from pitstop.adapters.pydantic_graph import (
    ResumeError,
    UnsupportedGraph,
    node_id,
    run_with_checkpoints,
    run_with_checkpoints_sync,
    step_fingerprints,
)

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

import pydantic_graph_pipeline as example  # noqa: E402
from _story import digest_in  # noqa: E402

Kind = Literal["sync", "async"]
Manager = CheckpointManager | SyncCheckpointManager
EVERY = CheckpointPolicy(every_n_nodes=1)

CALLS: Counter[str] = Counter()
"""Side effects: how often each step ran (``bump3``: a Bump that found n == 3)."""
FAIL: dict[str, BaseException] = {}
"""Call key -> the exception that call raises, once."""


class Boom(Exception):
    pass


def called(key: str) -> None:
    CALLS[key] += 1
    if key in FAIL:
        raise FAIL.pop(key)


def fail_once(key: str, error: BaseException | None = None) -> BaseException:
    FAIL[key] = error = error or Boom(f"{key}: connection reset")
    return error


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    FAIL.clear()
    yield
    FAIL.clear()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@asynccontextmanager
async def manager(
    kind: Kind, db: Path, run: str = "run", policy: CheckpointPolicy = EVERY
) -> AsyncIterator[Manager]:
    if kind == "sync":
        with SyncCheckpointManager(run, store=db, enabled=True, policy=policy) as sync:
            yield sync
    else:
        async with CheckpointManager(run, store=db, enabled=True, policy=policy) as mgr:
            yield mgr


def peek(db: Path, run: str = "run") -> tuple[Any, Any]:
    """(run info, latest checkpoint, outputs not decoded) of ``run`` in the SQLite file ``db``."""
    with SyncCheckpointManager(run, store=db, enabled=True) as mgr:
        return mgr.run_info(), mgr.load_checkpoint(outputs=False)


def changed_attempts(cp: Any) -> dict[str, int]:
    return {k: v for k, v in cp.attempts.items() if v != 1}


# --- a BaseNode loop: Bump -> Check -> Bump ... -> Finish ---------------------------------


@dataclass
class Tally:
    limit: int
    n: int = 0
    seen: list[int] = field(default_factory=list)
    at: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Bump(BaseNode[Tally, None, int]):
    by: int = 1

    async def run(self, ctx: GraphRunContext[Tally, None]) -> Check:
        called(f"bump{ctx.state.n}")
        ctx.state.n += self.by
        ctx.state.seen.append(ctx.state.n)
        ctx.state.at += dt.timedelta(hours=ctx.state.n)
        return Check()


@dataclass
class Check(BaseNode[Tally, None, int]):
    async def run(self, ctx: GraphRunContext[Tally, None]) -> Bump | Finish:
        called(f"check{ctx.state.n}")
        return Bump() if ctx.state.n < ctx.state.limit else Finish(total=sum(ctx.state.seen))


@dataclass
class Finish(BaseNode[Tally, None, int]):
    total: int

    async def run(self, ctx: GraphRunContext[Tally, None]) -> End[int]:
        called("finish")
        return End(self.total * 10)


def loop_graph() -> Graph:
    g = GraphBuilder(state_type=Tally, input_type=Bump, output_type=int)
    g.add(g.edge_from(g.start_node).to(Bump), g.node(Bump), g.node(Check), g.node(Finish))
    return g.build()


LOOP = loop_graph()


def loop_ids(limit: int) -> list[str]:
    names = [*(["Bump", "Check"] * limit), "Finish"]
    return [node_id(k, name) for k, name in enumerate(names, start=1)]


async def test_finished_steps_do_not_run_again(kind: Kind, tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    fail_once("check2")  # step 4 of 9 fails the first time
    async with manager(kind, db) as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(LOOP, state=Tally(limit=4), inputs=Bump(), manager=mgr)
    assert Counter(bump0=1, check1=1, bump1=1, check2=1) == CALLS
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and cp.info.trigger == "run_failed"
    assert sorted(cp.completed) == loop_ids(4)[:3] and list(cp.failed) == ["0004:Check"]

    state = Tally(limit=4)  # a new process passes a new initial state
    async with manager(kind, db) as mgr:
        out = await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr)
    assert out == 100
    hours = dt.timedelta(hours=1 + 2 + 3 + 4)
    assert state == Tally(limit=4, n=4, seen=[1, 2, 3, 4], at=Tally.at + hours)
    # Only the failed step ran again: the three before it were restored, not re-run.
    assert Counter(bump0=1, check1=1, bump1=1, check2=2, bump2=1, check3=1, bump3=1,
                            check4=1, finish=1) == CALLS  # fmt: skip
    run, cp = peek(db)
    assert run.status is RunStatus.SUCCEEDED and not run.can_resume
    assert sorted(cp.completed) == loop_ids(4)
    assert changed_attempts(cp) == {"0004:Check": 2}


@pytest.mark.parametrize("iteration", [1, 3, 5])
async def test_a_loop_resumes_at_the_iteration_it_stopped_in(
    kind: Kind, iteration: int, tmp_path: Path
) -> None:
    db = tmp_path / "loop.db"
    fail_once(f"bump{iteration - 1}")  # the Bump of that iteration fails once
    async with manager(kind, db) as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(LOOP, state=Tally(limit=5), inputs=Bump(), manager=mgr)
    before = CALLS.copy()
    state = Tally(limit=5)
    async with manager(kind, db) as mgr:
        assert await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr) == 150
    resumed = CALLS - before
    bumps = sorted(int(k.removeprefix("bump")) for k in resumed if k.startswith("bump"))
    assert bumps == list(range(iteration - 1, 5))  # from the iteration that failed, on
    assert all(count == 1 for count in resumed.values())
    assert state.seen == [1, 2, 3, 4, 5]
    _, cp = peek(db)
    assert changed_attempts(cp) == {node_id(2 * iteration - 1, "Bump"): 2}


async def test_an_in_process_retry_with_the_same_manager_and_state_continues(
    kind: Kind, tmp_path: Path
) -> None:
    fail_once("bump2")
    state = Tally(limit=3)
    async with manager(kind, tmp_path / "retry.db") as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr)
        assert state.n == 2  # the failed attempt's state: not the initial one any more
        assert await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr) == 60
    assert Counter(bump0=1, check1=1, bump1=1, check2=1, bump2=2, check3=1, finish=1) == CALLS
    assert state.seen == [1, 2, 3]


def test_the_sync_entry_point_resumes_too(tmp_path: Path) -> None:
    db = tmp_path / "sync.db"
    fail_once("check1")
    with (
        SyncCheckpointManager("run", store=db, enabled=True, policy=EVERY) as mgr,
        pytest.raises(Boom),
    ):
        run_with_checkpoints_sync(LOOP, state=Tally(limit=2), inputs=Bump(), manager=mgr)
    with SyncCheckpointManager("run", store=db, enabled=True, policy=EVERY) as mgr:
        assert run_with_checkpoints_sync(LOOP, state=Tally(limit=2), inputs=Bump(),
                                         manager=mgr) == 30  # fmt: skip
    assert Counter(bump0=1, check1=2, bump1=1, check2=1, finish=1) == CALLS


# --- builder steps, a decision loop, a pydantic state -------------------------------------


class Ledger(BaseModel):
    entries: list[int] = []
    opened: dt.datetime = dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
    notes: dict[str, dt.date] = {}
    _client: str = PrivateAttr(default="live connection")  # never saved


class IntStep(Protocol):
    """What a step reads of its ``StepContext`` (pydantic-graph's own generics are lost on
    mypy: its TypeVars use ``infer_variance``)."""

    @property
    def inputs(self) -> int: ...


class LedgerStep(IntStep, Protocol):
    @property
    def state(self) -> Ledger: ...


steps = GraphBuilder(name="doubler", state_type=Ledger, input_type=int, output_type=str)


@steps.step
async def double(ctx: LedgerStep) -> int:
    called(f"double{ctx.inputs}")
    ctx.state.entries.append(ctx.inputs * 2)
    ctx.state.notes[str(ctx.inputs)] = dt.date(2026, 5, len(ctx.state.entries))
    if str(ctx.inputs) in {"7", "11", "13"}:  # a frozenset constant: fingerprints sort it
        ctx.state.entries.append(0)
    return ctx.inputs * 2


@steps.step
async def render(ctx: LedgerStep) -> str:
    called("render")
    return f"{ctx.inputs} after {len(ctx.state.entries)} doublings"


steps.add(
    steps.edge_from(steps.start_node).to(double),
    steps.edge_from(double).to(
        steps.decision()
        .branch(steps.match(int, matches=lambda x: x < 40).to(double))
        .branch(steps.match(int).to(render))
    ),
    steps.edge_from(render).to(steps.end_node),
)
DOUBLER = steps.build()


async def test_builder_steps_with_a_decision_loop_and_a_pydantic_state(
    kind: Kind, tmp_path: Path
) -> None:
    db = tmp_path / "steps.db"
    clean = Ledger()
    want = await DOUBLER.run(state=clean, inputs=3)
    CALLS.clear()
    fail_once("double12")  # 3 -> 6 -> 12 -> 24 -> 48: the third double fails
    async with manager(kind, db) as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(DOUBLER, state=Ledger(), inputs=3, manager=mgr)
    state = Ledger()
    async with manager(kind, db) as mgr:
        out = await run_with_checkpoints(DOUBLER, state=state, inputs=3, manager=mgr)
    assert out == want == "48 after 4 doublings"
    assert state == clean  # datetimes, dates and fields restored exactly ...
    assert state._client == "live connection"  # ... into the caller's object; privates kept
    assert Counter(double3=1, double6=1, double12=2, double24=1, render=1) == CALLS
    _, cp = peek(db)
    ids = ["0001:double", "0002:double", "0003:double", "0004:double", "0005:render"]
    assert sorted(cp.completed) == ids  # decisions and the end node are not steps


async def test_a_step_record_holds_what_it_handed_on_and_the_state(tmp_path: Path) -> None:
    db = tmp_path / "steps.db"
    async with CheckpointManager("run", store=db, enabled=True, policy=EVERY) as mgr:
        await run_with_checkpoints(DOUBLER, state=Ledger(), inputs=5, manager=mgr)
        cp = await mgr.load_checkpoint()
    first, last = cp.completed["0001:double"], cp.completed["0004:render"]
    assert first["next"] == [("decision", 10)]  # the task it handed on: (node id, inputs)
    assert isinstance(first["state"], Ledger) and first["state"].entries == [10]
    assert last["next"] == [("__end__", "40 after 3 doublings")]
    assert cp.completed["0002:double"]["state"].notes == {
        "5": dt.date(2026, 5, 1),
        "10": dt.date(2026, 5, 2),
    }


async def test_a_crash_after_the_last_step_resumes_without_running_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "end.db"

    class PowerCut(BaseException):
        pass

    def cut(**kwargs: Any) -> None:
        raise PowerCut  # the process dies before the run is marked finished

    async with manager("sync", db) as mgr:
        monkeypatch.setattr(mgr, "on_run_end", cut)
        with pytest.raises(PowerCut):
            await run_with_checkpoints(DOUBLER, state=Ledger(), inputs=5, manager=mgr)
    assert peek(db)[0].status is RunStatus.RUNNING
    before = CALLS.copy()
    state = Ledger()
    async with manager("async", db) as mgr:
        assert await run_with_checkpoints(DOUBLER, state=state, inputs=5,
                                          manager=mgr) == "40 after 3 doublings"  # fmt: skip
    assert before == CALLS and state.entries == [10, 20, 40]
    assert peek(db)[0].status is RunStatus.SUCCEEDED


class PowerCut(BaseException):
    """Not an Exception: what a KeyboardInterrupt or a SystemExit looks like to the run."""


async def test_an_interrupt_leaves_the_step_interrupted_and_fails_the_run(
    kind: Kind, tmp_path: Path
) -> None:
    db = tmp_path / "interrupt.db"
    cut = fail_once("check1", PowerCut())
    async with manager(kind, db) as mgr:
        with pytest.raises(PowerCut) as caught:
            await run_with_checkpoints(LOOP, state=Tally(limit=2), inputs=Bump(), manager=mgr)
    assert caught.value is cut
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and run.error == "PowerCut: "
    assert cp.interrupted == ("0002:Check",) and not cp.failed
    async with manager(kind, db) as mgr:
        assert await run_with_checkpoints(LOOP, state=Tally(limit=2), inputs=Bump(),
                                          manager=mgr) == 30  # fmt: skip
    assert Counter(bump0=1, check1=2, bump1=1, check2=1, finish=1) == CALLS


STARTED: dict[str, asyncio.Event] = {}


async def slow(ctx: IntStep) -> int:
    called("slow")
    STARTED["slow"].set()
    await asyncio.sleep(3600)
    return ctx.inputs


def slow_graph() -> Graph:
    g = GraphBuilder(input_type=int, output_type=int)
    a, b = g.step(first), g.step(slow)
    g.add(g.edge_from(g.start_node).to(a), g.edge_from(a).to(b), g.edge_from(b).to(g.end_node))
    return g.build()


async def test_a_cancelled_run_is_marked_failed_with_its_step_interrupted(
    kind: Kind, tmp_path: Path
) -> None:
    db = tmp_path / "cancel.db"
    STARTED["slow"] = asyncio.Event()
    async with manager(kind, db) as mgr:
        task = asyncio.create_task(run_with_checkpoints(slow_graph(), inputs=1, manager=mgr))
        await STARTED["slow"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and run.error.startswith("CancelledError")
    assert sorted(cp.completed) == ["0001:first"] and cp.interrupted == ("0002:slow",)
    assert cp.info.trigger == "run_failed"


# --- fingerprints: code and inputs ----------------------------------------------------------


async def first(ctx: IntStep) -> int:
    called("first")
    return ctx.inputs + 1


async def add(ctx: IntStep) -> int:
    called("add")
    return ctx.inputs + 10


async def add_v2(ctx: IntStep) -> int:
    called("add")
    return ctx.inputs + 20  # the fix that was deployed after the crash


async def third(ctx: IntStep) -> int:
    called("third")
    return ctx.inputs * 2


async def last(ctx: IntStep) -> int:
    called("last")
    return ctx.inputs - 1


def linear(add_step: Any = add) -> Graph:
    g = GraphBuilder(input_type=int, output_type=int)
    a, b = g.step(first), g.step(add_step, node_id="add")
    c, d = g.step(third), g.step(last)
    g.add(g.edge_from(g.start_node).to(a), g.edge_from(a).to(b), g.edge_from(b).to(c),
          g.edge_from(c).to(d), g.edge_from(d).to(g.end_node))  # fmt: skip
    return g.build()


def test_step_fingerprints_follow_code_not_objects() -> None:
    one, again, fixed = step_fingerprints(linear()), step_fingerprints(linear()), None
    fixed = step_fingerprints(linear(add_v2))
    assert one == again and set(one) == {"first", "add", "third", "last"}
    assert {k for k in one if one[k] != fixed[k]} == {"add"}
    loop = step_fingerprints(LOOP)
    assert loop == step_fingerprints(loop_graph()) and set(loop) == {"Bump", "Check", "Finish"}


def test_step_fingerprints_are_the_same_in_every_process() -> None:
    """Salted str hashing must not leak in (a set literal compiles to a frozenset)."""
    code = (
        "import json, sys; sys.path[:0] = sys.argv[1:]\n"
        "import test_adapter_pydantic_graph as t, pydantic_graph_pipeline as e\n"
        "from pitstop.adapters.pydantic_graph import step_fingerprints as f\n"
        "print(json.dumps([f(t.DOUBLER), f(t.LOOP), f(e.GRAPH)]))"
    )
    want = [step_fingerprints(DOUBLER), step_fingerprints(LOOP), step_fingerprints(example.GRAPH)]
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(TESTS), str(EXAMPLES)],
            env={**STRICT_ENV, "PYTHONHASHSEED": seed}, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(proc.stdout) == want


async def test_a_changed_step_runs_again_with_the_steps_after_it(
    kind: Kind, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "fp.db"
    fail_once("last")
    async with manager(kind, db) as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(linear(), inputs=1, manager=mgr)
    assert Counter(first=1, add=1, third=1, last=1) == CALLS
    caplog.set_level(logging.INFO, "pitstop")
    async with manager(kind, db) as mgr:
        assert await run_with_checkpoints(linear(add_v2), inputs=1, manager=mgr) == 43
    assert Counter(first=1, add=2, third=2, last=2) == CALLS  # first was restored
    assert "2 finished steps from 0002:add on run again: fingerprint changed" in caplog.text
    assert "resuming after step 0001:first" in caplog.text


async def test_new_inputs_run_every_step_again(kind: Kind, tmp_path: Path) -> None:
    db = tmp_path / "inputs.db"
    fail_once("last")
    async with manager(kind, db) as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(linear(), inputs=1, manager=mgr)
    async with manager(kind, db) as mgr:
        assert await run_with_checkpoints(linear(), inputs=2, manager=mgr) == 25
    assert Counter(first=2, add=2, third=2, last=2) == CALLS
    fail_once("last")
    async with manager(kind, db, run="named") as mgr:  # inputs named by the caller instead
        with pytest.raises(Boom):
            await run_with_checkpoints(linear(), inputs=1, manager=mgr, fingerprint="batch-7")
    async with manager(kind, db, run="named") as mgr:
        out = await run_with_checkpoints(linear(), inputs=1, manager=mgr, fingerprint="batch-7")
    assert out == 23 and Counter(first=3, add=3, third=3, last=4) == CALLS


async def test_an_in_process_retry_with_new_inputs_runs_every_step_again(
    kind: Kind, tmp_path: Path
) -> None:
    fail_once("last")
    async with manager(kind, tmp_path / "retry.db") as mgr:
        with pytest.raises(Boom):
            await run_with_checkpoints(linear(), inputs=1, manager=mgr)
        assert await run_with_checkpoints(linear(), inputs=2, manager=mgr) == 25
    assert Counter(first=2, add=2, third=2, last=2) == CALLS


async def test_inputs_that_cannot_be_digested_need_a_fingerprint(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    async with manager("async", db) as mgr:
        with pytest.raises(SerializationError, match=r"the graph inputs .*or pass fingerprint="):
            await run_with_checkpoints(linear(), inputs=Opaque(), manager=mgr)
        assert not CALLS
        with pytest.raises(TypeError):  # named by the caller: it runs (and ``first`` fails)
            await run_with_checkpoints(linear(), inputs=Opaque(), manager=mgr, fingerprint="x")
    assert Counter(first=1) == CALLS


# --- policies --------------------------------------------------------------------------------


async def test_before_nodes_takes_step_ids(kind: Kind, tmp_path: Path) -> None:
    db = tmp_path / "before.db"
    policy = CheckpointPolicy(
        before_nodes=frozenset({"Finish", "0003:Bump"})
    )  # a step id, a node id
    async with manager(kind, db, policy=policy) as mgr:
        await run_with_checkpoints(LOOP, state=Tally(limit=2), inputs=Bump(), manager=mgr)
    with SyncCheckpointManager("run", store=db, enabled=True) as reader:
        infos = reader.list_checkpoints()
    assert [(i.trigger, i.node) for i in infos] == [
        ("before_node", "0003:Bump"),
        ("before_node", "0005:Finish"),
    ]


async def test_after_each_level_is_refused_before_anything_runs(tmp_path: Path) -> None:
    db = tmp_path / "levels.db"
    policy = CheckpointPolicy(after_each_level=True)
    async with manager("async", db, policy=policy) as mgr:
        with pytest.raises(UnsupportedGraph, match="every_n_nodes=1"):
            await run_with_checkpoints(LOOP, state=Tally(limit=2), inputs=Bump(), manager=mgr)
    assert not CALLS and not db.exists()


# --- unsupported shapes and states ----------------------------------------------------------


@dataclass
class Items:
    picked: list[int] = field(default_factory=list)


fan = GraphBuilder(name="fan", state_type=Items, input_type=int, output_type=list[int])


@fan.step
async def left(ctx: IntStep) -> int:
    called("left")
    return ctx.inputs - 1


@fan.step
async def right(ctx: IntStep) -> int:
    called("right")
    return ctx.inputs + 1


collect = fan.join(reduce_list_append, initial_factory=list[int], node_id="collect")
fan.add(
    fan.edge_from(fan.start_node).to(left, right, fork_id="both"),
    fan.edge_from(left, right).to(collect),
    fan.edge_from(collect).to(fan.end_node),
)
BROADCAST = fan.build()

mapper = GraphBuilder(name="mapper", input_type=list[int], output_type=list[int])


@mapper.step
async def square(ctx: IntStep) -> int:
    called("square")
    return ctx.inputs**2


gather = mapper.join(reduce_list_append, initial_factory=list[int], node_id="gather")
mapper.add(
    mapper.edge_from(mapper.start_node).map(fork_id="each").to(square),
    mapper.edge_from(square).to(gather),
    mapper.edge_from(gather).to(mapper.end_node),
)
MAP = mapper.build()


@pytest.mark.parametrize(
    ("graph", "inputs", "ids"),
    [(BROADCAST, 5, ("both", "collect")), (MAP, [1, 2, 3], ("each", "gather"))],
    ids=["broadcast-join", "map-join"],
)
async def test_forks_and_joins_raise_a_typed_error_before_any_step(
    kind: Kind, graph: Graph, inputs: Any, ids: tuple[str, ...], tmp_path: Path
) -> None:
    db = tmp_path / "fork.db"
    async with manager(kind, db) as mgr:
        with pytest.raises(UnsupportedGraph) as caught:
            await run_with_checkpoints(graph, state=Items(), inputs=inputs, manager=mgr)
    assert caught.value.node_ids == tuple(sorted(ids)) and caught.value.graph_name == graph.name
    assert "forks and joins" in str(caught.value)
    assert not CALLS and not db.exists()  # nothing ran, nothing was opened
    off = SyncCheckpointManager("off", store=db)  # disabled: the graph just runs
    assert sorted(await run_with_checkpoints(graph, state=Items(), inputs=inputs,
                                             manager=off)) == sorted(await graph.run(
                                                 state=Items(), inputs=inputs))  # fmt: skip
    assert not db.exists()


@pytest.mark.parametrize("state", [7, (1, 2), "text"], ids=["int", "tuple", "str"])
async def test_a_state_that_cannot_be_restored_in_place_is_refused(
    state: Any, tmp_path: Path
) -> None:
    async with manager("sync", tmp_path / "state.db") as mgr:
        with pytest.raises(UnsupportedGraph, match="cannot be restored in place"):
            await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr)
    assert not CALLS


class Opaque(BaseNode[Tally, None, int]):  # not a dataclass: the typed codec cannot save it
    async def run(self, ctx: GraphRunContext[Tally, None]) -> End[int]:
        called("opaque")
        return End(0)


@dataclass
class HandsOff(BaseNode[Tally, None, int]):
    async def run(self, ctx: GraphRunContext[Tally, None]) -> Opaque:
        called("hands-off")
        return Opaque()


def opaque_graph() -> Graph:
    g = GraphBuilder(state_type=Tally, input_type=HandsOff, output_type=int)
    g.add(g.edge_from(g.start_node).to(HandsOff), g.node(HandsOff), g.node(Opaque))
    return g.build()


async def test_a_hand_off_that_cannot_be_saved_fails_the_run_with_serialization_error(
    kind: Kind, tmp_path: Path
) -> None:
    db = tmp_path / "opaque.db"
    async with manager(kind, db) as mgr:
        with pytest.raises(SerializationError) as caught:
            await run_with_checkpoints(opaque_graph(), state=Tally(limit=1), inputs=HandsOff(),
                                       manager=mgr)  # fmt: skip
    assert caught.value.node_id == "0001:HandsOff" and caught.value.path == ("next", 0, 1)
    assert "Opaque is not supported" in str(caught.value)
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and run.error.startswith("SerializationError")
    assert cp.nodes["0001:HandsOff"].status is NodeStatus.RUNNING  # unfinished: runs again
    assert Counter({"hands-off": 1}) == CALLS


async def test_a_run_written_by_another_runner_is_not_continued(tmp_path: Path) -> None:
    db = tmp_path / "foreign.db"
    with SyncCheckpointManager("run", store=db, enabled=True) as other:
        other.on_run_start(graph={"extract": []})
        other.on_node_start(node_id="extract")
        other.on_node_finish(node_id="extract", output=[1, 2])
        other.save_checkpoint()
    async with manager("async", db) as mgr:
        with pytest.raises(ResumeError, match="'extract' is not a '<k>:<step id>' node") as caught:
            await run_with_checkpoints(LOOP, state=Tally(limit=1), inputs=Bump(), manager=mgr)
    assert (caught.value.run_id, caught.value.seq) == ("run", 1) and not CALLS


# --- disabled: nothing installed, nothing opened ---------------------------------------------


def pitstop_calls() -> tuple[list[str], Any]:
    seen: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_globals.get("__name__", "").startswith("pitstop"):
            seen.append(frame.f_code.co_name)

    return seen, profile


@pytest.mark.parametrize("off", ["sync", "async", "none"])
async def test_a_disabled_manager_runs_the_graph_and_nothing_else(off: str, tmp_path: Path) -> None:
    db = tmp_path / "off.db"
    mgr: Manager | None = None
    if off == "sync":
        mgr = SyncCheckpointManager("off", store=db)
    elif off == "async":
        mgr = CheckpointManager("off", store=db)
    want = await LOOP.run(state=Tally(limit=3), inputs=Bump())
    CALLS.clear()
    seen, profile = pitstop_calls()
    state = Tally(limit=3)
    sys.setprofile(profile)
    try:
        out = await run_with_checkpoints(LOOP, state=state, inputs=Bump(), manager=mgr)
    finally:
        sys.setprofile(None)
    assert out == want and state.seen == [1, 2, 3] and CALLS["finish"] == 1
    assert set(seen) == {"run_with_checkpoints"}  # no hook, no fingerprint, no store
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_the_sync_entry_point_disabled_just_runs_the_graph(tmp_path: Path) -> None:
    off = SyncCheckpointManager("off", store=tmp_path / "off.db")
    seen, profile = pitstop_calls()
    sys.setprofile(profile)
    try:
        out = run_with_checkpoints_sync(LOOP, state=Tally(limit=2), inputs=Bump(), manager=off)
    finally:
        sys.setprofile(None)
    assert out == 30 and set(seen) == {"run_with_checkpoints_sync"}
    assert list(tmp_path.iterdir()) == []


# --- the example, as real processes ------------------------------------------------------------


def run_example(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return example_process("pydantic_graph_pipeline.py", *args, cwd=cwd, timeout=120)


def test_the_example_story_passes(tmp_path: Path) -> None:
    story = run_example("--story", cwd=tmp_path)
    assert story.returncode == 0, story.stdout + story.stderr
    lines = story.stdout.splitlines()
    assert lines[-1] == "PASS" and "FAILED" not in story.stdout
    assert f"  -> exit code {example.CRASH_EXIT}" in lines
    assert "    extract (round 1): CRASH (simulated power cut: os._exit(3))" in lines
    assert "  [ok] resume skipped plan, search (round 1)" in lines
    assert "  [ok] resume ran the other 10 steps, in order" in lines
    assert "  [ok] its checkpoint holds the 12 steps 0001:Plan .. 0012:Publish" in lines
    assert len({line.split()[-1] for line in lines if "report sha256: " in line}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [example.DEFAULT_DB]


def test_the_example_killed_in_a_later_loop_round_resumes_in_that_round(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    crashed = run_example("--db", str(db), "--crash-at-step", "8", cwd=tmp_path)
    assert crashed.returncode == example.CRASH_EXIT, crashed.stdout + crashed.stderr
    assert "search (round 3): CRASH" in crashed.stdout and "Traceback" not in crashed.stderr
    run, cp = peek(db, example.RUN_ID)  # statuses only: its classes live in that __main__
    assert run.status is RunStatus.RUNNING and run.can_resume
    ids = [node_id(k, name) for k, name in enumerate(example.STEP_NODES, start=1)]
    assert sorted(cp.completed) == ids[:7] and cp.seq == 7

    resumed = run_example("--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    ran = [line.removesuffix(": executing") for line in resumed.stdout.splitlines()
           if line.endswith(": executing")]  # fmt: skip
    assert ran == list(example.STEPS[7:])  # search (round 3) onwards
    assert "resuming after step 0007:Assess (7 finished steps restored" in resumed.stdout
    assert digest_in(resumed.stdout) == example.clean_digest()
    run, cp = peek(db, example.RUN_ID)
    assert run.status is RunStatus.SUCCEEDED and sorted(cp.completed) == ids


def test_the_example_marks_its_five_pitstop_lines() -> None:
    source = (EXAMPLES / "pydantic_graph_pipeline.py").read_text()
    marked = re.findall(r"# pitstop (\d)/(\d)", source)
    assert [int(n) for n, _ in marked] == [1, 2, 3, 4, 5] and {t for _, t in marked} == {"5"}
    assert "pitstop takes 5 lines" in source
    wiring = source[: source.index("# --- the story")]  # the story inspects; it is not wiring
    for line in wiring.splitlines():
        code = line.split("#")[0]
        calls = r"^from pitstop|(CheckpointManager|CheckpointPolicy|run_with_checkpoints)\("
        if re.search(calls, code):
            assert "# pitstop" in line, line

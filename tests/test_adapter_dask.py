"""pitstop.adapters.dask on real dask schedulers (threads, sync, processes) and a real
``distributed.LocalCluster`` of worker processes, with SQLite files in tmp_path.

Every task below leaves a file in a trace directory each time it runs, so "did not
run again" is counted, not assumed; a task fails while a marker file names it (a
marker, not an argument, so that the task's key stays the same).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import dask
import dask.array as da
import pytest
from dask.callbacks import Callback
from dask.delayed import Delayed, delayed
from dask.utils import key_split
from distributed import Client, LocalCluster
from hypothesis import given
from hypothesis import strategies as st
from stories import EXAMPLES, example

from pitstop import (
    CheckpointEvent,
    CheckpointManager,
    CheckpointPolicy,
    RunStatus,
    StaleBaseError,
    SyncCheckpointManager,
)
from pitstop._types import check_id
from pitstop.adapters.dask import (
    DaskCheckpoint,
    DaskCheckpointWarning,
    TooManyTasks,
    node_id,
)

EVERY = CheckpointPolicy(every_n_nodes=1)
RUN = "dask-run"
WIDTH = 3
EXPECTED = {"total": sum(2 * v for v in range(WIDTH * 5))}


# --- tasks (module level: the processes scheduler and the workers import them by name) --


def _ran(trace: str, name: str) -> None:
    Path(trace, f"{name}.{uuid.uuid4().hex}").touch(exist_ok=False)
    if Path(trace).with_name("fail").joinpath(name).exists():
        raise ValueError(f"{name}: injected failure")


def load(trace: str, i: int, size: int = 5) -> list[int]:
    _ran(trace, f"load{i}")
    return list(range(i * size, i * size + size))


def clean(trace: str, i: int, rows: list[int]) -> list[int]:
    _ran(trace, f"clean{i}")
    return [2 * r for r in rows]


def total(trace: str, *parts: list[int]) -> int:
    _ran(trace, "total")
    return sum(map(sum, parts))


def report(trace: str, value: int) -> dict[str, int]:
    _ran(trace, "report")
    return {"total": value}


def slow(trace: str, i: int) -> int:
    _ran(trace, f"slow{i}")
    time.sleep(0.4)
    return i * i


def active_callbacks(trace: str) -> int:
    """How many dask callbacks are registered while this task runs."""
    _ran(trace, "probe")
    return len(Callback.active)


def pipeline(trace: Path, *, first: int = 0, named: bool = False) -> Delayed:
    """load[i] -> clean[i] -> total -> report; ``first`` more rows for load0 (an input
    change); ``named``: user-chosen keys (``dask_key_name``) instead of dask's tokens."""
    t = str(trace)

    def task(fn: Callable[..., Any], *args: Any, key: str) -> Any:
        named_as = {"dask_key_name": key} if named else {}
        return delayed(fn, pure=True)(*args, **named_as)

    loads = [task(load, t, i, 5 + (first if i == 0 else 0), key=f"load{i}") for i in range(WIDTH)]
    cleans = [task(clean, t, i, x, key=f"clean{i}") for i, x in enumerate(loads)]
    result: Delayed = task(report, t, task(total, t, *cleans, key="total"), key="report")
    return result


def plain(graph: Any, **kwargs: Any) -> Any:
    """``dask.compute(graph)[0]``, no pitstop involved (dask's annotations are partial)."""
    return dask.compute(graph, **kwargs)[0]  # type: ignore[attr-defined,no-untyped-call]


def executed(trace: Path) -> collections.Counter[str]:
    return collections.Counter(p.name.split(".")[0] for p in trace.iterdir())


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    (tmp_path / "trace").mkdir()
    (tmp_path / "fail").mkdir()
    return tmp_path / "trace"


def fail(trace: Path, name: str, on: bool = True) -> None:
    marker = trace.with_name("fail") / name
    if on:
        marker.touch()
    else:
        marker.unlink()


def manager(db: Path, **kwargs: Any) -> SyncCheckpointManager:
    return SyncCheckpointManager(RUN, store=db, enabled=True, policy=EVERY, **kwargs)


def peek(db: Path) -> Any:
    with manager(db) as mgr:
        return mgr.run_info(), mgr.load_checkpoint()


def clear(trace: Path) -> None:
    for p in trace.iterdir():
        p.unlink()


# --- the example stories, as real processes -----------------------------------------


def test_pipeline_story_passes(tmp_path: Path) -> None:
    story = example("dask_pipeline.py", "--story", cwd=tmp_path, timeout=120)
    assert story.returncode == 0, story.stdout + story.stderr
    lines = story.stdout.splitlines()
    assert lines[-1] == "PASS" and "FAILED" not in story.stdout
    assert "    combine: CRASH (simulated power cut: os._exit(3))" in lines
    assert "  [ok] resume skipped extract x4, clean x4" in lines
    assert "  [ok] resume ran no extract or clean task" in lines
    assert "  [ok] resume ran combine, forecast x4, report" in lines
    digests = {line.split()[-1] for line in lines if "report sha256: " in line}
    assert len(digests) == 1  # the resumed and the clean run agree
    assert [p.name for p in tmp_path.iterdir()] == ["pitstop-dask-demo.db"]


def test_distributed_story_passes(tmp_path: Path) -> None:
    story = example("dask_distributed.py", "--story", cwd=tmp_path, timeout=120)
    assert story.returncode == 0, story.stdout + story.stderr
    lines = story.stdout.splitlines()
    assert lines[-1] == "PASS" and "FAILED" not in story.stdout
    assert "  -> exit code 3" in lines and "  -> exit code 0" in lines
    assert "    client: CRASH in sessionize (os._exit(3); the workers keep going)" in lines
    assert "  [ok] resume skipped fetch x6, clean x1, sessionize x1" in lines
    assert "  [ok] resume ran no fetch or clean task" in lines
    assert "  [ok] a worker was SIGKILLed mid-graph and restarted" in lines
    assert sum(1 for line in lines if line.startswith("    SIGKILL worker pid ")) == 1


def test_the_doc_programs_run_and_print_what_it_shows(tmp_path: Path) -> None:
    """docs/adapters/dask.md: its complete programs run in order (one of them on a
    LocalCluster) and print exactly its text blocks."""
    text = (EXAMPLES.parent / "docs" / "adapters" / "dask.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    driver = "import sys\nfor b in sys.argv[1:]: exec(b, {'__name__': '__main__'})"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", driver, *blocks],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert len(blocks) == 2 and proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(re.findall(r"```text\n(.*?)```", text, re.S))


# --- local schedulers ----------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["threads", "sync", "processes"])
def test_finished_tasks_do_not_run_again(scheduler: str, trace: Path, tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    graph = pipeline(trace)
    fail(trace, "total")
    with manager(db) as mgr, pytest.raises(ValueError, match="total: injected failure"):
        DaskCheckpoint(mgr).compute(graph, scheduler=scheduler)
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and run.error == "ValueError: total: injected failure"
    done = sorted(key_split(n) for n in cp.completed)
    assert done == ["clean"] * WIDTH + ["load"] * WIDTH  # saved before the failure
    assert executed(trace)["total"] == 1 and executed(trace)["report"] == 0

    fail(trace, "total", on=False)
    clear(trace)
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        assert ckpt.compute(graph, scheduler=scheduler) == (EXPECTED,)
    assert executed(trace) == {"total": 1, "report": 1}  # nothing else ran again
    assert ckpt.report is not None and ckpt.report.restored_seq == cp.seq
    assert sorted(ckpt.report.skipped) == sorted(cp.completed)
    run, cp = peek(db)
    assert run.status is RunStatus.SUCCEEDED and len(cp.completed) == 2 * WIDTH + 2
    attempts = {key_split(n): a for n, a in cp.attempts.items()}
    assert attempts == {"load": 1, "clean": 1, "total": 2, "report": 1}  # total: interrupted


def test_a_with_block_records_and_resumes_every_local_computation(
    trace: Path, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    first, second = pipeline(trace), pipeline(trace, first=1)  # share load1.., clean1..
    fail(trace, "total")
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        with pytest.raises(ValueError, match="total"), ckpt:
            plain(first, scheduler="sync")  # fails in total
    fail(trace, "total", on=False)
    clear(trace)
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        with ckpt:
            got = plain(first, scheduler="sync"), plain(second, scheduler="threads")
    assert got[0] == EXPECTED and got[1] == plain(pipeline(trace, first=1))
    runs = executed(trace)
    # the second computation's load0/clean0 are new keys; its other tasks were restored
    assert runs["load0"] == 2 and runs["load1"] == 1 and runs["clean2"] == 1
    report_ = ckpt.report
    assert report_ is not None and len(report_.skipped) == 2 * WIDTH + 2 * (WIDTH - 1)


def test_a_run_that_failed_after_its_last_task_runs_nothing_again(
    trace: Path, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    with (
        manager(db) as mgr,
        pytest.raises(KeyError, match="after the graph"),
        DaskCheckpoint(mgr),
    ):
        plain(pipeline(trace), scheduler="threads")
        raise KeyError("after the graph")  # the block fails: the run is marked failed
    assert peek(db)[0].status is RunStatus.FAILED
    clear(trace)
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        assert ckpt.compute(pipeline(trace), scheduler="threads") == (EXPECTED,)
    assert executed(trace) == {}  # every task, the result's too, came from the checkpoint
    assert ckpt.report is not None and len(ckpt.report.skipped) == 2 * WIDTH + 2


def test_a_scheduler_that_runs_a_copy_of_the_graph_is_caught(
    trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume relies on the local scheduler running the dict its start callbacks got;
    a dask that ran a copy would run the restored tasks again: that must fail loudly."""
    import dask.local

    db = tmp_path / "run.db"
    fail(trace, "total")
    with manager(db) as mgr, pytest.raises(ValueError):
        DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="sync")
    fail(trace, "total", on=False)
    originals = dict(pipeline(trace).__dask_graph__())  # the tasks, before any restore
    real: Any = dask.local.start_state_from_dask

    def copying(dsk: dict[Any, Any], **kwargs: Any) -> Any:
        return real({k: originals.get(k, v) for k, v in dsk.items()}, **kwargs)

    monkeypatch.setattr(dask.local, "start_state_from_dask", copying)
    with manager(db) as mgr, pytest.raises(RuntimeError, match="restored from the checkpoint"):
        DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="sync")
    assert peek(db)[0].status is RunStatus.FAILED


def test_changed_inputs_get_new_keys_and_run_again(trace: Path, tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    fail(trace, "total")
    with manager(db) as mgr, pytest.raises(ValueError):
        DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="threads")
    fail(trace, "total", on=False)
    clear(trace)
    changed = pipeline(trace, first=100)  # load0's input: new keys for load0, clean0, total...
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        (out,) = ckpt.compute(changed, scheduler="threads")
    assert out == plain(pipeline(trace, first=100), scheduler="sync")
    runs = executed(trace)
    assert runs["load0"] == runs["clean0"] == 2  # ours, and the reference run's
    assert runs["load1"] == runs["clean2"] == 1  # only the reference run's
    assert ckpt.report is not None and ckpt.report.unmatched == 2  # the old load0, clean0
    _, cp = peek(db)  # the new tasks were registered as they started, with their deps
    layers = {n: sorted(key_split(d) for d in deps) for n, deps in cp.graph.items()}
    assert sorted(key_split(n) for n in cp.graph) == sorted(["load", "clean"] * (WIDTH + 1)
                                                            + ["total", "report"] * 2)  # fmt: skip
    assert all(layers[n] == ["load"] for n in layers if key_split(n) == "clean")
    assert all(layers[n] == ["clean"] * WIDTH for n in layers if key_split(n) == "total")


def test_level_saves_need_an_unchanged_graph(trace: Path, tmp_path: Path) -> None:
    db, levels = tmp_path / "run.db", CheckpointPolicy(after_each_level=True)
    fail(trace, "total")
    with (
        SyncCheckpointManager(RUN, store=db, enabled=True, policy=levels) as mgr,
        pytest.raises(ValueError, match="total"),
    ):
        DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="sync")
    fail(trace, "total", on=False)
    with SyncCheckpointManager(RUN, store=db, enabled=True, policy=levels) as mgr:
        with pytest.raises(ValueError, match="needs one fixed graph"):
            DaskCheckpoint(mgr).compute(pipeline(trace, first=1), scheduler="sync")
        assert DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="sync") == (EXPECTED,)
        triggers = [i.trigger for i in mgr.list_checkpoints()]
    assert triggers == ["level:0", "level:1", "run_failed", "level:2", "level:3"]


def test_user_named_keys_rerun_when_their_fingerprint_changes(trace: Path, tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    fail(trace, "total")
    with manager(db) as mgr, pytest.raises(ValueError):
        DaskCheckpoint(mgr).compute(pipeline(trace, named=True))
    _, before = peek(db)
    assert sorted(before.completed) == ["clean0", "clean1", "clean2", "load0", "load1", "load2"]
    fail(trace, "total", on=False)
    clear(trace)
    changed = pipeline(trace, first=7, named=True)  # the same keys, load0 computes otherwise
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        (out,) = ckpt.compute(changed)
    assert out == {"total": 2 * (sum(range(12)) + sum(range(5, 15)))}  # load0: 12 rows
    assert executed(trace) == {"load0": 1, "clean0": 1, "total": 1, "report": 1}
    assert ckpt.report is not None
    assert set(ckpt.report.stale) == {"load0", "clean0"}  # its own change, and downstream
    assert "fingerprint changed" in ckpt.report.stale["load0"]
    assert "upstream" in ckpt.report.stale["clean0"] or "fingerprint" in ckpt.report.stale["clean0"]
    _, after = peek(db)
    fp = {n: after.nodes[n].fingerprint for n in ("load0", "load1")}
    assert fp["load0"] != before.nodes["load0"].fingerprint
    assert fp["load1"] == before.nodes["load1"].fingerprint


def test_disabled_manager_installs_nothing(trace: Path, tmp_path: Path) -> None:
    db = tmp_path / "off.db"
    off = SyncCheckpointManager(RUN, store=db)  # disabled, the default
    ckpt = DaskCheckpoint(off)
    probe = delayed(active_callbacks, pure=True)(str(trace))
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_globals.get("__name__", "").startswith("pitstop"):
            calls.append(frame.f_code.co_name)

    with ckpt:
        sys.setprofile(profile)  # the sync scheduler runs the tasks on this thread
        try:
            inside = plain(probe, scheduler="sync")
        finally:
            sys.setprofile(None)
    assert inside == 0 and calls == []  # no callback registered, no pitstop code ran
    assert ckpt.compute(probe, scheduler="threads") == (0,)
    assert Callback.active == set() and ckpt.report is None
    assert not db.exists()  # nothing opened, nothing written


def test_too_many_tasks_names_the_layers_and_layers_choose(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    # The scheduler runs the optimized graph: ones, + 1 and each chunk's sum fuse into
    # one "sum" task per chunk (36), then "sum-partial" (12); the last aggregate fuses
    # into dask's randomly named finalize step, which is never checkpointed.
    x = (da.ones((60, 60), chunks=10) + 1).sum()
    with manager(db) as mgr:
        with pytest.raises(TooManyTasks) as err:
            DaskCheckpoint(mgr, max_tasks=20).compute(x)
        assert err.value.limit == 20 and err.value.tasks == 36 + 12
        assert list(err.value.layers)[:2] == ["sum", "sum-partial"]
        assert "layers=" in str(err.value) and "'sum' (36)" in str(err.value)
        assert not db.exists()  # refused before the store was touched
        ckpt = DaskCheckpoint(mgr, layers=["sum"], max_tasks=20)
        assert ckpt.compute(x) == (7200.0,)
        saved = mgr.load_checkpoint().completed
    assert len(saved) == 36 and {key_split(n) for n in saved} == {"sum"}
    assert all(n.startswith("('sum-") for n in saved)  # tuple keys: their repr
    with manager(db) as mgr:  # a predicate works too; the run succeeded: a fresh run
        ckpt = DaskCheckpoint(mgr, layers=lambda key: isinstance(key, tuple) and key[1:] == (0, 0))
        assert ckpt.compute(x) == (7200.0,)
        assert ckpt.report is not None and ckpt.report.restored_seq is None
        assert 1 < ckpt.report.checkpointed < 6


def test_layers_follow_fused_tasks_and_unmatched_names_warn(tmp_path: Path) -> None:
    # Fusion names the fused task after its first layer ("random") and leaves the keys
    # of "mean_chunk" as aliases of it: naming either layer checkpoints the fused task.
    rng = da.random.default_rng(0)  # type: ignore[no-untyped-call]
    x = (rng.random((40, 40), chunks=10) * 2).mean(axis=0)
    want = plain(x)
    for layer in ("mean_chunk", "random"):
        with manager(tmp_path / f"{layer}.db") as mgr:
            ckpt = DaskCheckpoint(mgr, layers=[layer])
            (got,) = ckpt.compute(x, scheduler="sync")
            saved = mgr.load_checkpoint().completed
        assert (got == want).all() and ckpt.report is not None
        assert ckpt.report.checkpointed == len(saved) == 16
        assert {n.split("-")[0] for n in saved} == {"('random"}
    with manager(tmp_path / "none.db") as mgr:
        ckpt = DaskCheckpoint(mgr, layers=["mean_chunk", "nope"])
        with pytest.warns(
            DaskCheckpointWarning, match=r"\['nope'\] match no task.*'random' \(16\)"
        ):
            ckpt.compute(x, scheduler="sync")
        assert ckpt.report is not None and ckpt.report.checkpointed == 16


def test_random_keys_are_not_checkpointed_and_warned_about(trace: Path, tmp_path: Path) -> None:
    impure = delayed(report)(str(trace), delayed(total, pure=True)(str(trace), [1]))
    with manager(tmp_path / "run.db") as mgr:
        ckpt = DaskCheckpoint(mgr)
        with pytest.warns(DaskCheckpointWarning, match="1 task.* random keys"):
            assert ckpt.compute(impure, scheduler="sync") == ({"total": 1},)
        assert ckpt.report is not None and ckpt.report.checkpointed == 1
        assert [key_split(n) for n in mgr.load_checkpoint().completed] == ["total"]


def test_a_block_without_local_computation_warns(tmp_path: Path) -> None:
    with manager(tmp_path / "run.db") as mgr:
        with pytest.warns(DaskCheckpointWarning, match="no dask computation"), DaskCheckpoint(mgr):
            pass
        assert not mgr.can_resume()


def test_a_second_writer_of_the_run_is_refused(trace: Path, tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    fail(trace, "total")
    with manager(db) as first, pytest.raises(ValueError):
        DaskCheckpoint(first).compute(pipeline(trace), scheduler="sync")
    fail(trace, "total", on=False)
    with manager(db) as other:
        other.restore_checkpoint()

        def race(event: CheckpointEvent) -> None:
            if event.name == "checkpoint.load":  # ours restored: the other one saves now
                other.save_checkpoint(label="the other writer")

        with manager(db, observers=[race]) as mgr, pytest.raises(StaleBaseError) as err:
            DaskCheckpoint(mgr).compute(pipeline(trace), scheduler="sync")
    assert err.value.run_id == RUN
    run, cp = peek(db)
    assert cp.info.label == "the other writer" and run.status is RunStatus.FAILED


def test_bad_arguments_raise_type_and_value_errors(tmp_path: Path) -> None:
    mgr = SyncCheckpointManager(RUN, store=tmp_path / "run.db")
    with pytest.raises(TypeError, match="SyncCheckpointManager"):
        DaskCheckpoint(CheckpointManager(RUN, store=tmp_path / "run.db"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layers"):
        DaskCheckpoint(mgr, layers="clean")
    with pytest.raises(TypeError, match="layers"):
        DaskCheckpoint(mgr, layers=["clean", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_tasks"):
        DaskCheckpoint(mgr, max_tasks=0)
    with pytest.raises(TypeError, match="max_tasks"):
        DaskCheckpoint(mgr, max_tasks=True)


# --- node ids ------------------------------------------------------------------------

TRICKY: list[Any] = ["x", "x-1", ("x", 0), "('x', 0)", ("('x', 0)",), 1, "1", 1.5, "1.5",
                     b"x", "b'x'", "None", None, "", "''", "a\x00b", "\ud800", "(1,)", (1,),
                     "'(1,)'", ("x", 0, 1), ("x", (0, 1)), float("inf"), "inf", "'inf'",
                     ("x", float("-inf")), "('x', -inf)", True, "True"]  # fmt: skip


def test_node_ids_are_valid_stable_and_distinct() -> None:
    ids = [node_id(k) for k in TRICKY]
    assert len(set(ids)) == len(TRICKY)
    for nid in ids:
        check_id("node_id", nid)
    assert node_id("sum-aggregate-0123456789abcdef0123456789abcdef") == (
        "sum-aggregate-0123456789abcdef0123456789abcdef"
    )
    assert node_id(("add-abc", 0, 1)) == "('add-abc', 0, 1)"
    assert node_id("('add-abc', 0, 1)") == "\"('add-abc', 0, 1)\""


_names = st.text(max_size=8)
_keys = st.one_of(
    _names,
    st.integers(),
    st.floats(allow_nan=False),  # NaN is no key: it differs from itself
    st.tuples(_names, st.integers(0, 9)),
    st.tuples(_names, st.integers(0, 9), st.integers(0, 9)),
)


@given(st.lists(_keys, unique=True, max_size=20))
def test_node_ids_never_collide(keys: list[Any]) -> None:
    ids = [node_id(k) for k in keys]
    assert len(set(ids)) == len(keys)
    for nid in ids:
        check_id("node_id", nid)


# --- dask.distributed: a LocalCluster of worker processes -------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    # ":0": a free port for the scheduler's HTTP server; the default (8787) may be held by
    # another cluster on this machine (other test runs), and distributed would warn.
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):  # fmt: skip
        yield client


def plugins(client: Client) -> tuple[list[str], list[list[str]]]:
    def scheduler(dask_scheduler: Any) -> list[str]:
        return sorted(dask_scheduler.plugins)

    def worker(dask_worker: Any) -> list[str]:
        return sorted(dask_worker.plugins)

    on_scheduler = client.run_on_scheduler(scheduler)  # type: ignore[no-untyped-call]
    return on_scheduler, sorted(client.run(worker).values())


def test_distributed_failure_marks_the_run_failed_and_a_resume_skips(
    client: Client, trace: Path, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    fail(trace, "total")
    before = plugins(client)
    with manager(db) as mgr, pytest.raises(ValueError, match="total: injected failure"):
        DaskCheckpoint(mgr).compute(pipeline(trace), client=client)
    run, cp = peek(db)
    assert run.status is RunStatus.FAILED and run.error == "ValueError: total: injected failure"
    assert [key_split(n) for n in cp.failed] == ["total"]
    assert cp.failed == {n: "ValueError: total: injected failure" for n in cp.failed}
    assert sorted(key_split(n) for n in cp.completed) == ["clean"] * WIDTH + ["load"] * WIDTH

    fail(trace, "total", on=False)
    clear(trace)
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        assert ckpt.compute(pipeline(trace), client=client) == (EXPECTED,)
    assert executed(trace) == {"total": 1, "report": 1}
    assert ckpt.report is not None and len(ckpt.report.skipped) == 2 * WIDTH
    run, cp = peek(db)
    assert run.status is RunStatus.SUCCEEDED and len(cp.completed) == 2 * WIDTH + 2
    assert plugins(client) == before  # the adapter installs nothing on the cluster


def test_distributed_resume_of_a_finished_graph_submits_only_data(
    client: Client, trace: Path, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    with manager(db) as mgr:
        assert DaskCheckpoint(mgr).compute(pipeline(trace), client=client) == (EXPECTED,)
        mgr.on_run_end(success=False, error=RuntimeError("the caller failed afterwards"))
    clear(trace)
    with manager(db) as mgr:
        ckpt = DaskCheckpoint(mgr)
        assert ckpt.compute(pipeline(trace), client=client) == (EXPECTED,)
    assert executed(trace) == {} and ckpt.report is not None
    assert len(ckpt.report.skipped) == 2 * WIDTH + 2


def test_distributed_disabled_is_plain_dask(client: Client, trace: Path, tmp_path: Path) -> None:
    before = plugins(client)
    off = DaskCheckpoint(SyncCheckpointManager(RUN, store=tmp_path / "off.db"))
    assert off.compute(pipeline(trace), client=client) == (EXPECTED,)
    with dask.config.set(scheduler=client):  # found as dask.compute finds it
        assert off.compute(pipeline(trace)) == (EXPECTED,)
    assert plugins(client) == before and not (tmp_path / "off.db").exists()


def test_distributed_graph_completes_when_a_worker_is_sigkilled(
    client: Client, trace: Path, tmp_path: Path
) -> None:
    t = str(trace)
    squares = [delayed(slow, pure=True)(t, i) for i in range(8)]
    graph = delayed(total, pure=True)(t, squares)
    killed: list[int] = []

    def kill(event: CheckpointEvent) -> None:  # after the first saved task: mid-graph
        if event.name == "checkpoint.save" and not killed:
            busy = client.processing()  # type: ignore[no-untyped-call]
            worker = next(w for w, keys in busy.items() if keys)
            killed.append(client.run(os.getpid, workers=[worker])[worker])
            os.kill(killed[0], signal.SIGKILL)

    pids = set(client.run(os.getpid).values())
    with manager(tmp_path / "run.db", observers=[kill]) as mgr:
        assert DaskCheckpoint(mgr).compute(graph, client=client) == (sum(i * i for i in range(8)),)
        cp = mgr.load_checkpoint()
    assert killed and killed[0] in pids
    assert len(cp.completed) == 9 and not cp.to_run
    runs = executed(trace)
    assert all(runs[f"slow{i}"] >= 1 for i in range(8)) and runs["total"] == 1
    client.wait_for_workers(2, timeout=30)  # the nanny restarted it
    assert killed[0] not in set(client.run(os.getpid).values())

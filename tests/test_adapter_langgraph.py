"""pitstop.adapters.langgraph: LangGraph's checkpointer conformance suite on every
backend, real StateGraphs interrupted and resumed by a second saver, the storage of
growing lists (tails, snapshots), integrity, and typed errors.

The "new process" of the resume tests is a second ``PitstopSaver`` with its own store
connection (SQLite file, PostgreSQL database) and an empty cache; with
``MemoryStore`` both savers share the store object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from conftest import rows_of
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from stories import example

from pitstop import (
    CorruptCheckpoint,
    MemoryStore,
    SerializationError,
    SqlStore,
    Store,
    StoreError,
)
from pitstop._errors import EncryptionKeyError
from pitstop.adapters.langgraph import PitstopSaver, run_id_of
from pitstop.codecs import AesGcmKeys, Envelope
from pitstop.storage import _programs as P
from pitstop.storage._programs import Call

# -- conformance ------------------------------------------------------------------------


async def test_conformance_suite_passes_every_capability(store: Store) -> None:
    """LangGraph's own suite (langgraph-checkpoint-conformance): all 8 capabilities,
    base and extended, on memory, a SQLite file and PostgreSQL."""

    @checkpointer_test(name=f"PitstopSaver[{store.url}]")
    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        with PitstopSaver(store) as saver:
            yield saver

    report = await validate(factory)
    report.print_report()
    results = report.results
    assert set(results) == {c.value for c in Capability}
    failed = {name: r.failures for name, r in results.items() if r.passed is not True}
    assert not failed, failed
    assert all(r.detected and r.tests_failed == 0 and r.tests_passed > 0 for r in results.values())
    assert report.conformance_level() == "FULL"


# -- real graphs: interrupt, then resume in a new saver ---------------------------------


class Doc(TypedDict, total=False):
    topic: str
    outline: list[str]
    draft: str
    verdict: str
    published: str


def doc_graph(runs: Counter[str]) -> StateGraph[Doc]:
    """plan -> write -> review (asks a human: ``interrupt``) -> publish."""

    def plan(state: Doc) -> Doc:
        runs["plan"] += 1
        return {"outline": [f"{state['topic']}: part {i}" for i in range(3)]}

    def write(state: Doc) -> Doc:
        runs["write"] += 1
        return {"draft": " / ".join(state["outline"])}

    def review(state: Doc) -> Doc:
        runs["review"] += 1
        verdict = interrupt({"draft": state["draft"]})
        return {"verdict": str(verdict)}

    def publish(state: Doc) -> Doc:
        runs["publish"] += 1
        return {"published": f"{state['draft']} [{state['verdict']}]"}

    graph = StateGraph(Doc)
    for name, fn in (("plan", plan), ("write", write), ("review", review), ("publish", publish)):
        graph.add_node(name, fn)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "write")
    graph.add_edge("write", "review")
    graph.add_edge("review", "publish")
    graph.add_edge("publish", END)
    return graph


def reference(runs: Counter[str]) -> dict[str, Any]:
    """The same graph, interrupted and resumed in one InMemorySaver: what resume must give."""
    graph = doc_graph(runs).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "ref"}}
    graph.invoke({"topic": "resume"}, config)
    return dict(graph.invoke(Command(resume="approved"), config))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store | str]:
    """Where two savers meet: a shared MemoryStore, or a SQLite file / PostgreSQL database
    URL that each saver opens with its own connection."""
    if request.param == "memory":
        with MemoryStore() as memory:
            yield memory
    elif request.param == "sqlite":
        yield str(tmp_path / "graph.db")
    else:
        yield request.getfixturevalue("pg_db")


def test_interrupt_then_resume_from_a_second_saver(target: Store | str) -> None:
    first: Counter[str] = Counter()
    config: RunnableConfig = {"configurable": {"thread_id": "doc-1"}}
    with PitstopSaver(target) as saver:
        graph = doc_graph(first).compile(checkpointer=saver)
        paused = graph.invoke({"topic": "resume"}, config)
        assert [i.value for i in paused["__interrupt__"]] == [{"draft": paused["draft"]}]
        assert graph.get_state(config).next == ("review",)
    assert first == {"plan": 1, "write": 1, "review": 1}

    second: Counter[str] = Counter()  # a new process: new saver, new graph, same target
    with PitstopSaver(target) as saver:
        graph = doc_graph(second).compile(checkpointer=saver)
        state = graph.get_state(config)
        assert state.next == ("review",) and state.values["draft"] == paused["draft"]
        done = graph.invoke(Command(resume="approved"), config)
        assert graph.get_state(config).next == ()
    # plan and write are not run again; review restarts (interrupt semantics), publish runs
    assert second == {"review": 1, "publish": 1}
    assert done == reference(Counter())


async def test_async_interrupt_before_then_resume_from_a_second_saver(store_url: str) -> None:
    first: Counter[str] = Counter()
    config: RunnableConfig = {"configurable": {"thread_id": "doc-async"}}
    async with PitstopSaver(store_url) as saver:
        graph = doc_graph(first).compile(checkpointer=saver, interrupt_before=["review"])
        await graph.ainvoke({"topic": "async"}, config)
        assert (await graph.aget_state(config)).next == ("review",)
    assert first == {"plan": 1, "write": 1}

    second: Counter[str] = Counter()
    async with PitstopSaver(store_url) as saver:
        graph = doc_graph(second).compile(checkpointer=saver, interrupt_before=["review"])
        await graph.ainvoke(None, config)  # runs review, which asks: interrupt()
        done = await graph.ainvoke(Command(resume="ok"), config)
        history = [s async for s in graph.aget_state_history(config)]
    assert second == {"review": 2, "publish": 1}
    assert done["published"].endswith("[ok]") and done["outline"][0] == "async: part 0"
    assert history[-1].metadata is not None and history[-1].metadata["source"] == "input"
    assert [s.metadata["step"] for s in history if s.metadata] == list(
        range(len(history) - 2, -2, -1)
    )


# -- growing lists: tails, snapshots, exact history ---------------------------------------


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    step: int


def chat_graph(steps: int, edit_at: int = -1) -> StateGraph[Chat]:
    """One message per step; at ``edit_at`` the first message is edited (same id) and the
    second removed: a change that is not an append."""

    def chat(state: Chat) -> dict[str, Any]:
        i = state["step"]
        new: list[Any] = [
            AIMessage(f"answer {i} " + "x" * 40, id=f"m{i}")
            if i % 2
            else HumanMessage(f"question {i}", id=f"m{i}")
        ]
        if i == edit_at:
            new += [HumanMessage("question 0, edited", id="m0"), RemoveMessage(id="m1")]
        return {"messages": new, "step": i + 1}

    graph = StateGraph(Chat)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_conditional_edges("chat", lambda s: "chat" if s["step"] < steps else END)
    return graph


def history(saver: BaseCheckpointSaver[Any], thread: str) -> list[CheckpointTuple]:
    return list(saver.list({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}))


def test_growing_list_is_stored_as_tails_and_restores_exactly(store: Store) -> None:
    steps, thread = 40, "chat"
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": 200}
    ref = InMemorySaver()
    chat_graph(steps, edit_at=17).compile(checkpointer=ref).invoke({"messages": [], "step": 0},
                                                                   config)  # fmt: skip
    with PitstopSaver(store, snapshot_every=7) as saver:
        chat_graph(steps, edit_at=17).compile(checkpointer=saver).invoke(
            {"messages": [], "step": 0}, config
        )
    with PitstopSaver(store) as fresh:  # nothing cached: every read comes from the store
        ours, theirs = history(fresh, thread), history(ref, thread)
        assert len(ours) == len(theirs) == steps + 2
        for a, b in zip(ours, theirs, strict=True):
            assert a.checkpoint["channel_values"] == b.checkpoint["channel_values"]
            assert a.metadata["step"] == b.metadata["step"]
            assert [w[1:] for w in a.pending_writes or []] == [
                w[1:] for w in b.pending_writes or []
            ]
        latest = fresh.get_tuple(config)
        assert latest is not None
        messages = latest.checkpoint["channel_values"]["messages"]
        assert len(messages) == steps - 1 and messages[0].content == "question 0, edited"

    records = store.execute(Call(P.list_checkpoints, (run_id_of(thread, ""),), False))
    assert [r.seq for r in records if r.root_seq == r.seq][:3] == [1, 8, 15]  # every 7
    deltas = [r for r in records if r.root_seq != r.seq and r.seq > 3]
    # A delta holds the new message, not the whole list (which grows to ~2 KB), except
    # the one where the list was edited (step 17): that one is written whole.
    whole = [r for r in deltas if r.size > 1500]
    assert len(whole) == 1 and whole[0].info().metadata["step"] == 17 + 1
    assert max(r.size for r in deltas if r not in whole) < 900


def test_values_match_a_second_saver_writing_the_same_thread(tmp_path: Path) -> None:
    """Two savers append to one thread in turn: each one's first write on a parent it did
    not write is a snapshot, the rest deltas; every checkpoint restores exactly."""
    db = tmp_path / "two.db"
    config: RunnableConfig = {"configurable": {"thread_id": "t"}, "recursion_limit": 100}
    with PitstopSaver(db) as a, PitstopSaver(db) as b:
        graph_a = chat_graph(6).compile(checkpointer=a)
        graph_b = chat_graph(12).compile(checkpointer=b)
        graph_a.invoke({"messages": [], "step": 0}, config)
        graph_b.invoke({"messages": [HumanMessage("again", id="again")]}, config)
        final = graph_a.get_state(config).values
    assert [m.id for m in final["messages"]] == [*(f"m{i}" for i in range(6)), "again",
                                                 *(f"m{i}" for i in range(6, 12))]  # fmt: skip
    with PitstopSaver(db) as fresh:
        assert len(history(fresh, "t")) == 6 + 2 + 6 + 2


@pytest.mark.parametrize("other_cached", [False, True], ids=["snapshot", "delta"])
def test_a_put_on_a_parent_whose_commit_was_lost_is_written_whole(
    tmp_path: Path, other_cached: bool
) -> None:
    """A crash lost the commit of B (seq 2; durability="normal"), and another saver
    then wrote B2, which got seq 2 again. The saver that wrote B still has it cached:
    its next put on B must not become a delta on B2 (a checkpoint no read could
    decode); the seq holds another checkpoint, so the put is written whole."""
    from langgraph.checkpoint.base import empty_checkpoint

    db = str(tmp_path / "lost.db")

    def cp(cid: str, values: dict[str, Any], versions: dict[str, Any]) -> Any:
        c = empty_checkpoint()
        c["id"], c["channel_values"], c["channel_versions"] = cid, values, versions
        return c

    def cfg(cid: str | None = None) -> RunnableConfig:
        conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
        if cid is not None:
            conf["checkpoint_id"] = cid
        return {"configurable": conf}

    with PitstopSaver(db) as x, PitstopSaver(db) as y:
        x.put(cfg(), cp("A", {"a": "A", "b": "A"}, {"a": 1, "b": 1}), {}, {"a": 1, "b": 1})
        x.put(cfg("A"), cp("B", {"a": "X-B", "b": "A"}, {"a": 2, "b": 1}), {}, {"a": 2})
        for table in ("pitstop_checkpoints", "pitstop_snapshots", "pitstop_node_states"):
            rows_of(db, f"DELETE FROM {table} WHERE seq = 2")
        rows_of(db, "DELETE FROM pitstop_langgraph_checkpoints WHERE checkpoint_id = 'B'")
        if other_cached:
            assert y.get_tuple(cfg("A")) is not None  # then B2 is a delta on A
        y.put(cfg("A"), cp("B2", {"a": "A", "b": "Y-B2"}, {"a": 1, "b": 2}), {}, {"b": 2})
        x.put(cfg("B"), cp("C", {"a": "X-C", "b": "A"}, {"a": 3, "b": 1}), {}, {"a": 3})
    with PitstopSaver(db) as fresh:
        c = fresh.get_tuple(cfg("C"))
        b2 = fresh.get_tuple(cfg("B2"))
    assert c is not None and b2 is not None
    assert c.checkpoint["channel_values"] == {"a": "X-C", "b": "A"}
    assert b2.checkpoint["channel_values"] == {"a": "A", "b": "Y-B2"}


def test_fork_from_an_older_checkpoint_keeps_both_branches(store: Store) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "fork"}, "recursion_limit": 100}
    with PitstopSaver(store) as saver:
        graph = chat_graph(8).compile(checkpointer=saver)
        graph.invoke({"messages": [], "step": 0}, config)
        main_end = graph.get_state(config).config
        old = next(s for s in graph.get_state_history(config) if s.values.get("step") == 3)
        forked = graph.update_state(old.config, {"messages": [HumanMessage("fork", id="f")]})
        graph.invoke(None, forked)  # continues the branch: steps 3..7 again
    with PitstopSaver(store) as fresh:
        graph = chat_graph(8).compile(checkpointer=fresh)
        ids = [m.id for m in graph.get_state(config).values["messages"]]
        assert ids == ["m0", "m1", "m2", "f", "m3", "m4", "m5", "m6", "m7"]
        fork_start = graph.get_state(forked)
        assert fork_start.parent_config is not None
        assert (
            fork_start.parent_config["configurable"]["checkpoint_id"]
            == (old.config["configurable"]["checkpoint_id"])
        )
        main = graph.get_state(main_end)  # the first branch is intact
        assert [m.id for m in main.values["messages"]] == [f"m{i}" for i in range(8)]


def test_prune_and_delete_then_continue(store: Store) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "p"}, "recursion_limit": 100}
    with PitstopSaver(store, snapshot_every=4) as saver:
        chat_graph(10).compile(checkpointer=saver).invoke({"messages": [], "step": 0}, config)
        saver.prune(["p"])
        assert len(history(saver, "p")) == 1
    with PitstopSaver(store) as fresh:  # the kept checkpoint still restores (its chain stayed)
        graph = chat_graph(14).compile(checkpointer=fresh)
        assert len(graph.get_state(config).values["messages"]) == 10
        done = graph.invoke({"messages": [HumanMessage("more", id="more")]}, config)
        ids = [*(f"m{i}" for i in range(10)), "more", *(f"m{i}" for i in range(10, 14))]
        assert [m.id for m in done["messages"]] == ids
        fresh.delete_thread("p")
        assert fresh.get_tuple(config) is None and history(fresh, "p") == []
        again = chat_graph(2).compile(checkpointer=fresh).invoke({"messages": [], "step": 0},
                                                                 config)  # fmt: skip
        assert [m.id for m in again["messages"]] == ["m0", "m1"]
    runs = {r.run_id: r for r in store.execute(Call(P.list_runs, (), False))}
    assert runs[run_id_of("p", "")].checkpoints == 2 + 2  # seqs go on after the delete


def test_copy_thread_then_resume_the_copy(store: Store) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "src"}}
    with PitstopSaver(store) as saver:
        graph = doc_graph(Counter()).compile(checkpointer=saver)
        graph.invoke({"topic": "resume"}, config)
        saver.copy_thread("src", "dst")
        copied: RunnableConfig = {"configurable": {"thread_id": "dst"}}
        assert graph.get_state(copied).next == ("review",)
        done = graph.invoke(Command(resume="approved"), copied)
        assert done == reference(Counter())
        assert len(history(saver, "dst")) == len(history(saver, "src")) + 2
        assert graph.get_state(config).next == ("review",)  # the source is untouched


def test_subgraph_namespaces(store: Store) -> None:
    """A subgraph's checkpoints live in their own namespace (a run of their own)."""

    class Inner(TypedDict):
        n: int

    inner = StateGraph(Inner)
    inner.add_node("bump", lambda s: {"n": s["n"] + 1})
    inner.add_node("ask", lambda s: {"n": s["n"] * int(interrupt("factor?"))})
    inner.add_edge(START, "bump")
    inner.add_edge("bump", "ask")
    outer = StateGraph(Inner)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    config: RunnableConfig = {"configurable": {"thread_id": "nested"}}
    with PitstopSaver(store) as saver:
        outer.compile(checkpointer=saver).invoke({"n": 1}, config)
        namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(config)}
        assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)
    with PitstopSaver(store) as fresh:
        assert outer.compile(checkpointer=fresh).invoke(Command(resume=5), config) == {"n": 10}


# -- integrity --------------------------------------------------------------------------


def _chat_db(path: Path, steps: int = 12) -> RunnableConfig:
    config: RunnableConfig = {"configurable": {"thread_id": "c"}, "recursion_limit": 100}
    with PitstopSaver(path, snapshot_every=50) as saver:
        chat_graph(steps).compile(checkpointer=saver).invoke({"messages": [], "step": 0}, config)
        latest = saver.get_tuple(config)
        assert latest is not None
        saver.put_writes(latest.config, [("messages", [HumanMessage("pending", id="p")])], "t1")
    return config


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE pitstop_node_states SET output = CAST('9' || X'00' || 'x' AS BLOB) "
        "WHERE serializer = 'langgraph-append' AND seq = 8",
        "UPDATE pitstop_node_states SET fingerprint = '999' WHERE node_id = 'messages' AND seq = 8",
        "DELETE FROM pitstop_node_states WHERE node_id = 'messages' AND seq = 5",
        "UPDATE pitstop_langgraph_writes SET value = CAST('x' AS BLOB)",
        "UPDATE pitstop_langgraph_checkpoints SET seq = seq - 1 "
        "WHERE seq = (SELECT MAX(seq) FROM pitstop_langgraph_checkpoints)",
    ],
    ids=["tail", "version", "missing-tail", "write", "index"],
)
def test_damage_is_detected(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "c.db"
    config = _chat_db(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute(damage).rowcount >= 1
    conn.close()
    with PitstopSaver(db) as saver, pytest.raises(CorruptCheckpoint):
        saver.get_tuple(config)


def test_read_only_store(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    config = _chat_db(db)
    with SqlStore(db, readonly=True) as ro, PitstopSaver(ro) as saver:
        latest = saver.get_tuple(config)
        assert latest is not None and len(latest.checkpoint["channel_values"]["messages"]) == 12
        assert latest.pending_writes is not None and len(latest.pending_writes) == 1
        with pytest.raises(StoreError, match="read-only"):
            saver.delete_thread("c")
    empty = tmp_path / "empty.db"
    with SqlStore.sqlite(empty) as store:
        store.open()  # pitstop tables, no LangGraph ones
    with (
        SqlStore(empty, readonly=True) as ro,
        PitstopSaver(ro) as saver,
        pytest.raises(StoreError, match="no LangGraph checkpoints"),
    ):
        saver.get_tuple(config)


def test_encrypted_at_rest(tmp_path: Path) -> None:
    keys = Envelope(encryption=AesGcmKeys({"k1": os.urandom(32)}))
    db = tmp_path / "secret.db"
    config: RunnableConfig = {"configurable": {"thread_id": "s"}}
    with PitstopSaver(db, envelope=keys) as saver:
        chat_graph(3).compile(checkpointer=saver).invoke({"messages": [], "step": 0}, config)
    raw = db.read_bytes() + (Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b"")
    assert b"question 0" not in raw and b"answer 1" not in raw
    with PitstopSaver(db, envelope=keys) as saver:
        latest = saver.get_tuple(config)
        assert latest is not None and len(latest.checkpoint["channel_values"]["messages"]) == 3
    with PitstopSaver(db) as saver, pytest.raises(EncryptionKeyError):
        saver.get_tuple(config)


# -- errors -----------------------------------------------------------------------------


def test_unencodable_values_and_metadata_write_nothing(store: Store) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "bad"}}
    with PitstopSaver(store) as saver:
        graph = chat_graph(2).compile(checkpointer=saver)
        graph.invoke({"messages": [], "step": 0}, config)
        latest = saver.get_tuple(config)
        assert latest is not None
        checkpoint = dict(latest.checkpoint)
        bad = dict(checkpoint, id="z-1", channel_values={"step": threading.Lock()},
                   channel_versions={"step": 99})  # fmt: skip
        with pytest.raises(SerializationError, match="channel 'step'"):
            saver.put(latest.config, bad, latest.metadata, {"step": 99})  # type: ignore[arg-type]
        not_json: Any = {**latest.metadata, "when": float("nan")}
        with pytest.raises(SerializationError, match="metadata"):
            saver.put(latest.config, dict(checkpoint, id="z-2"), not_json, {})  # type: ignore[arg-type]
        with pytest.raises(SerializationError, match="write of task"):
            saver.put_writes(latest.config, [("x", object())], "task")
        after = saver.get_tuple(config)
        assert after is not None and after.checkpoint["id"] == latest.checkpoint["id"]
        assert not after.pending_writes


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="snapshot_every"):
        PitstopSaver(MemoryStore(), snapshot_every=0)
    with pytest.raises(TypeError, match="envelope"):
        PitstopSaver(MemoryStore(), envelope="zstd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="URL"):
        PitstopSaver("postgresql:/nohost/db")
    with MemoryStore() as store, PitstopSaver(store) as saver:
        with pytest.raises(ValueError, match="thread_id"):
            saver.get_tuple({"configurable": {}})
        with pytest.raises(ValueError, match="checkpoint_id"):
            saver.put_writes({"configurable": {"thread_id": "t"}}, [("a", 1)], "task")
        with pytest.raises(ValueError, match="prune strategy"):
            saver.prune(["t"], strategy="oldest")
        with pytest.raises(TypeError, match="not a str"):
            saver.prune("t")
        with pytest.raises(TypeError, match="not a str"):
            saver.delete_for_runs("r")
        with pytest.raises(ValueError, match="NUL"):
            saver.get_tuple({"configurable": {"thread_id": "a\x00b"}})
    with pytest.raises(StoreError, match="closed"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_run_ids_are_unambiguous() -> None:
    assert run_id_of("a/b", "") != run_id_of("a", "b/")
    assert run_id_of("a%2Fb", "") != run_id_of("a/b", "")
    assert run_id_of("chat 1", "sub:x") == "langgraph/chat 1/sub:x"


def test_large_unchanged_values_are_stored_once(store: Store) -> None:
    """A 120 KB document that never changes: deltas never rewrite it, snapshots refer to
    one content-addressed blob (pitstop's Envelope deduplicates from 16 KiB)."""

    class Job(TypedDict, total=False):
        doc: str
        n: int

    graph = StateGraph(Job)
    graph.add_node("step", lambda s: {"n": s["n"] + 1})
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: "step" if s["n"] < 12 else END)
    doc = "".join(f"{i:06d}" for i in range(20_000))
    config: RunnableConfig = {"configurable": {"thread_id": "big"}}
    with PitstopSaver(store, snapshot_every=3) as saver:
        graph.compile(checkpointer=saver).invoke({"doc": doc, "n": 0}, config)
    records = store.execute(Call(P.list_checkpoints, (run_id_of("big", ""),), False))
    assert sum(r.root_seq == r.seq for r in records) == 5  # snapshots at seqs 1, 4, 7, 10, 13
    count, size = store.execute(Call(P.blob_stats, (), False))
    assert count == 2 and size < 2 * len(doc)  # the document, and the input that carried it
    with PitstopSaver(store) as fresh:
        latest = fresh.get_tuple(config)
        assert latest is not None and latest.checkpoint["channel_values"]["doc"] == doc


def test_example_story_passes(tmp_path: Path) -> None:
    proc = example("langgraph_agent.py", "--story", "--db", str(tmp_path / "agent.db"),
                   cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "PASS" and "FAILED" not in proc.stdout
    assert "resuming thread 'ticket-4711' at ['draft']" in proc.stdout


async def test_concurrent_async_writes_and_a_cancelled_put(store: Store) -> None:
    """Writes of parallel tasks arrive together; a cancelled aput either committed
    whole or not at all (the transaction runs to its end on the store's thread)."""
    config: RunnableConfig = {"configurable": {"thread_id": "par"}}
    async with PitstopSaver(store) as saver:
        graph = chat_graph(2).compile(checkpointer=saver)
        await graph.ainvoke({"messages": [], "step": 0}, config)
        latest = await saver.aget_tuple(config)
        assert latest is not None
        await asyncio.gather(*(saver.aput_writes(latest.config, [("ch", i), ("ch2", -i)],
                                                 f"task-{i:02d}") for i in range(20)))  # fmt: skip
        again = await saver.aget_tuple(config)
        assert again is not None and again.pending_writes is not None
        assert [w[0] for w in again.pending_writes][::2] == [f"task-{i:02d}" for i in range(20)]
        checkpoint = dict(latest.checkpoint, id="zz-cancelled")
        task = asyncio.ensure_future(saver.aput(latest.config, checkpoint,  # type: ignore[arg-type]
                                                latest.metadata, {}))  # fmt: skip
        await asyncio.sleep(0)
        task.cancel()  # MemoryStore runs inline: the put may be done already
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # a put already on the store's thread finishes there
        cancelled: RunnableConfig = {
            "configurable": {"thread_id": "par", "checkpoint_id": "zz-cancelled"}
        }
        found = await saver.aget_tuple(cancelled)
        assert (
            found is None
            or found.checkpoint["channel_values"] == latest.checkpoint["channel_values"]
        )
        assert len([t async for t in saver.alist(config)]) in (4, 5)

"""Resume safety across changes: a completed node whose fingerprint changed runs
again, with everything downstream of it; the rest is skipped. Every backend,
both twins, and what ``pitstop show`` says about it."""

from __future__ import annotations

from pathlib import Path

import pytest
from twins import MakeTwin

from pitstop import NodeState, NodeStatus, Store, SyncCheckpointManager
from pitstop._cli import main

# a -> b -> c, and d on its own
GRAPH = {"a": [], "b": ["a"], "c": ["b"], "d": []}
V1 = {"a": "code-a-1", "b": "code-b-1", "c": "code-c-1", "d": "code-d-1"}


async def run_all(m: object, fingerprints: dict[str, str]) -> None:
    await m.on_run_start(graph=GRAPH, fingerprints=fingerprints)  # type: ignore[attr-defined]
    for node in GRAPH:
        await m.on_node_start(node_id=node)  # type: ignore[attr-defined]
        await m.on_node_finish(node_id=node, output=f"{node}@{fingerprints[node]}")  # type: ignore[attr-defined]
    await m.save_checkpoint()  # type: ignore[attr-defined]


async def test_changed_node_and_its_downstream_run_again(store: Store, twin: MakeTwin) -> None:
    await run_all(twin("r", store=store), V1)
    v2 = {**V1, "b": "code-b-2"}
    m = twin("r", store=store)
    cp = await m.restore_checkpoint(fingerprints=v2)
    assert set(cp.completed) == {"a", "d"}
    assert set(cp.pending) == {"b", "c"} and set(cp.to_run) == {"b", "c"}
    assert cp.stale == {
        "b": "fingerprint changed (was 'code-b-1', now 'code-b-2')",
        "c": "upstream node 'b' is stale",
    }
    assert cp.nodes["c"].error == "stale: upstream node 'b' is stale"
    assert cp.nodes["a"].fingerprint == "code-a-1"
    # The runner runs what is pending; the new outputs carry the new fingerprints.
    await m.on_run_start(graph=GRAPH)
    for node in ("b", "c"):
        await m.on_node_start(node_id=node)
        await m.on_node_finish(node_id=node, output=f"{node}@{v2[node]}")
    await m.save_checkpoint()
    again = await twin("r", store=store).restore_checkpoint(fingerprints=v2)
    assert again.stale == {} and set(again.completed) == set(GRAPH)
    assert again.completed["b"] == "b@code-b-2" and again.nodes["b"].fingerprint == "code-b-2"


async def test_stale_nodes_are_saved_as_such(store: Store, twin: MakeTwin) -> None:
    await run_all(twin("r", store=store), V1)
    m = twin("r", store=store)
    await m.restore_checkpoint(fingerprints={**V1, "a": "code-a-2"})
    await m.save_checkpoint()  # before anything ran again: a, b, c are pending
    cp = await twin("r", store=store).load_checkpoint()
    assert set(cp.completed) == {"d"} and set(cp.pending) == {"a", "b", "c"}
    assert cp.nodes["a"].error is not None and cp.nodes["a"].error.startswith("stale: ")


async def test_changed_run_inputs_rerun_everything(store: Store, twin: MakeTwin) -> None:
    """An adapter folds the run's inputs into every fingerprint: new inputs, no reuse."""
    await run_all(twin("r", store=store), {k: f"{v}|inputs=2026-11-24" for k, v in V1.items()})
    cp = await twin("r", store=store).restore_checkpoint(
        fingerprints={k: f"{v}|inputs=2026-11-25" for k, v in V1.items()}
    )
    assert cp.completed == {} and set(cp.stale) == set(GRAPH)


async def test_unknown_fingerprints_judge_nothing_they_do_not_name(
    store: Store, twin: MakeTwin
) -> None:
    await run_all(twin("r", store=store), V1)
    cp = await twin("r", store=store).restore_checkpoint(fingerprints={"d": "code-d-1"})
    assert cp.stale == {} and set(cp.completed) == set(GRAPH)
    cp = await twin("r", store=store).restore_checkpoint()
    assert cp.stale == {} and set(cp.completed) == set(GRAPH)


async def test_a_node_saved_without_a_fingerprint_counts_as_changed(
    store: Store, twin: MakeTwin
) -> None:
    m = twin("r", store=store)
    await m.on_node_start(node_id="a")
    await m.on_node_finish(node_id="a", output=1)  # no fingerprint known
    await m.save_checkpoint()
    cp = await twin("r", store=store).restore_checkpoint(fingerprints={"a": "code-a-1"})
    assert cp.stale == {"a": "fingerprint changed (was none, now 'code-a-1')"}


async def test_per_node_fingerprint_and_explicit_states(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    await m.on_run_start(graph={"t": []}, fingerprints={"t": "from-run-start"})
    await m.on_node_start(node_id="t")
    await m.on_node_finish(node_id="t", output=1, fingerprint="task-token-9")
    await m.save_checkpoint(nodes=[NodeState("x", NodeStatus.COMPLETED, 2, fingerprint="fx")])
    cp = await twin("r", store=store).load_checkpoint()
    assert cp.nodes["t"].fingerprint == "task-token-9" and cp.nodes["x"].fingerprint == "fx"
    with pytest.raises(TypeError):
        await m.on_node_finish(node_id="t", output=1, fingerprint=3)
    with pytest.raises(TypeError):
        await m.on_run_start(fingerprints={"t": 3})


def test_pitstop_show_names_stale_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "fp.db"
    with SyncCheckpointManager("r", store=db, enabled=True) as m:
        m.on_run_start(graph=GRAPH, fingerprints=V1)
        for node in GRAPH:
            m.on_node_start(node_id=node)
            m.on_node_finish(node_id=node, output=node)
        m.save_checkpoint()
    with SyncCheckpointManager("r", store=db, enabled=True) as m:
        m.restore_checkpoint(fingerprints={**V1, "b": "code-b-2"})
        m.save_checkpoint(label="resumed with b changed")
    assert main(["--store", str(db), "show", "r"]) == 0
    out = capsys.readouterr().out
    assert "stale (will run again):" in out
    assert "  b: fingerprint changed (was 'code-b-1', now 'code-b-2')" in out
    assert "  c: upstream node 'b' is stale" in out
    assert main(["--store", str(db), "--json", "show", "r"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert set(data["stale"]) == {"b", "c"} and data["pending"] == ["b", "c"]


async def test_nodes_found_at_run_time_declare_their_deps(store: Store, twin: MakeTwin) -> None:
    m = twin("r", store=store)
    fps = {"s1": "f1", "s2": "f2", "s3": "f3"}
    await m.on_run_start(fingerprints=fps)
    for node, deps in (("s1", None), ("s2", ["s1"]), ("s3", ["s2"])):
        await m.on_node_start(node_id=node, deps=deps)
        await m.on_node_finish(node_id=node, output=node)
    await m.save_checkpoint()
    cp = await twin("r", store=store).restore_checkpoint(fingerprints={**fps, "s2": "f2b"})
    assert cp.graph == {"s1": (), "s2": ("s1",), "s3": ("s2",)}
    assert cp.stale == {
        "s2": "fingerprint changed (was 'f2', now 'f2b')", "s3": "upstream node 's2' is stale"
    }  # fmt: skip
    with pytest.raises(TypeError):
        await m.on_node_start(node_id="s4", deps="s3")

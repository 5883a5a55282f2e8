"""The sans-I/O core on its own: bookkeeping, policy decisions and save plans,
with no store, no thread and no event loop."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import xxhash

from pitstop import CheckpointPolicy, GraphMismatch, JsonSerializer, SerializationError
from pitstop._codec import manifest_hex, manifest_term
from pitstop._core import RunCore
from pitstop._records import CheckpointRecord
from pitstop._types import CheckpointInfo
from pitstop.codecs import Envelope


def core(**policy: object) -> RunCore:
    return RunCore("r", JsonSerializer(), CheckpointPolicy(**policy), {"m": 1}, Envelope())  # type: ignore[arg-type]


def test_plan_finalize_commit_and_delta() -> None:
    c = core(every_n_nodes=2)
    c.run_started({"a": [], "b": ["a"]})
    c.node_started("a")
    assert c.node_finished("a", [1]) is None
    c.node_started("b")
    assert c.node_finished("b", {"x": 2}) == "every_n_nodes"
    plan = c.plan("every_n_nodes", None, "b", None)
    assert plan.snapshot and plan.parent_seq is None and plan.expected_hwm is None
    record, rows = plan.finalize(1)
    assert rows == [] and record.snapshot is not None  # every row in one blob
    assert record.schema_version == 4  # format 4: xxh3-128 digests
    assert record.manifest == xxhash.xxh3_128_hexdigest(record.snapshot)
    assert (record.nodes_written, record.node_count, record.root_seq) == (2, 2, 1)
    c.commit(plan, 1)
    assert c.dirty == set() and c.hwm == 1
    c.node_started("a")
    c.node_started("z")
    delta = c.plan("manual", None, None, None)
    assert not delta.snapshot and delta.parent_seq == 1 and delta.expected_hwm == 1
    record2, rows2 = delta.finalize(2)
    assert [r.node_id for r in rows2] == ["a", "z"] and all(r.seq == 2 for r in rows2)
    assert record2.snapshot is None and record2.root_seq == 1
    assert (record2.nodes_written, record2.node_count) == (2, 3)
    assert record2.manifest == manifest_hex(sum(manifest_term(r.checksum) for r in rows2))


def test_a_delta_counts_the_base_view_and_its_new_nodes() -> None:
    # node_count is every row held when the plan is made: the base's nodes and the
    # new ones it writes, not a node that arrives while it is being written.
    c = core()
    c.node_finished("a", 1)
    c.node_finished("b", 2)
    first = c.plan("manual", None, None, None)
    first.finalize(1)
    c.commit(first, 1)
    c.node_finished("a", 3)  # in the base
    c.node_started("c")  # new
    delta = c.plan("manual", None, None, None)
    c.node_started("d")  # arrives meanwhile: the next checkpoint's
    record, rows = delta.finalize(2)
    assert not delta.snapshot and [r.node_id for r in rows] == ["a", "c"]
    assert (record.nodes_written, record.node_count) == (2, 3)
    c.commit(delta, 2)
    nxt = c.plan("manual", None, None, None)
    record3, rows3 = nxt.finalize(3)
    assert not nxt.snapshot and [r.node_id for r in rows3] == ["d"]
    assert (record3.nodes_written, record3.node_count) == (1, 4)


def test_abort_puts_changes_back() -> None:
    c = core()
    c.node_finished("a", 1)
    plan = c.plan("manual", None, None, None)
    assert c.dirty == set()
    c.abort(plan)
    assert c.dirty == {"a"}


def test_snapshot_every() -> None:
    c = core(snapshot_every=2)
    kinds = []
    for seq in range(1, 6):
        c.node_finished(f"n{seq}", seq)
        plan = c.plan("manual", None, None, None)
        plan.finalize(seq)
        c.commit(plan, seq)
        kinds.append(plan.snapshot)
    assert kinds == [True, False, True, False, True]


def test_output_encoded_at_finish_and_errors_name_the_node() -> None:
    c = core()
    value = {"rows": [1]}
    c.node_finished("a", value)
    value["rows"].append(2)
    assert c.rows["a"].output == b'{"rows":[1]}'
    with pytest.raises(SerializationError) as err:
        c.node_finished("b", (1, 2))
    assert err.value.node_id == "b" and "b" not in c.rows


def test_graph_mismatch_after_adopt_only() -> None:
    c = core()
    c.run_started({"a": []})
    c.run_started({"a": [], "b": []})  # no restore: the graph may grow
    c.restored_seq = 1
    with pytest.raises(GraphMismatch):
        c.run_started({"a": ["b"], "b": []})


def test_hooks_from_threads_lose_nothing() -> None:
    c = core()

    def work(w: int) -> None:
        for i in range(200):
            c.node_started(f"{w}-{i}")
            c.node_finished(f"{w}-{i}", i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    plans = []
    for _ in range(20):
        plans.append(c.plan("manual", None, None, None))
    for t in threads:
        t.join()
    plans.append(c.plan("manual", None, None, None))
    written = set()
    for p in plans:
        written |= p.changed
    assert len(written) == 800 and len(c.rows) == 800


def test_bad_metadata_and_ids_refused_at_construction() -> None:
    with pytest.raises(SerializationError):
        RunCore("r", JsonSerializer(), CheckpointPolicy(), {"t": (1, 2)}, Envelope())
    with pytest.raises(SerializationError):
        RunCore("r", JsonSerializer(), CheckpointPolicy(), {1: "x"}, Envelope())  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        RunCore("a\x00", JsonSerializer(), CheckpointPolicy(), {}, Envelope())
    c = core()
    with pytest.raises(ValueError):
        c.node_started("")


def test_snapshot_when_deltas_grow_past_a_quarter_of_the_nodes() -> None:
    c = core()
    for i in range(1000):
        c.node_finished(f"n{i}", i)
    kinds = []
    for seq in range(1, 6):
        for i in range(100):  # each save changes 100 of 1,000 nodes
            c.node_started(f"n{(seq * 100 + i) % 1000}")
        plan = c.plan("manual", None, None, None)
        plan.finalize(seq)
        c.commit(plan, seq)
        kinds.append(plan.snapshot)
    # 100 and 200 delta rows are fine; 300 would pass 250 (a quarter): snapshot.
    assert kinds == [True, False, False, True, False]


def test_node_map_holds_outputs_by_id_or_as_values_in_node_order() -> None:
    from pitstop._records import NodeRow
    from pitstop._types import NodeMap

    fields = {n: NodeRow(n, "completed", 1, None, None, 1.0, (), "json", b"0") for n in "ba"}
    by_values = NodeMap(fields, values=[1, 2])
    assert by_values.completed() == {"b": 1, "a": 2}
    assert list(by_values.completed()) == ["b", "a"]  # fields' order
    assert by_values.completed() is not by_values.completed()  # a new dict each time
    assert by_values.outputs == {"b": 1, "a": 2} and by_values["a"].output == 2
    by_id = NodeMap(fields, {"a": 2, "b": 1})
    assert by_id.completed() == {"b": 1, "a": 2} and by_id["b"].output == 1
    with pytest.raises(TypeError, match="not both or neither"):
        NodeMap(fields)
    with pytest.raises(TypeError, match="not both or neither"):
        NodeMap(fields, {}, values=[1, 2])
    with pytest.raises(ValueError, match="1 values for 2 nodes"):
        NodeMap(fields, values=[1])


def test_a_records_info_carries_each_field_under_its_own_name() -> None:
    # info() builds CheckpointInfo by position (a save's hot path): every field differs
    # here, so a reordered field lands under another name and fails.
    record = CheckpointRecord("r", 7, 6, 5, 1.5, "t", "l", "n", 4, "typed", b"{}", None, 9, 2, 3,
                              "m", "c", "p")  # fmt: skip
    info = record.info({"k": 1})
    for f in dataclasses.fields(CheckpointInfo):
        expected = {"k": 1} if f.name == "metadata" else getattr(record, f.name)
        assert getattr(info, f.name) == expected, f.name

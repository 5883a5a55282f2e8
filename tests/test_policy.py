"""Policy validation, DAG levels and the counters behind automatic saves."""

import math
import time

import pytest

from pitstop import CheckpointPolicy
from pitstop._policy import PolicyClock, dag_levels


def test_dag_levels() -> None:
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    assert dag_levels(graph) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 0}


def test_dag_levels_deep_chain_has_no_recursion_limit() -> None:
    graph = {f"n{i}": ([f"n{i - 1}"] if i else []) for i in range(5000)}
    assert dag_levels(graph)["n4999"] == 4999


@pytest.mark.parametrize(
    ("graph", "message"),
    [({"a": ["b"], "b": ["a"]}, "cycle"), ({"a": ["a"]}, "cycle"), ({"a": ["zz"]}, "unknown")],
)
def test_dag_levels_rejects_bad_graphs(graph: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dag_levels(graph)


def test_policy_defaults() -> None:
    p = CheckpointPolicy()
    assert (p.every_n_nodes, p.every_seconds, p.keep_last) == (None, None, None)
    assert p.snapshot_every == 50
    assert p.delete_on_success is False  # success keeps checkpoints unless asked
    assert (p.after_each_level, p.on_pause, p.on_failure) == (False, True, True)
    assert p.before_nodes == frozenset()
    assert p.on_error == "raise"


def test_preserve_is_gone() -> None:
    assert not hasattr(CheckpointPolicy(), "preserve")
    with pytest.raises(TypeError, match="preserve"):
        CheckpointPolicy(preserve=True)  # type: ignore[call-arg]


def test_policy_accepts_valid_values() -> None:
    p = CheckpointPolicy(
        every_n_nodes=1,
        every_seconds=1,
        keep_last=3,
        snapshot_every=1,
        delete_on_success=True,
        after_each_level=True,
        on_pause=False,
        on_failure=False,
        before_nodes=("a", "b", "a"),  # type: ignore[arg-type]
        on_error="log",
    )
    assert (p.every_n_nodes, p.every_seconds, p.keep_last, p.snapshot_every) == (1, 1, 3, 1)
    assert p.delete_on_success is True
    assert p.before_nodes == frozenset({"a", "b"})
    assert CheckpointPolicy(every_seconds=0.25).every_seconds == 0.25
    assert CheckpointPolicy(every_seconds=10**400).every_seconds == 10**400  # no overflow


@pytest.mark.parametrize("nodes", [["a"], {"a"}, ("a",), {"a": 1}.keys(), frozenset({"a"})])
def test_before_nodes_becomes_a_frozenset(nodes: object) -> None:
    assert CheckpointPolicy(before_nodes=nodes).before_nodes == frozenset({"a"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_nodes": True}, "every_n_nodes must be an int or None, got bool True"),
        ({"every_n_nodes": 2.5}, "every_n_nodes must be an int or None, got float 2.5"),
        ({"every_n_nodes": 2.0}, "every_n_nodes must be an int or None, got float 2.0"),
        ({"every_n_nodes": "3"}, "every_n_nodes must be an int or None, got str '3'"),
        ({"keep_last": False}, "keep_last must be an int or None, got bool False"),
        ({"keep_last": 1.5}, "keep_last must be an int or None, got float 1.5"),
        ({"snapshot_every": True}, "snapshot_every must be an int, got bool True"),
        ({"snapshot_every": 2.5}, "snapshot_every must be an int, got float 2.5"),
        ({"snapshot_every": None}, "snapshot_every must be an int, got NoneType None"),
        ({"snapshot_small": True}, "snapshot_small must be an int, got bool True"),
        ({"snapshot_small": 4.0}, "snapshot_small must be an int, got float 4.0"),
        ({"every_seconds": True}, "every_seconds must be a number or None, got bool True"),
        ({"every_seconds": "1"}, "every_seconds must be a number or None, got str '1'"),
        ({"after_each_level": 1}, "after_each_level must be a bool, got int 1"),
        ({"on_pause": None}, "on_pause must be a bool, got NoneType None"),
        ({"on_failure": "no"}, "on_failure must be a bool, got str 'no'"),
        ({"delete_on_success": 1}, "delete_on_success must be a bool, got int 1"),
        ({"before_nodes": "abc"}, "before_nodes must be a collection of node ids (str), got str"),
        ({"before_nodes": b"ab"}, "before_nodes must be a collection of node ids (str), got bytes"),
        ({"before_nodes": 5}, "before_nodes must be a collection of node ids (str), got int"),
        ({"before_nodes": ["a", 1]}, "before_nodes must hold str node ids, got int 1"),
        ({"before_nodes": [None]}, "before_nodes must hold str node ids, got NoneType None"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_policy_rejects_wrong_types(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError) as err:
        CheckpointPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


@pytest.mark.small_snapshots
def test_snapshot_small_default_and_bounds() -> None:
    assert CheckpointPolicy().snapshot_small == 4096
    assert CheckpointPolicy(snapshot_small=0).snapshot_small == 0
    with pytest.raises(ValueError, match="snapshot_small must be >= 0"):
        CheckpointPolicy(snapshot_small=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_nodes": 0}, "every_n_nodes must be >= 1, got 0"),
        ({"every_n_nodes": -1}, "every_n_nodes must be >= 1, got -1"),
        ({"keep_last": 0}, "keep_last must be >= 1, got 0"),
        ({"snapshot_every": 0}, "snapshot_every must be >= 1, got 0"),
        ({"snapshot_every": -5}, "snapshot_every must be >= 1, got -5"),
        ({"every_seconds": 0}, "every_seconds must be finite and > 0, got 0"),
        ({"every_seconds": -0.5}, "every_seconds must be finite and > 0, got -0.5"),
        ({"every_seconds": math.nan}, "every_seconds must be finite and > 0, got nan"),
        ({"every_seconds": math.inf}, "every_seconds must be finite and > 0, got inf"),
        ({"every_seconds": -math.inf}, "every_seconds must be finite and > 0, got -inf"),
        ({"on_error": "ignore"}, "on_error must be 'raise' or 'log', got 'ignore'"),
        ({"on_error": None}, "on_error must be 'raise' or 'log', got None"),
        ({"before_nodes": ["a", ""]}, "before_nodes holds an empty node id"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        CheckpointPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_clock_every_n() -> None:
    clock = PolicyClock(CheckpointPolicy(every_n_nodes=2))
    clock.start({}, [])
    assert [clock.finished(n) for n in "abc"] == [None, "every_n_nodes", "every_n_nodes"]
    clock.saved()
    assert clock.finished("d") is None


def test_clock_levels_count_restored_completed_nodes() -> None:
    clock = PolicyClock(CheckpointPolicy(after_each_level=True))
    clock.start({"a": 0, "b": 0, "c": 1}, completed=["a"])
    assert clock.finished("b") == "level:0"
    assert clock.finished("c") == "level:1"


def test_clock_every_seconds() -> None:
    clock = PolicyClock(CheckpointPolicy(every_seconds=0.01))
    clock.start({}, [])
    assert clock.finished("a") is None
    time.sleep(0.02)
    assert clock.finished("b") == "every_seconds"


def test_after_each_level_without_a_graph_raises_instead_of_never_saving() -> None:
    from pitstop import MemoryStore, SyncCheckpointManager

    with (
        MemoryStore() as store,
        SyncCheckpointManager(
            "r", store=store, enabled=True, policy=CheckpointPolicy(after_each_level=True)
        ) as m,
    ):
        with pytest.raises(ValueError, match=r"needs on_run_start\(graph=\.\.\.\)"):
            m.on_run_start()
        m.on_run_start(graph={"a": []})  # with the graph it works
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        assert [i.trigger for i in m.list_checkpoints()] == ["level:0"]

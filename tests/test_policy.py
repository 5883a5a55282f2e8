"""Policy validation, DAG levels and the counters behind automatic saves."""

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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every_n_nodes": 0},
        {"every_seconds": 0},
        {"keep_last": 0},
        {"on_error": "ignore"},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CheckpointPolicy(**kwargs)  # type: ignore[arg-type]


def test_before_nodes_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        CheckpointPolicy(before_nodes="abc")  # type: ignore[arg-type]
    assert CheckpointPolicy(before_nodes=["a"]).before_nodes == frozenset({"a"})  # type: ignore[arg-type]


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

"""pitstop.adapters.hamilton on real Hamilton drivers and real SQLite files.

The Hamilton functions live in small modules written to ``tmp_path`` and
imported from there (real files, so their source can be hashed; a second
version of a module is a code change). Each module records the nodes Hamilton
executed in its ``CALLS`` list and raises in the nodes named in ``FAIL``.
The example's crash-and-resume story runs as real processes.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hamilton import driver
from stories import example

from pitstop import (
    CheckpointPolicy,
    GraphMismatch,
    NodeStatus,
    RunStatus,
    SerializationError,
    SyncCheckpointManager,
)
from pitstop.adapters.hamilton import (
    NotInstalled,
    NotPrepared,
    PitstopHamilton,
    UnfingerprintableInput,
    UnsupportedExecution,
)

RUN = "hamilton-test"
EVERY = CheckpointPolicy(every_n_nodes=1)

# load(seed) -> features -> scored(features, weights(scale)) -> summary(scored, audit(load))
FLOW = '''
import numpy as np
import pandas as pd

CALLS: list[str] = []
FAIL: dict[str, BaseException] = {}


def _ran(name):
    CALLS.append(name)
    if name in FAIL:
        raise FAIL[name]


def load(seed: int) -> pd.DataFrame:
    """Rows of a table."""
    _ran("load")
    rng = np.random.default_rng(seed)
    kinds = pd.Categorical(rng.choice(list("ab"), 200))
    return pd.DataFrame({"x": rng.normal(size=200), "k": kinds})


def weights(scale: float) -> np.ndarray:
    _ran("weights")
    return np.arange(3, dtype=np.float64) * scale


def features(load: pd.DataFrame) -> pd.DataFrame:
    _ran("features")
    return pd.DataFrame({"one": 1.0, "x": load["x"], "x2": load["x"] ** 2})


def scored(features: pd.DataFrame, weights: np.ndarray) -> pd.Series:
    _ran("scored")
    return pd.Series(features.to_numpy() @ weights, name="score").round(6)


def audit(load: pd.DataFrame, threshold: float = -9.0) -> int:
    _ran("audit")
    return int(((load["k"] == "a") & (load["x"] > threshold)).sum())


def summary(scored: pd.Series, audit: int) -> dict:
    _ran("summary")
    return {"total": round(float(scored.sum()), 6), "a_rows": audit}
'''
GRAPH = {
    "load": (),
    "weights": (),
    "features": ("load",),
    "scored": ("features", "weights"),
    "audit": ("load",),
    "summary": ("audit", "scored"),
}
INPUTS: dict[str, Any] = {"seed": 7, "scale": 0.5}
FINAL = ["summary"]


def load_flow(tmp_path: Path, source: str = FLOW, version: str = "v1") -> ModuleType:
    """Write ``source`` as a module file under ``tmp_path/version`` and import it."""
    folder = tmp_path / version
    folder.mkdir(exist_ok=True)
    path = folder / "flow.py"
    path.write_text(source)
    name = f"hamilton_flow_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Hamilton finds a module's functions through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _forget_flows() -> Iterator[None]:
    """Unregisters the modules a test imported."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("hamilton_flow_"):
            del sys.modules[name]


def calls(flow: ModuleType) -> list[str]:
    out: list[str] = flow.CALLS
    return out


def build(flow: ModuleType, ckpt: PitstopHamilton | None = None, dynamic: bool = False) -> Any:
    b = driver.Builder().with_modules(flow)
    if dynamic:
        b = b.enable_dynamic_execution(allow_experimental_mode=True)
    return b.with_adapters(*([] if ckpt is None else ckpt.adapters())).build()


def manager(
    db: Path, policy: CheckpointPolicy = EVERY, enabled: bool = True
) -> SyncCheckpointManager:
    return SyncCheckpointManager(RUN, store=db, enabled=enabled, policy=policy)


def run(
    flow: ModuleType,
    db: Path,
    inputs: dict[str, Any] = INPUTS,
    *,
    policy: CheckpointPolicy = EVERY,
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, PitstopHamilton]:
    """One ``ckpt.execute`` with a new manager (as a new process would), closed after."""
    with manager(db, policy) as mgr:
        ckpt = PitstopHamilton(mgr)
        return ckpt.execute(build(flow, ckpt), FINAL, inputs=inputs, overrides=overrides), ckpt


def fail_summary_once(flow: ModuleType, db: Path, inputs: dict[str, Any] = INPUTS) -> None:
    """A first run whose last node fails: every other node is completed and saved."""
    flow.FAIL["summary"] = RuntimeError("summary failed")
    with pytest.raises(RuntimeError, match="summary failed"):
        run(flow, db, inputs)
    flow.FAIL.clear()
    flow.CALLS.clear()


def clean_result(tmp_path: Path, inputs: dict[str, Any] = INPUTS, source: str = FLOW) -> Any:
    """The same request on a plain driver: no adapter at all."""
    flow = load_flow(tmp_path, source, version=f"clean-{uuid.uuid4().hex[:6]}")
    return build(flow).execute(FINAL, inputs=inputs)


# --- the example: a real crash, a real resume ------------------------------------------


def test_example_story_crashes_resumes_and_matches_a_clean_run(tmp_path: Path) -> None:
    story = example("hamilton_pipeline.py", "--story", cwd=tmp_path)
    assert story.returncode == 0, story.stdout + story.stderr
    lines = story.stdout.splitlines()
    assert lines[-1] == "PASS" and "FAILED" not in story.stdout
    assert "  -> exit code 3" in lines
    assert "    enriched_orders: CRASH (simulated power cut: os._exit(3))" in lines
    for stage in ("raw_orders", "customers"):
        assert f"    {stage}: skipped (restored DataFrame from checkpoint seq 2)" in lines
    assert "  [ok] resume skipped raw_orders and customers (Hamilton did not execute them)" in lines
    digests = {line.split()[-1] for line in lines if "report sha256: " in line}
    assert len(digests) == 1  # the resumed and the clean run agree
    assert [p.name for p in tmp_path.iterdir()] == ["pitstop-hamilton-demo.db"]


# --- resume through overrides ----------------------------------------------------------


def test_a_failed_node_propagates_unchanged_and_the_run_is_marked_failed(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    boom = RuntimeError("summary failed")
    flow.FAIL["summary"] = boom
    with pytest.raises(RuntimeError) as caught:
        run(flow, db)
    assert caught.value is boom  # the node's own exception object, no note added
    assert getattr(boom, "__notes__", []) == []
    with manager(db) as mgr:
        info = mgr.run_info()
        cp = mgr.load_checkpoint()
    assert info is not None and info.status is RunStatus.FAILED
    assert info.error == "RuntimeError: summary failed"
    assert cp.info.trigger == "run_failed"
    assert cp.nodes["summary"].status is NodeStatus.FAILED
    assert cp.nodes["summary"].error == "RuntimeError: summary failed"
    assert set(cp.completed) == set(GRAPH) - {"summary"}


def test_resume_feeds_restored_outputs_as_overrides_so_finished_nodes_never_run(
    tmp_path: Path,
) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    fail_summary_once(flow, db)
    result, ckpt = run(flow, db)
    assert calls(flow) == ["summary"]  # Hamilton executed nothing else
    assert set(ckpt.skipped) == set(GRAPH) - {"summary"}
    assert ckpt.resumed is not None and ckpt.resumed.info.trigger == "run_failed"
    assert result == clean_result(tmp_path)
    with manager(db) as mgr:
        info = mgr.run_info()
        cp = mgr.load_checkpoint()
    assert info is not None and info.status is RunStatus.SUCCEEDED and info.attempt == 2
    assert cp.graph == GRAPH  # the whole graph, not the part Hamilton still had to run
    assert cp.attempts == dict.fromkeys(GRAPH, 1) | {"summary": 2}
    # DataFrames and arrays were saved with the typed codec (no pickle) and come back exact.
    assert cp.info.serializer == "typed"
    reference = load_flow(tmp_path, version="reference").load(7)
    pd.testing.assert_frame_equal(cp.completed["load"], reference, check_exact=True)
    np.testing.assert_array_equal(cp.completed["weights"], np.arange(3.0) * 0.5)
    assert cp.completed["weights"].dtype == np.float64

    again, ckpt = run(flow, db)  # the run succeeded: the next execute starts fresh
    assert ckpt.resumed is None and again == result
    assert calls(flow)[0] == "summary" and sorted(calls(flow)[1:]) == sorted(GRAPH)


def test_a_code_change_reruns_the_changed_node_and_its_downstream_only(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    fail_summary_once(load_flow(tmp_path), db)
    v2 = FLOW.replace('"x2": load["x"] ** 2', '"x2": load["x"] ** 3')  # features changes
    v2 = v2.replace('"""Rows of a table."""', '"""Rows of a table (a docstring edit)."""')
    v2 = v2.replace('_ran("audit")', '_ran("audit")  # a comment: not a code change')
    flow2 = load_flow(tmp_path, v2, version="v2")
    result, ckpt = run(flow2, db)
    assert sorted(calls(flow2)) == ["features", "scored", "summary"]
    assert sorted(ckpt.skipped) == ["audit", "load", "weights"]
    assert ckpt.resumed is not None
    assert set(ckpt.resumed.stale) == {"features", "scored"}  # summary was not completed
    assert ckpt.resumed.stale["features"].startswith("fingerprint changed")
    assert result == clean_result(tmp_path, source=v2)
    assert result != clean_result(tmp_path)


def test_a_changed_input_reruns_the_nodes_that_read_it_and_their_downstream(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    fail_summary_once(flow, db)
    changed = {**INPUTS, "scale": 2.0}  # read by weights only
    result, ckpt = run(flow, db, changed)
    assert sorted(calls(flow)) == ["scored", "summary", "weights"]
    assert sorted(ckpt.skipped) == ["audit", "features", "load"]
    assert result == clean_result(tmp_path, changed)
    with manager(db) as mgr:  # plan() does no I/O
        plan_a = PitstopHamilton(mgr).plan(build(flow), FINAL, inputs=INPUTS)
        plan_b = PitstopHamilton(mgr).plan(build(flow), FINAL, inputs=changed)
    differ = {n for n in GRAPH if plan_a.fingerprints[n] != plan_b.fingerprints[n]}
    assert differ == {"weights"}  # the manager makes its downstream stale
    reads = {"load": ("seed",), "weights": ("scale",), "audit": ("threshold",)}  # optional
    assert plan_a.reads == {**dict.fromkeys(GRAPH, ()), **reads}


def test_user_overrides_are_run_inputs_not_nodes(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    given = build(flow).execute(["features"], inputs=INPUTS)["features"]
    flow.FAIL["summary"] = RuntimeError("summary failed")
    with pytest.raises(RuntimeError):
        run(flow, db, overrides={"features": given})
    with manager(db) as mgr:
        cp = mgr.load_checkpoint()
    assert "features" not in cp.graph and cp.graph["scored"] == ("weights",)
    flow.FAIL.clear()
    flow.CALLS.clear()
    result, ckpt = run(flow, db, overrides={"features": given * 2})  # another value
    assert sorted(calls(flow)) == ["scored", "summary"]  # scored reads it: stale
    assert sorted(ckpt.skipped) == ["audit", "load", "weights"]
    assert result == build(flow).execute(FINAL, inputs=INPUTS, overrides={"features": given * 2})


DECORATED = """
import pandas as pd
from hamilton.function_modifiers import config, extract_columns, parameterize, tag, value


@extract_columns("a", "b")
def frame(seed: int) -> pd.DataFrame:
    return pd.DataFrame({"a": [seed, 2], "b": [3, 4]})


@parameterize(a_plus_one=dict(n=value(1)), a_plus_two=dict(n=value(2)))
def shifted(a: pd.Series, n: int) -> pd.Series:
    return a + n


@config.when(mode="sum")
def total__sum(a_plus_one: pd.Series, a_plus_two: pd.Series, b: pd.Series) -> int:
    return int(a_plus_one.sum() + a_plus_two.sum() + b.sum())


@tag(owner="analytics")
def final(total: int) -> int:
    return total * 2
"""


def test_nodes_made_by_function_modifiers_are_fingerprinted_by_their_function(
    tmp_path: Path,
) -> None:
    def plan(source: str, version: str) -> Any:
        flow = load_flow(tmp_path, source, version)
        with manager(tmp_path / f"{version}.db") as mgr:
            ckpt = PitstopHamilton(mgr)
            dr = driver.Builder().with_modules(flow).with_config({"mode": "sum"})
            dr = dr.with_adapters(*ckpt.adapters()).build()
            result = ckpt.execute(dr, ["final"], inputs={"seed": 1})
            assert result == {"final": 38 if version != "v2" else 30}
            return ckpt.plan(dr, ["final"], inputs={"seed": 1})

    v1 = plan(DECORATED, "v1")
    assert v1.graph == {
        "frame": (), "a": ("frame",), "b": ("frame",), "a_plus_one": ("a",),
        "a_plus_two": ("a",), "total": ("a_plus_one", "a_plus_two", "b"), "final": ("total",),
    }  # fmt: skip
    v2 = plan(DECORATED.replace("n=value(2)", "n=value(0)").replace("* 2", "* 2  # x"), "v2")
    changed = {n for n in v1.graph if v1.fingerprints[n] != v2.fingerprints[n]}
    assert changed == {"a_plus_one", "a_plus_two"}  # both come from `shifted`
    v3 = plan(DECORATED.replace('owner="analytics"', 'owner="finance"'), "v3")
    assert {n for n in v1.graph if v1.fingerprints[n] != v3.fingerprints[n]} == {"final"}


def test_a_keyboard_interrupt_in_a_node_fails_the_run_and_resume_reruns_it(tmp_path: Path) -> None:
    # Hamilton catches Exception only: a KeyboardInterrupt reaches the hooks as "success"
    # with result None. The adapter records it as what it is.
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    flow.FAIL["scored"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run(flow, db)
    with manager(db) as mgr:
        info = mgr.run_info()
        cp = mgr.load_checkpoint()
    assert info is not None and info.status is RunStatus.FAILED
    assert info.error is not None and info.error.startswith("KeyboardInterrupt")
    assert "scored" not in cp.completed and cp.nodes["scored"].status is NodeStatus.FAILED
    flow.FAIL.clear()
    flow.CALLS.clear()
    result, _ = run(flow, db)
    assert "scored" in calls(flow) and "load" not in calls(flow)
    assert result == clean_result(tmp_path)


def test_after_each_level_saves_once_per_dag_level(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    run(flow, db, policy=CheckpointPolicy(after_each_level=True))
    with manager(db) as mgr:
        triggers = [i.trigger for i in mgr.list_checkpoints()]
    # Hamilton runs depth first, so levels complete out of order (level 2 before level 1).
    assert sorted(triggers) == ["level:0", "level:1", "level:2", "level:3"]


# --- disabled: nothing installed, nothing touched ----------------------------------------


def test_a_disabled_manager_installs_nothing_and_touches_nothing(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "off.db"
    mgr = manager(db, enabled=False)
    ckpt = PitstopHamilton(mgr)
    assert ckpt.adapters() == []
    dr, plain = build(flow, ckpt), build(flow)
    assert [type(a) for a in dr.adapter.adapters] == [type(a) for a in plain.adapter.adapters]
    called: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_globals.get("__name__", "").startswith("pitstop"):
            called.append(f"{frame.f_globals['__name__']}.{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        result = ckpt.execute(dr, FINAL, inputs=INPUTS)
    finally:
        sys.setprofile(None)
    assert called == ["pitstop.adapters.hamilton.execute"]  # and then dr.execute alone
    assert result == plain.execute(FINAL, inputs=INPUTS)
    assert sorted(calls(flow)) == sorted([*GRAPH, *GRAPH])  # both runs executed everything
    assert ckpt.resumed is None and ckpt.skipped == ()
    assert not db.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["v1"]


# --- refusals: typed errors before anything runs -------------------------------------------


def test_drivers_the_adapter_cannot_follow_are_refused_before_anything_runs(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    with manager(db) as mgr:
        ckpt = PitstopHamilton(mgr)
        with pytest.raises(NotInstalled):
            ckpt.execute(build(flow), FINAL, inputs=INPUTS)  # built without ckpt.adapters()
        with pytest.raises(UnsupportedExecution, match="dynamic execution"):
            ckpt.execute(build(flow, ckpt, dynamic=True), FINAL, inputs=INPUTS)
        with pytest.raises(NotPrepared, match=r"call ckpt\.execute"):
            build(flow, ckpt).execute(FINAL, inputs=INPUTS)  # dr.execute cannot resume
        assert calls(flow) == [] and mgr.run_info() is None
        with pytest.raises(TypeError, match="SyncCheckpointManager"):
            PitstopHamilton(object())  # type: ignore[arg-type]


def test_an_input_that_cannot_be_encoded_needs_a_token(tmp_path: Path) -> None:
    source = (
        FLOW
        + """

def locked(audit: int, lock: object) -> int:
    _ran("locked")
    with lock:
        return audit
"""
    )
    flow, db = load_flow(tmp_path, source), tmp_path / "run.db"
    inputs = {**INPUTS, "lock": threading.Lock()}
    with manager(db) as mgr:
        ckpt = PitstopHamilton(mgr)
        with pytest.raises(UnfingerprintableInput, match="input_tokens") as caught:
            ckpt.execute(build(flow, ckpt), ["locked"], inputs=inputs)
        assert caught.value.name == "lock" and calls(flow) == []
        tokened = PitstopHamilton(mgr, input_tokens={"lock": "the-one-lock"})
        result = tokened.execute(build(flow, tokened), ["locked"], inputs=inputs)
        assert result == build(flow).execute(["locked"], inputs=inputs)


def test_an_output_the_codec_cannot_save_fails_the_run_with_a_typed_error(
    tmp_path: Path,
) -> None:
    source = (
        FLOW
        + """

def handle(audit: int) -> object:
    _ran("handle")
    return threading.Lock()
"""
    )
    flow, db = load_flow(tmp_path, "import threading\n" + source), tmp_path / "run.db"
    with manager(db) as mgr:
        ckpt = PitstopHamilton(mgr)
        with pytest.raises(SerializationError) as caught:
            ckpt.execute(build(flow, ckpt), ["handle"], inputs=INPUTS)
        assert caught.value.node_id == "handle"
        info = mgr.run_info()
        cp = mgr.load_checkpoint()
    assert info is not None and info.status is RunStatus.FAILED
    assert info.error is not None and info.error.startswith("SerializationError")
    assert sorted(cp.completed) == ["audit", "load"] and "handle" in cp.to_run


def test_resuming_with_other_final_vars_is_a_graph_mismatch(tmp_path: Path) -> None:
    flow, db = load_flow(tmp_path), tmp_path / "run.db"
    fail_summary_once(flow, db)
    with manager(db) as mgr:
        ckpt = PitstopHamilton(mgr)
        with pytest.raises(GraphMismatch):
            ckpt.execute(build(flow, ckpt), ["features"], inputs=INPUTS)
    assert calls(flow) == []

"""The `pitstop` command against real stores, in-process and as a subprocess.

Stores are written with the real SyncCheckpointManager; the command is a plain
function (no event loop), so these tests are sync except one that proves the
command works inside a running loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pitstop._cli as cli_mod
from pitstop import (
    CheckpointPolicy,
    NodeState,
    NodeStatus,
    PickleSerializer,
    SqlStore,
    SyncCheckpointManager,
)
from pitstop._cli import main
from pitstop._cli_format import iso, when
from pitstop.codecs import AesGcmKeys, Envelope, TypedSerializer
from pitstop.storage._queries import CHECKPOINTS, NODES, RUNS

Result = tuple[int, str, str]
LONG_ERROR = "disk full\n" + "x" * 200


def populate(target: str) -> None:
    """Run 'etl' (seqs 1-3, JSON, then paused) and run 'pickled' (seqs 1-2, pickle)."""
    policy = CheckpointPolicy(on_pause=False)  # pausing records the status, saves nothing
    with SyncCheckpointManager("etl", store=target, enabled=True, policy=policy) as mgr:
        mgr.save_checkpoint(
            label="start",
            nodes=[
                NodeState("extract", NodeStatus.COMPLETED, output={"rows": 3}, attempt=1),
                NodeState("transform", NodeStatus.RUNNING, attempt=1, deps=("extract",)),
                NodeState("load", deps=("transform",)),
            ],
            state={"cursor": 1},
            metadata={"owner": "ana"},
        )
        mgr.save_checkpoint(
            label="transformed",
            node="transform",
            nodes=[
                NodeState(
                    "transform", NodeStatus.COMPLETED, output=[1, 2], attempt=2, deps=("extract",)
                ),
                NodeState("load", NodeStatus.FAILED, attempt=1, error="ValueError: boom"),
                NodeState("report"),
            ],
            state={"cursor": 2},
        )
        mgr.save_checkpoint(
            trigger="pause",
            nodes=[NodeState("load", NodeStatus.COMPLETED, output="done", attempt=2)],
            state={"cursor": 2},
            metadata={"owner": "ana"},
        )
        mgr.on_run_pause(reason="maintenance")
    pickle = PickleSerializer()
    with SyncCheckpointManager("pickled", store=target, enabled=True, serializer=pickle) as mgr:
        mgr.save_checkpoint(
            nodes=[NodeState("a", NodeStatus.COMPLETED, output={1, 2})], state=(1, 2)
        )
        mgr.save_checkpoint(
            nodes=[
                NodeState("a", NodeStatus.COMPLETED, output={1, 2, 3}, attempt=2),
                NodeState("b", NodeStatus.FAILED, attempt=1, error="KeyError: 'x'"),
            ],
            state=(1, 2, 3),
        )


def add_finished_runs(target: str) -> None:
    """Run 'crashed' (failed, with a long two-line error) and run 'done' (succeeded)."""
    with SyncCheckpointManager("crashed", store=target, enabled=True) as mgr:
        mgr.on_run_start(graph={"a": []})
        mgr.on_node_start(node_id="a")
        mgr.on_node_error(node_id="a", error="OSError: no space")
        mgr.on_run_end(success=False, error=RuntimeError(LONG_ERROR))  # saves (policy.on_failure)
    with SyncCheckpointManager("done", store=target, enabled=True) as mgr:
        mgr.on_run_start(graph={"a": []})
        mgr.on_node_start(node_id="a")
        mgr.on_node_finish(node_id="a", output=1)
        mgr.save_checkpoint()
        mgr.on_run_end(success=True)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    populate(str(path))
    return path


def cli(capsys: pytest.CaptureFixture[str], db: Path | str, *argv: str) -> Result:
    code = main(["--store", str(db), *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], db: Path | str, *argv: str) -> Any:
    code, out, err = cli(capsys, db, "--json", *argv)
    assert (code, err) == (0, "")
    return json.loads(out)


def error_line(err: str) -> str:
    """The one error line (a hint line may follow it)."""
    lines = err.splitlines()
    assert lines and lines[0].startswith("pitstop: error: "), err
    assert all(line.startswith("pitstop: hint: ") for line in lines[1:]), err
    assert len(lines) <= 2, err
    return lines[0]


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def corrupt(db: Path, table: str, column: str, where: str) -> None:
    (blob,) = sql(db, f"SELECT {column} FROM {table} WHERE {where}")[0]
    flipped = bytes([blob[0] ^ 0x01]) + blob[1:]
    sql(db, f"UPDATE {table} SET {column} = ? WHERE {where}", (flipped,))


def set_column(db: Path, table: str, column: str, value: object, where: str) -> None:
    sql(db, f"UPDATE {table} SET {column} = ? WHERE {where}", (value,))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the commands ----------------------------------------------------------------


def test_runs_shows_the_run_model(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add_finished_runs(str(db))
    cli_json(capsys, db, "delete", "etl", "--seq", "3")  # latest 2, high-water stays 3
    runs = {r["run_id"]: r for r in cli_json(capsys, db, "runs")}
    assert list(runs) == ["crashed", "done", "etl", "pickled"]
    etl = runs["etl"]
    assert (etl["status"], etl["attempt"], etl["can_resume"]) == ("paused", 1, True)
    assert (etl["checkpoints"], etl["latest_seq"], etl["last_seq"]) == (2, 2, 3)
    assert etl["latest_at"].endswith("+00:00") and etl["size"] > 0 and etl["error"] is None
    assert runs["pickled"]["status"] == "running"
    crashed = runs["crashed"]
    assert (crashed["status"], crashed["checkpoints"], crashed["latest_seq"]) == ("failed", 1, 1)
    assert crashed["error"] == f"RuntimeError: {LONG_ERROR}"  # --json has all of it
    assert crashed["started_at"] <= crashed["ended_at"]
    done = runs["done"]
    assert (done["status"], done["can_resume"], done["checkpoints"]) == ("succeeded", False, 1)
    assert done["graph_fingerprint"] is not None

    code, out, _ = cli(capsys, db, "runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN_ID", "STATUS", "ATTEMPT", "CHECKPOINTS", "LATEST",
                                "LAST_SEQ", "LATEST_AT", "SIZE", "ERROR"]  # fmt: skip
    by_run = {line.split()[0]: line for line in lines[1:]}
    assert by_run["etl"].split()[:6] == ["etl", "paused", "1", "2", "2", "3"]
    assert by_run["done"].split()[:2] == ["done", "succeeded"]
    # The text error is one line, truncated; the table keeps one row per run.
    assert len(lines) == 5
    assert by_run["crashed"].split()[1] == "failed"
    assert by_run["crashed"].endswith(" RuntimeError: disk full " + "x" * 33 + "...")  # 60 chars


def test_deleted_run_keeps_its_row(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert cli_json(capsys, db, "delete", "etl") == {"run_id": "etl", "removed": [1, 2, 3]}
    etl = cli_json(capsys, db, "runs")[0]
    assert (etl["run_id"], etl["checkpoints"], etl["latest_seq"], etl["last_seq"]) == (
        "etl", 0, None, 3
    )  # fmt: skip
    assert etl["latest_at"] is None and etl["can_resume"] is False
    out = cli(capsys, db, "runs")[1]
    assert out.splitlines()[1].split()[:7] == ["etl", "paused", "1", "0", "-", "3", "-"]
    assert cli(capsys, db, "list", "etl")[0] == 1


def test_list(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "list", "etl")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "PARENT", "CREATED", "TRIGGER", "LABEL", "NODE",
                                "WRITTEN", "NODES", "SIZE", "SER"]  # fmt: skip
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert "transformed" in rows[1] and "transform" in rows[1] and "typed" in rows[1]
    infos = cli_json(capsys, db, "list", "etl")
    assert [(i["seq"], i["parent_seq"], i["root_seq"]) for i in infos] == [
        (1, None, 1), (2, 1, 1), (3, 2, 1)
    ]  # fmt: skip
    assert [i["snapshot"] for i in infos] == [True, False, False]
    assert [i["trigger"] for i in infos] == ["manual", "manual", "pause"]
    assert [i["label"] for i in infos] == ["start", "transformed", None]
    assert [i["nodes_written"] for i in infos] == [3, 3, 1]
    assert [i["node_count"] for i in infos] == [3, 4, 4]
    assert infos[0]["metadata"] == {"owner": "ana"} and infos[1]["metadata"] == {}
    assert all(i["serializer"] == "typed" and i["size"] > 0 for i in infos)


def test_show_latest_text(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, err = cli(capsys, db, "show", "etl")
    assert (code, err) == (0, "")
    assert out.startswith("run 'etl' seq 3 (checksums verified)")
    assert "nodes: 4 total, 3 completed, 0 interrupted, 0 failed, 1 pending" in out
    assert "completed      extract, load, transform" in out
    assert "pending        report" in out
    assert "attempts: extract=1 load=2 report=0 transform=2" in out
    assert "errors: -" in out
    assert 'metadata: {"owner": "ana"}' in out
    assert "root_seq       1" in out and "node_count     4" in out
    assert "outputs" not in out and "cursor" not in out


def test_show_seq_json_with_outputs(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    data = cli_json(capsys, db, "show", "etl", "--seq", "2", "--outputs")
    assert data["verified"] is True
    assert data["info"]["seq"] == 2 and data["info"]["label"] == "transformed"
    assert data["counts"] == {
        "total": 4, "completed": 2, "interrupted": 0, "failed": 1, "pending": 1
    }  # fmt: skip
    assert data["completed"] == ["extract", "transform"]
    assert data["failed"] == ["load"] and data["pending"] == ["report"]
    assert data["errors"] == {"load": "ValueError: boom"}
    assert data["attempts"] == {"extract": 1, "load": 1, "report": 0, "transform": 2}
    assert data["outputs"] == {"extract": {"rows": 3}, "transform": [1, 2]}
    assert data["outputs_repr"] == [] and data["state"] == {"cursor": 2}
    first = cli_json(capsys, db, "show", "etl", "--seq", "1")
    assert first["interrupted"] == ["transform"] and "outputs" not in first
    code, out, _ = cli(capsys, db, "show", "etl", "--seq", "1", "--outputs")
    assert code == 0
    assert 'extract: {"rows": 3}' in out and 'state: {"cursor": 1}' in out


def test_statuses_need_no_pickle(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    # Listing, showing and diffing statuses decode no payload: no --allow-pickle.
    assert [i["serializer"] for i in cli_json(capsys, db, "list", "pickled")] == ["pickle"] * 2
    shown = cli_json(capsys, db, "show", "pickled")
    assert shown["completed"] == ["a"] and shown["errors"] == {"b": "KeyError: 'x'"}
    code, out, err = cli(capsys, db, "show", "pickled")
    assert (code, err) == (0, "") and "completed      a" in out
    diff = cli_json(capsys, db, "diff", "pickled", "1", "2")
    assert diff["nodes"] == [
        {"node_id": "a", "change": "changed", "attempt": [0, 2]},
        {"node_id": "b", "change": "added", "status": "failed"},
    ]
    assert diff["outputs_compared"] is False and diff["state_changed"] is None
    # Values need the opt-in, with the hint.
    for argv in (["show", "pickled", "--outputs"], ["export", "pickled"],
                 ["diff", "pickled", "1", "2", "--outputs"]):  # fmt: skip
        code, out, err = cli(capsys, db, *argv)
        assert (code, out) == (2, "")
        assert error_line(err).startswith("pitstop: error: [pickle] run 'pickled' seq ")
        assert "pitstop: hint: pass --allow-pickle" in err
    data = cli_json(capsys, db, "show", "pickled", "--allow-pickle", "--outputs", "--seq", "1")
    assert data["outputs"] == {"a": "{1, 2}"} and data["outputs_repr"] == ["a"]
    assert (data["state"], data["state_repr"]) == ("(1, 2)", True)
    diff = cli_json(capsys, db, "diff", "pickled", "1", "2", "--outputs", "--allow-pickle")
    assert diff["nodes"][0]["output_changed"] is True and diff["state_changed"] is True


def test_diff(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "diff", "etl", "1", "2")
    assert code == 0
    assert out.splitlines()[0] == "run 'etl': seq 1 -> 2"
    assert "status running -> completed; attempt 1 -> 2\n" in out
    assert "added (pending)" in out and "output changed" not in out
    assert "outputs, state: not compared (add --outputs)" in out
    assert "metadata changed: yes" in out
    code, out, _ = cli(capsys, db, "diff", "etl", "1", "2", "--outputs")
    assert "status running -> completed; attempt 1 -> 2; output changed" in out
    assert "state changed: yes" in out and "metadata changed: yes" in out
    data = cli_json(capsys, db, "diff", "etl", "1", "2", "--outputs")
    by_node = {n["node_id"]: n for n in data["nodes"]}
    assert set(by_node) == {"load", "report", "transform"}  # extract did not change
    assert by_node["report"] == {"node_id": "report", "change": "added", "status": "pending"}
    assert by_node["load"]["status"] == ["pending", "failed"]
    assert by_node["load"]["error"] == [None, "ValueError: boom"]
    assert by_node["transform"]["output_changed"] is True
    assert by_node["transform"]["attempt"] == [1, 2]
    assert "deps" not in by_node["transform"]
    assert by_node["load"]["deps"] == [["transform"], []]
    assert data["outputs_compared"] is True and data["state_changed"] is True
    back = cli_json(capsys, db, "diff", "etl", "3", "1")
    assert {"node_id": "report", "change": "removed", "status": "pending"} in back["nodes"]
    same = cli_json(capsys, db, "diff", "etl", "2", "3", "--outputs")
    assert same["state_changed"] is False and same["metadata_changed"] is True
    assert [n["node_id"] for n in same["nodes"]] == ["load"]
    code, out, _ = cli(capsys, db, "diff", "etl", "2", "2")
    assert code == 0 and "no node changes" in out


def test_prune(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "prune", "etl", "--keep", "2")
    assert code == 0
    assert out == "pruned 1 checkpoint(s) of run 'etl': 1\nkept: 2, 3\n"
    data = cli_json(capsys, db, "prune", "etl", "--keep", "1")
    assert data == {"run_id": "etl", "removed": [2], "kept": [3]}
    assert cli_json(capsys, db, "prune", "etl", "--keep", "1")["removed"] == []
    # Seq 3 wrote only 'load'; the rows it reads from pruned seqs must survive.
    shown = cli_json(capsys, db, "show", "etl", "--outputs")
    assert shown["outputs"] == {"extract": {"rows": 3}, "load": "done", "transform": [1, 2]}


def test_delete(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "delete", "etl", "--seq", "2")
    assert (code, out) == (0, "deleted 1 checkpoint(s) of run 'etl': 2\n")
    assert [i["seq"] for i in cli_json(capsys, db, "list", "etl")] == [1, 3]
    assert cli_json(capsys, db, "show", "etl")["completed"] == ["extract", "load", "transform"]
    assert cli_json(capsys, db, "delete", "etl") == {"run_id": "etl", "removed": [1, 3]}
    code, _, err = cli(capsys, db, "delete", "etl")
    assert (code, err) == (1, "pitstop: error: no checkpoint for run 'etl'\n")


def test_export(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, db, "export", "etl", "--seq", "2")
    assert code == 0
    doc = json.loads(out)
    assert (doc["format"], doc["version"]) == ("pitstop.export", 1)
    assert doc["info"]["run_id"] == "etl" and doc["info"]["seq"] == 2
    assert doc["state"] == {"cursor": 2} and doc["state_repr"] is False
    assert doc["metadata"] == {}
    assert sorted(doc["nodes"]) == ["extract", "load", "report", "transform"]
    transform = doc["nodes"]["transform"]
    assert transform["status"] == "completed" and transform["output"] == [1, 2]
    assert transform["deps"] == ["extract"] and "output_repr" not in transform
    assert doc["nodes"]["load"]["error"] == "ValueError: boom"

    target = tmp_path / "etl.json"
    code, out, _ = cli(capsys, db, "export", "etl", "-o", str(target))
    assert (code, out) == (0, f"exported run 'etl' seq 3 to {target}\n")
    assert json.loads(target.read_text())["info"]["seq"] == 3

    pickled = cli_json(capsys, db, "export", "pickled", "--allow-pickle", "--seq", "1")
    # Typed values JSON has no type for are converted (a set -> a list), and flagged.
    assert pickled["nodes"]["a"]["output"] == [1, 2]
    assert pickled["nodes"]["a"]["output_converted"] is True
    assert "output_repr" not in pickled["nodes"]["a"]
    assert pickled["state_converted"] is True and pickled["state_repr"] is False

    code, _, err = cli(capsys, db, "export", "etl", "-o", str(tmp_path / "no" / "dir.json"))
    assert code == 2 and error_line(err).startswith("pitstop: error: cannot write")


def test_stats(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add_finished_runs(str(db))
    data = cli_json(capsys, db, "stats")
    infos = [i for r in ("etl", "pickled", "crashed", "done")
             for i in cli_json(capsys, db, "list", r)]  # fmt: skip
    assert data["runs"] == 4 and data["checkpoints"] == 3 + 2 + 1 + 1
    assert data["by_status"] == {"running": 1, "paused": 1, "failed": 1, "succeeded": 1}
    assert data["bytes"] == sum(i["size"] for i in infos)
    assert data["node_rows_written"] == sum(i["nodes_written"] for i in infos)
    sizes = {r: sum(i["size"] for i in cli_json(capsys, db, "list", r))
             for r in ("etl", "pickled", "crashed", "done")}  # fmt: skip
    assert data["largest_run"] == max(sizes, key=sizes.__getitem__)
    assert data["latest_at"].endswith("+00:00")
    code, out, _ = cli(capsys, db, "stats")
    assert code == 0 and "checkpoints         7" in out
    assert "by status           1 running, 1 paused, 1 failed, 1 succeeded" in out


def test_empty_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with SqlStore(path):
        pass  # creates the tables
    assert cli(capsys, path, "runs") == (0, "no runs\n", "")
    stats = cli_json(capsys, path, "stats")
    assert stats["runs"] == 0 and stats["latest_at"] is None and stats["largest_run"] is None


# -- damage ----------------------------------------------------------------------


def test_corrupt_state_names_run_and_seq(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    corrupt(db, CHECKPOINTS, "state", "run_id = 'etl' AND seq = 2")
    for argv in (["show", "etl", "--seq", "2"], ["export", "etl", "--seq", "2"]):
        code, out, err = cli(capsys, db, *argv)
        assert (code, out) == (2, "")
        line = error_line(err)
        assert line.startswith("pitstop: error: checkpoint run 'etl' seq 2 is corrupt:")
        assert "metadata or state does not match its hash" in line
    code, _, err = cli(capsys, db, "diff", "etl", "1", "2")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in err
    # The other checkpoints still verify, and the damaged one can be deleted.
    assert cli_json(capsys, db, "show", "etl", "--seq", "1")["info"]["seq"] == 1
    assert cli_json(capsys, db, "show", "etl")["info"]["seq"] == 3
    assert cli_json(capsys, db, "delete", "etl", "--seq", "2")["removed"] == [2]


def test_corrupt_node_output(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    corrupt(db, NODES, "output", "run_id = 'etl' AND node_id = 'transform'")
    code, _, err = cli(capsys, db, "show", "etl")  # checked even when not decoded
    assert code == 2
    assert "run 'etl' seq 3 is corrupt: node 'transform' (written at seq 2)" in err


def test_corrupt_snapshot(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    corrupt(db, CHECKPOINTS, "snapshot", "run_id = 'etl' AND seq = 1")  # small: in its row
    code, _, err = cli(capsys, db, "show", "etl")  # every checkpoint of its chain fails
    assert code == 2
    assert "run 'etl' seq 3 is corrupt: the snapshot at seq 1 is damaged" in err


def test_corrupt_metadata_in_list(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    set_column(db, CHECKPOINTS, "metadata", b"{bad", "run_id = 'etl' AND seq = 2")
    code, _, err = cli(capsys, db, "list", "etl")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in error_line(err)


def test_corrupt_node_deps_in_show(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    set_column(db, NODES, "deps", "[bad", "run_id = 'etl' AND node_id = 'load' AND seq = 2")
    code, _, err = cli(capsys, db, "show", "etl", "--seq", "2")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in error_line(err)


@pytest.mark.parametrize("value", [1e300, "abc"], ids=["huge", "text"])
def test_damaged_header_column(capsys: pytest.CaptureFixture[str], db: Path, value: object) -> None:
    set_column(db, CHECKPOINTS, "created_at", value, "run_id = 'etl' AND seq = 2")
    for argv in (["list", "etl"], ["show", "etl", "--seq", "2"], ["--json", "list", "etl"]):
        code, out, err = cli(capsys, db, *argv)
        assert (code, out) == (2, "")
        assert error_line(err).startswith("pitstop: error: checkpoint run 'etl' seq 2 is corrupt")
        assert "OverflowError" not in err
    assert cli_json(capsys, db, "show", "etl", "--seq", "1")["info"]["seq"] == 1  # before it
    # seq 3 is a delta on top of seq 2: its chain runs through the damaged header.
    code, _, err = cli(capsys, db, "show", "etl")
    assert code == 2 and "seq 3 is corrupt: seq 2 on its chain:" in err
    # The latest checkpoint damaged: `show` names it, `runs` still lists every run.
    set_column(db, CHECKPOINTS, "created_at", value, "run_id = 'etl' AND seq = 3")
    code, _, err = cli(capsys, db, "show", "etl")
    assert code == 2
    assert error_line(err).startswith("pitstop: error: checkpoint run 'etl' seq 3 is corrupt")
    runs = cli_json(capsys, db, "runs")
    assert runs[0]["latest_at"] == f"invalid time {value!r}"
    code, out, _ = cli(capsys, db, "runs")
    assert code == 0 and f"invalid time {value!r}" in out
    code, _, err = cli(capsys, db, "stats")  # sums every header: reports the damage
    assert code == 2 and "run 'etl' seq 2 is corrupt" in error_line(err)


def test_iso_never_raises() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00+00:00"
    for bad in (1e300, -1e300, float("inf"), float("nan"), 1e17, "abc", b"x", True):
        assert iso(bad) == f"invalid time {bad!r}"
        assert when(iso(bad)) == f"invalid time {bad!r}"
    assert when("2026-01-02T03:04:05.6+00:00") == "2026-01-02 03:04:05Z"


def test_damaged_run_row_is_one_line(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    set_column(db, RUNS, "status", "exploded", "run_id = 'etl'")
    code, out, err = cli(capsys, db, "runs")
    assert (code, out) == (2, "")
    assert "exploded" in error_line(err)


def test_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(store: object, args: object) -> None:
        raise KeyboardInterrupt

    _, render, help_text = cli_mod._COMMANDS["runs"]
    monkeypatch.setitem(cli_mod._COMMANDS, "runs", (interrupted, render, help_text))
    assert cli(capsys, db, "runs") == (130, "", "")


def test_old_schema_is_reported_not_migrated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old)
    try:
        conn.executescript((Path(__file__).parent / "data" / "v1_store.sql").read_text())
    finally:
        conn.close()
    before = digest(old)
    for argv in (["runs"], ["list", "etl"], ["prune", "etl", "--keep", "1"], ["delete", "etl"]):
        code, _, err = cli(capsys, old, *argv)
        assert code == 2
        assert "has pitstop schema 1, older than 4" in error_line(err)
    assert digest(old) == before  # the CLI never migrates; a manager's first open does


# -- errors and store selection --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "nope"], "no checkpoint for run 'nope'"),
        (["show", "nope"], "no checkpoint for run 'nope'"),
        (["show", "etl", "--seq", "9"], "no checkpoint for run 'etl' seq 9"),
        (["diff", "etl", "1", "9"], "no checkpoint for run 'etl' seq 9"),
        (["prune", "nope", "--keep", "1"], "no checkpoint for run 'nope'"),
        (["delete", "nope"], "no checkpoint for run 'nope'"),
        (["delete", "etl", "--seq", "9"], "no checkpoint for run 'etl' seq 9"),
        (["export", "nope"], "no checkpoint for run 'nope'"),
    ],
)
def test_missing_run_or_seq_exits_1(
    capsys: pytest.CaptureFixture[str], db: Path, argv: list[str], message: str
) -> None:
    code, out, err = cli(capsys, db, *argv)
    assert (code, out, err) == (1, "", f"pitstop: error: {message}\n")


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("sqlite:/x.db", "'sqlite:/x.db' looks like a URL but is not one"),
        ("postgres//h/db", "'postgres//h/db' looks like a URL but is not one"),
        ("", "empty store target"),
        ("mysql://u:secret@h/db", "unsupported store URL scheme 'mysql'"),
    ],
    ids=["sqlite-one-slash", "postgres-no-colon", "empty", "mysql"],
)
def test_store_typos_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (["runs"], ["show", "etl"], ["delete", "etl"]):
        code, out, err = cli(capsys, store, *argv)
        assert (code, out) == (2, "")
        line = error_line(err)
        assert line.startswith("pitstop: error: bad store target: ") and message in line
        assert "secret" not in err
    assert list(tmp_path.iterdir()) == []  # a typo never becomes a file


def test_missing_file_is_not_created(
    capsys: pytest.CaptureFixture[str],
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "missing.db"
    for argv in (["runs"], ["list", "etl"], ["prune", "etl", "--keep", "1"], ["delete", "etl"]):
        code, _, err = cli(capsys, missing, *argv)
        assert code == 2
        assert error_line(err) == (
            f"pitstop: error: no pitstop store at {str(missing)!r} (use --store or $PITSTOP_STORE)"
        )
    code, _, err = cli(capsys, f"sqlite:///{missing}", "runs")
    assert code == 2 and "no pitstop store at" in err
    assert not missing.exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PITSTOP_STORE", raising=False)
    assert main(["runs"]) == 2  # default ./pitstop.db does not exist
    assert "no pitstop store at 'pitstop.db'" in capsys.readouterr().err
    assert not (tmp_path / "pitstop.db").exists()


def test_store_resolution(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PITSTOP_STORE", str(db))
    assert main(["--json", "runs"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    # Options may follow the command, and a URL works as well as a path.
    assert main(["runs", "--store", f"sqlite:///{db}", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["etl", "pickled"]
    monkeypatch.setenv("PITSTOP_STORE", "")  # empty means unset: the default, pitstop.db
    monkeypatch.chdir(db.parent)
    assert main(["runs"]) == 2
    assert "no pitstop store at 'pitstop.db'" in capsys.readouterr().err


def test_usage(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert main(["--help"]) == 0
    assert "runs" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["--store", str(db), "prune", "etl", "--keep", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["--store", str(db), "show", "etl", "--seq", "x"]) == 2
    assert main(["--store", str(db), "show", ""]) == 2
    assert "run id must not be empty" in capsys.readouterr().err


# -- reads never write -------------------------------------------------------------

READ_COMMANDS = [["runs"], ["list", "etl"], ["show", "etl"], ["show", "etl", "--outputs"],
                 ["diff", "etl", "1", "3"], ["export", "etl"], ["stats"]]  # fmt: skip


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
        return [name for (name,) in rows]
    finally:
        conn.close()


def test_foreign_sqlite_file_is_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign.db"
    sql(foreign, "CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
    sql(foreign, "INSERT INTO app_users (name) VALUES ('ana')")
    before = (digest(foreign), sorted(os.listdir(tmp_path)))
    assert (journal_mode(foreign), tables(foreign)) == ("delete", ["app_users"])
    code, out, err = cli(capsys, foreign, "runs")
    assert (code, out) == (2, "")
    assert error_line(err) == (
        f"pitstop: error: sqlite:///{foreign} holds no pitstop tables "
        "(opened read-only: nothing created)"
    )
    for argv in [*READ_COMMANDS, ["prune", "etl", "--keep", "1"], ["delete", "etl"]]:
        code, _, err = cli(capsys, foreign, *argv)
        assert code == 2 and "holds no pitstop tables" in error_line(err)
    assert (journal_mode(foreign), tables(foreign)) == ("delete", ["app_users"])
    assert (digest(foreign), sorted(os.listdir(tmp_path))) == before


def test_reads_on_a_read_only_file(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.chmod(0o444)
    before, listing = digest(db), set(os.listdir(db.parent))
    tables_before = tables(db)
    for argv in READ_COMMANDS:
        code, _, err = cli(capsys, db, *argv)
        assert (code, err) == (0, "")
    assert digest(db) == before and tables(db) == tables_before
    assert journal_mode(db) == "wal"
    # SQLite's own WAL index may appear beside the file; nothing else does.
    assert set(os.listdir(db.parent)) - listing <= {f"{db.name}-wal", f"{db.name}-shm"}
    # Read commands never ask for a writable store; prune and delete check read-only first.
    opened: list[bool] = []

    class Spy(SqlStore):
        def __init__(self, target: str, **kwargs: Any) -> None:
            opened.append(kwargs.get("readonly", False))
            super().__init__(target, **kwargs)

    monkeypatch.setattr(cli_mod, "SqlStore", Spy)
    for argv in READ_COMMANDS:
        assert cli(capsys, db, *argv)[0] == 0
    assert opened == [True] * len(READ_COMMANDS)
    db.chmod(0o644)
    opened.clear()
    assert cli(capsys, db, "prune", "etl", "--keep", "2")[0] == 0
    assert cli(capsys, db, "delete", "etl", "--seq", "3")[0] == 0
    assert opened == [True, False, True, False]


def _unprivileged() -> list[str]:
    """A command prefix under which file modes are enforced (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes would not be enforced")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable directory that an unprivileged user can reach (not under tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="pitstop-cli-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path)


def _run_as(prefix: list[str], db: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PITSTOP_STORE": str(db)}
    return subprocess.run([*prefix, sys.executable, "-m", "pitstop", *argv],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_read_only_file_subprocess(open_dir: Path) -> None:
    prefix = _unprivileged()
    db = open_dir / "store.db"
    populate(str(db))
    db.chmod(0o444)
    before = digest(db)
    if _run_as(prefix, db, "--help").returncode != 0:
        pytest.skip("the unprivileged user cannot run this interpreter")
    done = _run_as(prefix, db, "--json", "list", "etl")
    assert (done.returncode, done.stderr) == (0, "")
    assert [i["seq"] for i in json.loads(done.stdout)] == [1, 2, 3]
    for argv in (["runs"], ["show", "etl"], ["diff", "etl", "1", "2"], ["stats"]):
        done = _run_as(prefix, db, *argv)
        assert (done.returncode, done.stderr) == (0, "")
    done = _run_as(prefix, db, "prune", "etl", "--keep", "1")
    assert done.returncode == 2 and "readonly database" in error_line(done.stderr)
    assert digest(db) == before and journal_mode(db) == "wal"


def test_read_only_directory_subprocess(open_dir: Path) -> None:
    prefix = _unprivileged()
    db = open_dir / "store.db"
    populate(str(db))
    db.chmod(0o444)
    open_dir.chmod(0o555)
    done = _run_as(prefix, db, "runs")
    assert (done.returncode, done.stderr) == (0, "")


def test_reads_beside_an_open_write_transaction(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    writer = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(f"INSERT INTO {RUNS} (run_id, status, attempt, last_seq, updated_at) "
                       "VALUES ('other', 'running', 1, 0, 0)")  # fmt: skip
        for argv in (["runs"], ["list", "etl"], ["show", "etl"], ["stats"]):
            started = time.monotonic()
            code, out, err = cli(capsys, db, *argv)
            assert (code, err) == (0, "")
            assert time.monotonic() - started < 2.0
            assert "other" not in out  # not committed
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# -- how it runs -----------------------------------------------------------------


async def test_runs_inside_an_event_loop(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    # A plain function: callable from a running loop (Jupyter), which asyncio.run is not.
    assert cli_json(capsys, db, "show", "etl")["info"]["seq"] == 3
    assert cli_json(capsys, db, "prune", "etl", "--keep", "2")["removed"] == [1]


def test_loads_without_adopting(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: SyncCheckpointManager, seq: int | None = None) -> None:
        raise AssertionError("the CLI must not adopt checkpoints")

    asked: list[bool] = []
    load: Any = SyncCheckpointManager.load_checkpoint

    def spy(self: SyncCheckpointManager, seq: int | None = None, *, outputs: bool = True) -> Any:
        asked.append(outputs)
        return load(self, seq, outputs=outputs)

    monkeypatch.setattr(SyncCheckpointManager, "restore_checkpoint", refuse)
    monkeypatch.setattr(SyncCheckpointManager, "load_checkpoint", spy)
    expected = {("show", "etl"): [False], ("show", "etl", "--outputs"): [True],
                ("diff", "etl", "1", "2"): [False, False],
                ("diff", "etl", "1", "2", "--outputs"): [True, True],
                ("export", "etl"): [True]}  # fmt: skip
    for argv, outputs in expected.items():
        asked.clear()
        assert cli(capsys, db, *argv)[0] == 0
        assert asked == outputs, argv


def test_console_script_and_module_subprocess(db: Path) -> None:
    script = shutil.which("pitstop", path=str(Path(sys.executable).parent))
    assert script is not None, "the pitstop console script is not installed in this venv"
    env = {"PITSTOP_STORE": str(db), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [script, "--json", "runs"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert [r["run_id"] for r in json.loads(done.stdout)] == ["etl", "pickled"]

    corrupt(db, CHECKPOINTS, "state", "run_id = 'etl' AND seq = 3")
    done = subprocess.run(
        [sys.executable, "-m", "pitstop", "show", "etl"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("pitstop: error: checkpoint run 'etl' seq 3 is corrupt")
    assert "Traceback" not in done.stderr


@pytest.mark.postgres
def test_postgres(capsys: pytest.CaptureFixture[str], pg_db: str) -> None:
    populate(pg_db)
    runs = cli_json(capsys, pg_db, "runs")
    assert [(r["run_id"], r["status"], r["last_seq"]) for r in runs] == [
        ("etl", "paused", 3), ("pickled", "running", 2)
    ]  # fmt: skip
    assert [i["seq"] for i in cli_json(capsys, pg_db, "list", "etl")] == [1, 2, 3]
    assert cli_json(capsys, pg_db, "show", "etl")["counts"]["completed"] == 3
    assert cli_json(capsys, pg_db, "show", "pickled")["failed"] == ["b"]  # no --allow-pickle
    code, out, _ = cli(capsys, pg_db, "list", "etl")
    assert code == 0 and out.splitlines()[3].split()[:2] == ["3", "2"]
    assert cli_json(capsys, pg_db, "prune", "etl", "--keep", "1")["removed"] == [1, 2]
    assert cli_json(capsys, pg_db, "export", "etl")["nodes"]["load"]["output"] == "done"
    assert cli_json(capsys, pg_db, "stats")["checkpoints"] == 3
    code, _, err = cli(capsys, pg_db, "show", "nope")
    assert (code, err) == (1, "pitstop: error: no checkpoint for run 'nope'\n")


# -- codecs, classes, keys ---------------------------------------------------------

CODEC_MODULE = """
import dataclasses
from pitstop.codecs import TypeCodec

class Money:
    def __init__(self, cents, currency):
        self.cents, self.currency = cents, currency

    def __eq__(self, other):
        return (self.cents, self.currency) == (other.cents, other.currency)

@dataclasses.dataclass(frozen=True)
class Order:
    id: int
    total: Money

money = TypeCodec(Money, "shop.Money", lambda m: (m.cents, m.currency), lambda v: Money(*v))
"""


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store whose run 'shop' holds a dataclass and a custom-codec type, written by a
    module (``shopmod``) that the CLI process then has not imported."""
    (tmp_path / "shopmod.py").write_text(CODEC_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import shopmod  # type: ignore[import-not-found]

    path = tmp_path / "shop.db"
    ser = TypedSerializer(codecs=[shopmod.money])
    with SyncCheckpointManager("shop", store=path, enabled=True, serializer=ser) as m:
        m.on_node_start(node_id="order")
        m.on_node_finish(node_id="order", output=shopmod.Order(7, shopmod.Money(1250, "EUR")))
        m.on_node_start(node_id="fee")
        m.on_node_finish(node_id="fee", output=shopmod.Money(99, "EUR"))
        m.save_checkpoint()
    del sys.modules["shopmod"]
    return path


def test_statuses_of_custom_types_need_no_codec(
    capsys: pytest.CaptureFixture[str], shop: Path
) -> None:
    shown = cli_json(capsys, shop, "show", "shop")
    assert shown["completed"] == ["fee", "order"]


def test_custom_codec_and_classes_by_flag(
    capsys: pytest.CaptureFixture[str], shop: Path, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, shop, "export", "shop")
    assert code == 2 and "no codec named 'shop.Money'" in error_line(err)
    assert "--codec MODULE:NAME" in err
    assert "shopmod" not in sys.modules  # refusing imported nothing
    code, _, err = cli(capsys, shop, "show", "shop", "--codec", "nosuchmod:x")
    assert code == 2 and "--codec nosuchmod:x" in error_line(err)
    # Naming the codec imports its module, whose classes are then rebuilt too.
    doc = cli_json(capsys, shop, "export", "shop", "--codec", "shopmod:money")
    order = doc["nodes"]["order"]
    assert order["output_converted"] is True and order["output"]["id"] == 7

    # A dataclass of a module the CLI has not imported: refused, then --allow-module.
    (tmp_path / "plainmod.py").write_text(
        "import dataclasses\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: int\n"
    )
    import plainmod  # type: ignore[import-not-found]

    with SyncCheckpointManager("plain", store=shop, enabled=True) as m:
        m.on_node_start(node_id="p")
        m.on_node_finish(node_id="p", output=plainmod.Point(1, 2))
        m.save_checkpoint()
    del sys.modules["plainmod"]
    code, _, err = cli(capsys, shop, "export", "plain")
    assert code == 2 and "class plainmod.Point is not allowed" in error_line(err)
    assert "--allow-module" in err and "plainmod" not in sys.modules
    doc = cli_json(capsys, shop, "export", "plain", "--allow-module", "plainmod")
    assert doc["nodes"]["p"]["output"] == {"x": 1, "y": 2}


def test_codecs_from_entry_points(
    capsys: pytest.CaptureFixture[str], shop: Path, tmp_path: Path
) -> None:
    info = tmp_path / "shopmod-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shopmod\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pitstop.codecs]\nmoney = shopmod:money\n")
    doc = cli_json(capsys, shop, "show", "shop", "--outputs", "--allow-module", "shopmod")
    assert set(doc["outputs"]) == {"fee", "order"} and doc["outputs_repr"] == ["fee", "order"]


def test_encrypted_store_needs_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, key = tmp_path / "enc.db", os.urandom(32)
    envelope = Envelope(encryption=AesGcmKeys({"prod-1": key}))
    with SyncCheckpointManager("sec", store=path, enabled=True, envelope=envelope) as m:
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output={"token": "t0ps3cret"})
        m.save_checkpoint()
    assert cli_json(capsys, path, "show", "sec")["completed"] == ["a"]  # statuses: no key
    code, _, err = cli(capsys, path, "export", "sec")
    assert code == 2 and "prod-1" in error_line(err) and "--key prod-1=FILE" in err
    (tmp_path / "k.hex").write_text(key.hex() + "\n")
    doc = cli_json(capsys, path, "export", "sec", "--key", f"prod-1={tmp_path / 'k.hex'}")
    assert doc["nodes"]["a"]["output"] == {"token": "t0ps3cret"}
    (tmp_path / "k.raw").write_bytes(os.urandom(32))
    code, _, err = cli(capsys, path, "export", "sec", "--key", f"prod-1={tmp_path / 'k.raw'}")
    assert code == 2 and "does not open" in error_line(err)


def test_stats_count_blobs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with SyncCheckpointManager("b", store=path, enabled=True) as m:
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=bytes(range(256)) * 400)  # 100 KB, deduplicated
        m.save_checkpoint()
    stats = cli_json(capsys, path, "stats")
    assert stats["blobs"] == 1 and 0 < stats["blob_bytes"] <= 102_400

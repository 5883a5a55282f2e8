"""The `pitstop` command against a real SQLite file, in-process and as a subprocess.

`main()` runs its own event loop (asyncio.run), so these tests are sync and
populate their stores with asyncio.run too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitstop import CheckpointManager, NodeState, NodeStatus, PickleSerializer
from pitstop._cli import main
from pitstop.storage._models import CHECKPOINTS, NODES

Result = tuple[int, str, str]


async def _populate(target: str) -> None:
    mgr = CheckpointManager("etl", store=target, enabled=True)
    await mgr.save_checkpoint(
        label="start",
        nodes=[
            NodeState("extract", NodeStatus.COMPLETED, output={"rows": 3}, attempt=1),
            NodeState("transform", NodeStatus.RUNNING, attempt=1, deps=("extract",)),
            NodeState("load", deps=("transform",)),
        ],
        state={"cursor": 1},
        metadata={"owner": "ana"},
    )
    await mgr.save_checkpoint(
        label="transformed",
        node="transform",
        nodes=[
            NodeState(
                "transform", NodeStatus.COMPLETED, output=[1, 2], attempt=2, deps=("extract",)
            ),
            NodeState("load", NodeStatus.FAILED, attempt=1, error="ValueError: boom"),  # no deps
            NodeState("report"),
        ],
        state={"cursor": 2},
    )
    await mgr.save_checkpoint(
        trigger="pause",
        nodes=[NodeState("load", NodeStatus.COMPLETED, output="done", attempt=2)],
        state={"cursor": 2},
        metadata={"owner": "ana"},
    )
    await mgr.aclose()
    pickled = CheckpointManager(
        "pickled", store=target, enabled=True, serializer=PickleSerializer()
    )
    await pickled.save_checkpoint(
        nodes=[NodeState("a", NodeStatus.COMPLETED, output={1, 2})], state=(1, 2)
    )
    await pickled.aclose()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite store with run 'etl' (seqs 1-3, JSON) and run 'pickled' (seq 1, pickle)."""
    path = tmp_path / "store.db"
    asyncio.run(_populate(str(path)))
    return path


def cli(capsys: pytest.CaptureFixture[str], db: Path | str, *argv: str) -> Result:
    code = main(["--store", str(db), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], db: Path | str, *argv: str) -> Any:
    code, out, err = cli(capsys, db, "--json", *argv)
    assert (code, err) == (0, "")
    return json.loads(out)


def corrupt(db: Path, table: str, column: str, where: str) -> None:
    conn = sqlite3.connect(db)
    try:
        blob = conn.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()[0]
        flipped = bytes([blob[0] ^ 0x01]) + blob[1:]
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (flipped,))
        conn.commit()
    finally:
        conn.close()


def test_runs(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN_ID", "CHECKPOINTS", "FIRST", "LATEST", "LATEST_AT", "SIZE"]
    assert lines[1].split()[:4] == ["etl", "3", "1", "3"]
    assert lines[2].split()[:4] == ["pickled", "1", "1", "1"]
    runs = cli_json(capsys, db, "runs")
    assert [r["run_id"] for r in runs] == ["etl", "pickled"]
    etl = runs[0]
    assert (etl["checkpoints"], etl["first_seq"], etl["latest_seq"]) == (3, 1, 3)
    assert etl["latest_at"].endswith("+00:00") and etl["size"] > 0


def test_list(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "list", "etl")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert "transformed" in rows[1] and "transform" in rows[1] and "json" in rows[1]
    infos = cli_json(capsys, db, "list", "etl")
    assert [(i["seq"], i["parent_seq"]) for i in infos] == [(1, None), (2, 1), (3, 2)]
    assert [i["trigger"] for i in infos] == ["manual", "manual", "pause"]
    assert [i["label"] for i in infos] == ["start", "transformed", None]
    assert [i["nodes_written"] for i in infos] == [3, 3, 1]
    assert infos[0]["metadata"] == {"owner": "ana"} and infos[1]["metadata"] == {}
    assert all(i["serializer"] == "json" and i["size"] > 0 for i in infos)


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


def test_pickle_needs_opt_in(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, err = cli(capsys, db, "show", "pickled")
    assert (code, out) == (2, "")
    assert err.startswith("pitstop: error: [pickle] run 'pickled' seq 1")
    assert "--allow-pickle" in err and "Traceback" not in err
    data = cli_json(capsys, db, "show", "pickled", "--allow-pickle", "--outputs")
    assert data["outputs"] == {"a": "{1, 2}"} and data["outputs_repr"] == ["a"]
    assert (data["state"], data["state_repr"]) == ("(1, 2)", True)


def test_diff(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = cli(capsys, db, "diff", "etl", "1", "2")
    assert code == 0
    assert out.splitlines()[0] == "run 'etl': seq 1 -> 2"
    assert "status running -> completed; attempt 1 -> 2; output changed" in out
    assert "added (pending)" in out
    assert "state changed: yes" in out and "metadata changed: yes" in out
    data = cli_json(capsys, db, "diff", "etl", "1", "2")
    by_node = {n["node_id"]: n for n in data["nodes"]}
    assert set(by_node) == {"load", "report", "transform"}  # extract did not change
    assert by_node["report"] == {"node_id": "report", "change": "added", "status": "pending"}
    assert by_node["load"]["status"] == ["pending", "failed"]
    assert by_node["load"]["error"] == [None, "ValueError: boom"]
    assert by_node["transform"]["output_changed"] is True
    assert by_node["transform"]["attempt"] == [1, 2]
    assert "deps" not in by_node["transform"]
    assert by_node["load"]["deps"] == [["transform"], []]
    back = cli_json(capsys, db, "diff", "etl", "3", "1")
    assert {"node_id": "report", "change": "removed", "status": "pending"} in back["nodes"]
    same = cli_json(capsys, db, "diff", "etl", "2", "3")
    assert same["state_changed"] is False and same["metadata_changed"] is True
    assert [n["node_id"] for n in same["nodes"]] == ["load"]
    code, out, _ = cli(capsys, db, "diff", "etl", "2", "2")
    assert code == 0
    assert "no node changes" in out and "state changed: no" in out


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
    assert [r["run_id"] for r in cli_json(capsys, db, "runs")] == ["pickled"]
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

    pickled = cli_json(capsys, db, "export", "pickled", "--allow-pickle")
    assert pickled["nodes"]["a"]["output"] == "{1, 2}"
    assert pickled["nodes"]["a"]["output_repr"] is True and pickled["state_repr"] is True

    code, _, err = cli(capsys, db, "export", "etl", "-o", str(tmp_path / "no" / "dir.json"))
    assert code == 2 and err.startswith("pitstop: error: cannot write")


def test_stats(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    data = cli_json(capsys, db, "stats")
    infos = cli_json(capsys, db, "list", "etl") + cli_json(capsys, db, "list", "pickled")
    assert data["runs"] == 2 and data["checkpoints"] == 4
    assert data["bytes"] == sum(i["size"] for i in infos)
    assert data["node_rows_written"] == 3 + 3 + 1 + 1
    assert data["largest_run"] == "etl" and data["latest_at"].endswith("+00:00")
    code, out, _ = cli(capsys, db, "stats")
    assert code == 0 and "checkpoints         4" in out and "node rows written   8" in out


def test_corrupt_state_names_run_and_seq(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    corrupt(db, CHECKPOINTS.name, "state", "run_id = 'etl' AND seq = 2")
    for argv in (["show", "etl", "--seq", "2"], ["export", "etl", "--seq", "2"]):
        code, out, err = cli(capsys, db, *argv)
        assert (code, out) == (2, "")
        assert err.startswith("pitstop: error: checkpoint run 'etl' seq 2 is corrupt:")
        assert "checksum mismatch" in err and "Traceback" not in err
    code, _, err = cli(capsys, db, "diff", "etl", "1", "2")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in err
    # The other checkpoints still verify.
    assert cli_json(capsys, db, "show", "etl", "--seq", "1")["info"]["seq"] == 1
    assert cli_json(capsys, db, "show", "etl")["info"]["seq"] == 3


def test_corrupt_node_output(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    corrupt(db, NODES.name, "output", "run_id = 'etl' AND node_id = 'extract'")
    code, _, err = cli(capsys, db, "show", "etl")
    assert code == 2
    assert "run 'etl' seq 3 is corrupt: node 'extract' (written at seq 1)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "nope"], "no checkpoint for run 'nope'"),
        (["show", "nope"], "no checkpoint for run 'nope'"),
        (["show", "etl", "--seq", "9"], "no checkpoint for run 'etl' seq 9"),
        (["diff", "etl", "1", "9"], "no checkpoint for run 'etl' seq 9"),
        (["prune", "nope", "--keep", "1"], "no checkpoint for run 'nope'"),
        (["delete", "etl", "--seq", "9"], "no checkpoint for run 'etl' seq 9"),
        (["export", "nope"], "no checkpoint for run 'nope'"),
    ],
)
def test_missing_run_or_seq_exits_1(
    capsys: pytest.CaptureFixture[str], db: Path, argv: list[str], message: str
) -> None:
    code, out, err = cli(capsys, db, *argv)
    assert (code, out, err) == (1, "", f"pitstop: error: {message}\n")


def test_store_resolution(
    capsys: pytest.CaptureFixture[str],
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = cli(capsys, missing, "runs")
    assert code == 2 and f"no pitstop store at {str(missing)!r}" in err
    assert not missing.exists()  # inspecting never creates a database
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PITSTOP_STORE", raising=False)
    assert main(["runs"]) == 2  # default ./pitstop.db does not exist
    assert "no pitstop store at 'pitstop.db'" in capsys.readouterr().err
    monkeypatch.setenv("PITSTOP_STORE", str(db))
    assert main(["--json", "runs"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    # Options may follow the command, and a URL works as well as a path.
    assert main(["runs", "--store", f"sqlite+aiosqlite:///{db}", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["etl", "pickled"]
    assert main(["--store", "mysql://x/y", "runs"]) == 2
    assert "unsupported database URL scheme 'mysql'" in capsys.readouterr().err


def test_usage(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert main(["--help"]) == 0
    assert "runs" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["--store", str(db), "prune", "etl", "--keep", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["--store", str(db), "show", "etl", "--seq", "x"]) == 2


def test_empty_store(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    cli_json(capsys, db, "delete", "etl")
    cli_json(capsys, db, "delete", "pickled")
    assert cli(capsys, db, "runs") == (0, "no runs\n", "")
    stats = cli_json(capsys, db, "stats")
    assert stats["runs"] == 0 and stats["latest_at"] is None and stats["largest_run"] is None


def test_console_script_and_module_subprocess(db: Path) -> None:
    script = shutil.which("pitstop", path=str(Path(sys.executable).parent))
    assert script is not None, "the pitstop console script is not installed in this venv"
    env = {"PITSTOP_STORE": str(db), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [script, "--json", "runs"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert [r["run_id"] for r in json.loads(done.stdout)] == ["etl", "pickled"]

    corrupt(db, CHECKPOINTS.name, "state", "run_id = 'etl' AND seq = 3")
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


def test_database_urls(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    asyncio.run(_populate(store_url))
    assert [r["run_id"] for r in cli_json(capsys, store_url, "runs")] == ["etl", "pickled"]
    assert cli_json(capsys, store_url, "show", "etl")["counts"]["completed"] == 3
    assert cli_json(capsys, store_url, "prune", "etl", "--keep", "1")["removed"] == [1, 2]
    assert cli_json(capsys, store_url, "export", "etl")["nodes"]["load"]["output"] == "done"
    assert cli_json(capsys, store_url, "stats")["checkpoints"] == 2


def set_column(db: Path, table: str, column: str, value: object, where: str) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (value,))
        conn.commit()
    finally:
        conn.close()


def test_corrupt_metadata_in_list(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    set_column(db, CHECKPOINTS.name, "metadata", b"{bad", "run_id = 'etl' AND seq = 2")
    code, _, err = cli(capsys, db, "list", "etl")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in err


def test_corrupt_node_deps_in_show(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    set_column(db, NODES.name, "deps", "[bad", "run_id = 'etl' AND node_id = 'load' AND seq = 2")
    code, _, err = cli(capsys, db, "show", "etl", "--seq", "2")
    assert code == 2 and "run 'etl' seq 2 is corrupt" in err

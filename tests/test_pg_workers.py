"""examples/pg_workers.py for real: worker processes sharing one PostgreSQL database.

Each test gets a database of its own on the test server (conftest's ``pg_db``):
an unreachable server skips these tests, except under CI=true where it fails them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from stories import EXAMPLES

from pitstop import CheckpointManager, RunInfo, RunStatus, SqlStore
from pitstop.storage import _programs as P
from pitstop.storage._programs import Call

SCRIPT = EXAMPLES / "pg_workers.py"
sys.path.insert(0, str(EXAMPLES))

import pg_workers  # noqa: E402
from dag_runner import run_dag_plain  # noqa: E402

pytestmark = pytest.mark.postgres
# The coordinator and its workers run with warnings as errors too.
STRICT_ENV = {**os.environ, "PYTHONWARNINGS": "error"}


def example(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(
        cmd, env=STRICT_ENV, capture_output=True, text=True, timeout=180, check=False
    )


def section(output: str, start: str, end: str) -> str:
    """The text of ``output`` from ``start`` up to (not including) ``end``."""
    begin = output.index(start)
    return output[begin : output.index(end, begin)]


def runs(url: str) -> list[RunInfo]:
    """Every run in the database, by run id (the store's own listing, as the CLI uses it)."""
    with SqlStore(url, readonly=True) as store:
        return store.execute(Call(P.list_runs, (), False))


def reader(store: SqlStore, run: str) -> CheckpointManager:
    return CheckpointManager(run, store=store, enabled=True)


async def clean_digest(shard: str) -> str:
    """The shard's report digest from a run without pitstop."""
    outputs = await run_dag_plain(pg_workers.build_shard(shard, lambda m: None))
    sha: str = outputs["report"]["sha256"]
    return sha


async def test_story_kills_a_worker_and_a_survivor_resumes_its_shard(pg_db: str) -> None:
    proc = example("--story", "--db-url", pg_db, "--job-id", "story")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.rstrip().endswith("PASS") and proc.stderr == ""
    # Round 1: w1 dies for real in the middle of its first shard.
    first = section(out, "== round 1", "== round 2")
    assert "w1 batch-1 stats: KILLED" in first
    assert f"-> w1 exit code {pg_workers.KILL_EXIT}" in first
    assert "w1 batch-3" not in first.replace("shards batch-1, batch-3", "")
    assert "batch-1 in PostgreSQL: completed fetch, clean" in out
    # Round 2: a new process of w0 resumes batch-1 and skips the completed nodes.
    second = section(out, "== round 2", "== batch-1 in PostgreSQL")
    assert "w0 <- batch-1, batch-3" in second
    assert "w0 batch-1: resuming from checkpoint seq 2" in second
    assert "w0 batch-3: new" in second
    for node in ("fetch", "clean"):
        assert f"w0 batch-1 {node}: skipped (restored from checkpoint seq 2)" in second
        assert f"w0 batch-1 {node}: executing" not in second
    for node in ("stats", "hist", "report"):
        assert f"w0 batch-1 {node}: executing" in second
    killed_pid = re.search(r"w1 pid (\d+)", first)
    taker_pid = re.search(r"w0 pid (\d+)", second)
    assert killed_pid is not None and taker_pid is not None
    assert killed_pid.group(1) != taker_pid.group(1)
    # Every shard's result equals a clean run's, and so does the job digest.
    for shard in ("batch-0", "batch-1", "batch-2", "batch-3"):
        assert f"{shard}: done, sha256 {await clean_digest(shard)}" in out
    workers = re.search(r"workers digest: (\w+)", out)
    clean = re.search(r"clean digest: +(\w+)", out)
    assert workers is not None and clean is not None
    assert workers.group(1) == clean.group(1)
    # Without --keep the job's checkpoints are deleted; the run rows stay (seqs never reused).
    assert "checkpoints of runs story-batch-* deleted" in out
    found = runs(pg_db)
    assert [r.run_id for r in found] == [f"story-batch-{n}" for n in range(4)]
    assert all(r.checkpoints == 0 and r.status is RunStatus.SUCCEEDED for r in found)
    assert [r.last_seq for r in found] == [5, 5, 5, 5]


async def test_keep_leaves_every_shard_finished_in_the_database(pg_db: str) -> None:
    args = ["--workers", "3", "--shards", "5", "--kill-worker", "2", "--kill-at", "hist"]
    proc = example(*args, "--db-url", pg_db, "--job-id", "kept", "--keep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"-> w2 exit code {pg_workers.KILL_EXIT}" in proc.stdout
    found = runs(pg_db)
    assert [r.run_id for r in found] == [f"kept-batch-{n}" for n in range(5)]
    assert all(r.status is RunStatus.SUCCEEDED and not r.can_resume for r in found)
    async with SqlStore.from_url(pg_db) as store:
        for n in range(5):
            report = (await reader(store, f"kept-batch-{n}").load_checkpoint()).completed["report"]
            assert report["sha256"] == await clean_digest(f"batch-{n}")
        infos = await reader(store, "kept-batch-2").list_checkpoints()
        writers = [i.metadata["worker"] for i in infos]
        assert writers[0] == 2 and writers[-1] == 0


async def test_two_processes_write_one_run_one_after_another(pg_db: str) -> None:
    common = ["--db-url", pg_db, "--job-id", "handover", "--shard", "batch-0"]
    run = "handover-batch-0"
    # Worker A saves seq 1 (fetch) and 2 (clean), then dies in stats.
    a = example("--worker", "0", *common, "--kill-at", "stats")
    assert a.returncode == pg_workers.KILL_EXIT, a.stdout + a.stderr
    assert "Traceback" not in a.stderr  # os._exit, not an exception
    async with SqlStore.from_url(pg_db) as store:
        assert [i.seq for i in await reader(store, run).list_checkpoints()] == [1, 2]
        assert await reader(store, run).can_resume()
    # Worker B, another process, restores seq 2 and continues the same run id.
    b = example("--worker", "1", *common)
    assert b.returncode == 0 and b.stderr == "", b.stdout + b.stderr
    assert "w1 batch-0: resuming from checkpoint seq 2" in b.stdout
    assert "w1 batch-0 fetch: executing" not in b.stdout
    assert "w1 batch-0 clean: skipped (restored from checkpoint seq 2)" in b.stdout
    pid = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"w(\d) pid (\d+)", a.stdout + b.stdout)
    }
    async with SqlStore.from_url(pg_db) as store:
        infos = await reader(store, run).list_checkpoints()
        assert [i.seq for i in infos] == [1, 2, 3, 4, 5]  # contiguous
        assert [i.parent_seq for i in infos] == [None, 1, 2, 3, 4]  # one lineage
        assert [i.node for i in infos] == ["fetch", "clean", "stats", "hist", "report"]
        assert [i.metadata["worker"] for i in infos] == [0, 0, 1, 1, 1]
        assert [i.metadata["pid"] for i in infos] == [pid["0"]] * 2 + [pid["1"]] * 3
        assert pid["0"] != pid["1"]
        # A run this small is saved whole at every save (CheckpointPolicy.snapshot_small):
        # B's first save continues A's lineage (parent 2 above) with all five nodes.
        assert [i.nodes_written for i in infos] == [5, 5, 5, 5, 5]
        assert [i.snapshot for i in infos] == [True] * 5
        latest = await reader(store, run).load_checkpoint()
        assert latest.completed["report"]["sha256"] == await clean_digest("batch-0")
        old = await reader(store, run).load_checkpoint(2)
        assert sorted(old.completed) == ["clean", "fetch"]
        assert sorted(old.pending) == ["hist", "report", "stats"]
        info = await reader(store, run).run_info()
        assert info is not None and (info.status, info.attempt) == (RunStatus.SUCCEEDED, 2)
    # The run succeeded: a third worker does not resume it, it starts it fresh.
    c = example("--worker", "2", *common)
    assert c.returncode == 0, c.stdout + c.stderr
    assert "w2 batch-0: new" in c.stdout and "skipped" not in c.stdout
    async with SqlStore.from_url(pg_db) as store:
        infos = await reader(store, run).list_checkpoints()
    assert [i.seq for i in infos][-5:] == [6, 7, 8, 9, 10] and infos[-5].parent_seq is None

"""Real SIGKILLs in the middle of saves with retention: committed work is never
lost or damaged, and retention (inside the save's transaction) never leaves
more than keep_last checkpoints behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from pitstop import SyncCheckpointManager

WRITER = r"""
import sys
from pitstop import CheckpointPolicy, SqlStore, SyncCheckpointManager
target, start, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
policy = CheckpointPolicy(every_n_nodes=1, keep_last=2, snapshot_every=4)
store = SqlStore(target, durability=durability)
m = SyncCheckpointManager("r", store=store, enabled=True, policy=policy)
if m.can_resume():
    m.restore_checkpoint()
for i in range(start, start + 10_000):
    m.on_node_start(node_id=f"n{i % 50}")
    m.on_node_finish(node_id=f"n{i % 50}", output={"i": i, "pad": "x" * (i % 7 * 3000)})
    print(m.list_checkpoints()[-1].seq, flush=True)
"""


def _trials(target: str, trials: int, durability: str = "full") -> None:
    rng = random.Random(11)
    committed = 0
    for trial in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, target, str(trial * 10_000), durability],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # it is saving
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        seen = [int(line) for line in out.split() if line.strip()]
        with SyncCheckpointManager("r", store=target, enabled=True) as m:
            infos = m.list_checkpoints()
            assert 1 <= len(infos) <= 2, [i.seq for i in infos]
            cp = m.restore_checkpoint()  # verified: checksums and manifest
            assert cp.seq == infos[-1].seq
            if seen:  # every seq the writer saw committed is still there (or newer)
                assert cp.seq >= max(seen)
            assert cp.seq > committed or not seen
            committed = cp.seq
            assert all(v["pad"] == "x" * (v["i"] % 7 * 3000) for v in cp.completed.values())


def test_sigkill_during_saves_and_retention_sqlite(tmp_path: object) -> None:
    _trials(os.path.join(str(tmp_path), "p.db"), 12)


@pytest.mark.postgres
def test_sigkill_during_saves_and_retention_postgres(pg_db: str) -> None:
    _trials(pg_db, 8)


@pytest.mark.postgres
def test_sigkill_during_saves_postgres_durability_normal(pg_db: str) -> None:
    # synchronous_commit off: a commit may return before the server flushed its
    # WAL, but the server still has it, so killing the saving process loses
    # nothing that committed (only a crash of the server or its machine could).
    _trials(pg_db, 8, durability="normal")

"""Bugs found by reviewing core v2, each reproduced against the real stores."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pitstop import (
    CheckpointManager,
    MemoryStore,
    SqlStore,
    StaleBaseError,
    StoreError,
    SyncCheckpointManager,
)
from pitstop.storage import _backends, _programs
from pitstop.storage._programs import Call
from pitstop.storage._queries import POSTGRES


@pytest.mark.postgres
def test_postgres_save_racing_a_delete_is_refused(pg_db: str) -> None:
    """The save waited for a delete to commit: it must not write a delta on a chain now gone."""
    with SqlStore(pg_db) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.on_node_start(node_id="a")
        m.on_node_finish(node_id="a", output=1)
        m.save_checkpoint()
        m.save_checkpoint()
        other = psycopg.connect(pg_db, autocommit=True)
        deleted, go = threading.Event(), threading.Event()

        def deleter() -> None:
            with other.transaction():
                _backends.drive(other.cursor(), POSTGRES, _programs.delete("r", None))
                deleted.set()
                go.wait()

        t = threading.Thread(target=deleter)
        t.start()
        deleted.wait()
        result: dict[str, Any] = {}

        def save() -> None:
            try:
                result["info"] = m.save_checkpoint()
            except StaleBaseError as exc:
                result["error"] = exc

        s = threading.Thread(target=save)
        s.start()
        time.sleep(0.5)  # the save now waits for the run row's lock
        go.set()
        t.join()
        s.join()
        other.close()
        assert isinstance(result.get("error"), StaleBaseError)
        fresh = SyncCheckpointManager("r", store=store, enabled=True)
        assert fresh.can_resume() is False  # everything was deleted; nothing half-written
        info = fresh.save_checkpoint()
        assert info.parent_seq is None and fresh.load_checkpoint().seq == info.seq


def test_errors_with_nul_or_lone_surrogates_are_stored(store: Any) -> None:
    m = SyncCheckpointManager("r", store=store, enabled=True)
    m.on_node_start(node_id="a")
    m.on_node_error(node_id="a", error=ValueError("bad\x00byte \ud800"))
    m.on_run_end(success=False, error=RuntimeError("nul\x00"))
    cp = m.load_checkpoint()
    assert cp.failed == {"a": "ValueError: bad\\x00byte \\ud800"}
    run = m.run_info()
    assert run is not None and run.status == "failed" and run.error == "RuntimeError: nul\\x00"


def test_queued_saves_write_their_own_state(tmp_path: Path) -> None:
    """Arguments of a save queued behind another apply when its turn comes."""
    with SqlStore(tmp_path / "p.db") as store:
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.save_checkpoint(state="first")
        started, release = threading.Event(), threading.Event()
        real = store.execute

        def slow(call: Call[Any]) -> Any:
            if call.name == "save" and not started.is_set():
                started.set()
                release.wait()
            return real(call)

        store.execute = slow  # type: ignore[method-assign]
        blocker = threading.Thread(target=m.save_checkpoint, kwargs={"state": "X", "label": "X"})
        blocker.start()
        started.wait()  # the blocker holds the manager's writer lock
        queued = [
            threading.Thread(target=m.save_checkpoint, kwargs={"state": s, "label": s})
            for s in ("A", "B")
        ]
        for t in queued:
            t.start()
            time.sleep(0.05)  # both queue behind the blocker
        release.set()
        for t in (blocker, *queued):
            t.join()
        store.execute = real  # type: ignore[method-assign]
        infos = m.list_checkpoints()[1:]
        assert sorted(i.label or "" for i in infos) == ["A", "B", "X"]
        for info in infos:
            assert m.load_checkpoint(info.seq).state == info.label


async def test_cancel_then_failed_save_still_reports_the_cancel(tmp_path: Path) -> None:
    with MemoryStore() as plain, SqlStore(tmp_path / "p.db") as store:
        del plain
        m = CheckpointManager("r", store=store, enabled=True)

        def failing(call: Call[Any]) -> Any:
            time.sleep(0.2)
            raise StoreError("disk I/O error")

        store.execute = failing  # type: ignore[method-assign]
        task = asyncio.create_task(m.save_checkpoint())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()


def test_a_failed_commit_does_not_leave_the_store_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rollback-journal mode: COMMIT fails while a reader holds its lock; the store recovers."""
    db = tmp_path / "p.db"
    with SqlStore(db) as store:
        SyncCheckpointManager("init", store=store, enabled=True).save_checkpoint()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    monkeypatch.setattr(_backends, "BUSY_TIMEOUT_MS", 200)
    with SqlStore(db) as store:
        m = SyncCheckpointManager("r", store=store, enabled=True)
        m.save_checkpoint()
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM pitstop_checkpoints").fetchall()
        with pytest.raises(StoreError, match="locked"):
            m.save_checkpoint()
        reader.execute("COMMIT")
        reader.close()
        assert m.save_checkpoint().seq == 2
        assert [i.seq for i in m.list_checkpoints()] == [1, 2]
        with SqlStore(db) as other:
            assert SyncCheckpointManager("o", store=other, enabled=True).save_checkpoint().seq == 1

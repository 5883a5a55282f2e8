"""The store's threads (``StoreThreads``): where async transactions run."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pitstop import CheckpointManager, SqlStore
from pitstop.storage._threads import StoreThreads


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_calls_run_off_the_loop_in_order_and_return_their_outcome() -> None:
    threads = StoreThreads(1, "pitstop-test")
    seen: list[tuple[int, str]] = []

    def call(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    async def main() -> list[int]:
        futures = [threads.submit(call, i) for i in range(5)]
        return list(await asyncio.gather(*futures))

    try:
        assert _run(main()) == [0, 10, 20, 30, 40]
    finally:
        threads.shutdown()
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"pitstop-test_0"}


def test_an_error_reaches_the_caller_as_raised() -> None:
    threads = StoreThreads(1, "pitstop-test")

    def fail() -> None:
        raise KeyError("gone")

    async def main() -> None:
        with pytest.raises(KeyError, match="gone"):
            await threads.submit(fail)
        assert await threads.submit(lambda: 7) == 7  # the thread survives it

    try:
        _run(main())
    finally:
        threads.shutdown()


def test_at_most_workers_threads_and_they_run_at_once() -> None:
    threads = StoreThreads(3, "pitstop-test")
    barrier = threading.Barrier(3, timeout=2)  # broken unless three calls run together

    async def main() -> None:
        for _ in range(20):  # one after another: one thread serves them all
            await threads.submit(time.sleep, 0)
        # then three at once: they still get three threads (an idle count that grew
        # with every call, as ThreadPoolExecutor's does, would start none)
        assert await asyncio.gather(*(threads.submit(barrier.wait) for _ in range(3)))
        await asyncio.gather(*(threads.submit(time.sleep, 0.001) for _ in range(20)))

    try:
        _run(main())
        assert len(threads._shared.threads) == 3
    finally:
        threads.shutdown()


def test_one_idle_thread_serves_calls_one_after_another() -> None:
    threads = StoreThreads(4, "pitstop-test")

    async def main() -> None:
        for i in range(10):
            assert await threads.submit(lambda i=i: i) == i

    try:
        _run(main())
        assert len(threads._shared.threads) == 1  # never more than one call was waiting
    finally:
        threads.shutdown()


def test_a_call_cancelled_once_started_finishes_and_its_outcome_is_dropped_quietly() -> None:
    threads = StoreThreads(1, "pitstop-test")
    started, release, ran = threading.Event(), threading.Event(), threading.Event()
    problems: list[dict[str, Any]] = []

    def call() -> str:
        started.set()
        release.wait(5)
        ran.set()
        return "late"

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        future = threads.submit(call)
        assert await asyncio.to_thread(started.wait, 5)
        future.cancel()
        release.set()
        assert await threads.submit(lambda: "next") == "next"  # FIFO: after call's outcome
        await asyncio.sleep(0)  # let the loop run the callback that drops it
        assert future.cancelled()

    try:
        _run(main())
    finally:
        threads.shutdown()
    assert ran.is_set()
    assert problems == []


def test_a_call_cancelled_before_it_starts_does_not_run() -> None:
    # As with run_in_executor: the LangGraph adapter awaits its hop unshielded, and
    # a cancelled aput that never started must not write anyway.
    threads = StoreThreads(1, "pitstop-test")
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = threads.submit(release.wait, 5)
        queued = threads.submit(ran.append, "write")
        queued.cancel()
        release.set()
        assert await first is True
        assert await threads.submit(lambda: "after") == "after"  # FIFO: queued was taken
        assert queued.cancelled()

    try:
        _run(main())
    finally:
        threads.shutdown()
    assert ran == []


def test_a_thread_that_cannot_start_fails_the_call_and_the_next_one_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = StoreThreads(1, "pitstop-test")
    ran: list[str] = []
    start = threading.Thread.start
    failures = iter([RuntimeError("can't start new thread")])

    def flaky(thread: threading.Thread) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", flaky)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="can't start"):
            threads.submit(ran.append, "first")
        await threads.submit(ran.append, "second")

    try:
        _run(main())
    finally:
        threads.shutdown()  # nothing half-started to join
    assert ran == ["second"]  # the failed call never runs
    assert len(threads._shared.threads) == 1


def test_threads_of_a_dropped_owner_end() -> None:
    threads = StoreThreads(2, "pitstop-test")

    async def main(owner: StoreThreads) -> None:
        await asyncio.gather(owner.submit(time.sleep, 0.01), owner.submit(time.sleep, 0.01))

    _run(main(threads))
    workers = list(threads._shared.threads)
    assert len(workers) == 2
    del threads
    gc.collect()
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()


def test_closing_a_store_from_its_own_thread_is_refused(tmp_path: Path) -> None:
    store = SqlStore(tmp_path / "a.db")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="its own thread"):
            await store.hop(store.close)
        async with CheckpointManager("r", store=store, enabled=True) as m:
            assert (await m.save_checkpoint()).seq == 1  # still open, still served

    try:
        _run(main())
    finally:
        store.close()


def test_an_outcome_for_a_closed_loop_is_dropped_and_the_thread_lives_on() -> None:
    threads = StoreThreads(1, "pitstop-test")
    release, done = threading.Event(), threading.Event()

    def call() -> None:
        release.wait(5)
        done.set()

    loop = asyncio.new_event_loop()

    async def start() -> None:
        threads.submit(call)

    loop.run_until_complete(start())
    loop.close()
    release.set()
    assert done.wait(5)

    async def again() -> int:
        return await threads.submit(lambda: 3)

    try:
        assert _run(again()) == 3
    finally:
        threads.shutdown()


def test_shutdown_lets_submitted_calls_finish_then_refuses_more() -> None:
    threads = StoreThreads(2, "pitstop-test")
    finished: list[int] = []

    def slow(i: int) -> None:
        time.sleep(0.05)
        finished.append(i)

    async def main() -> None:
        for i in range(4):
            threads.submit(slow, i)
        threads.shutdown()
        assert sorted(finished) == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match="shut down"):
            threads.submit(slow, 9)

    _run(main())
    threads.shutdown()  # idempotent
    assert not any(t.is_alive() for t in threads._shared.threads)


def test_submit_needs_a_running_loop() -> None:
    threads = StoreThreads(1, "pitstop-test")
    with pytest.raises(RuntimeError):
        threads.submit(lambda: None)
    with pytest.raises(ValueError):
        StoreThreads(0, "pitstop-test")


def test_a_store_hops_again_after_close(tmp_path: Path) -> None:
    store = SqlStore(tmp_path / "a.db")

    async def save() -> int:
        async with CheckpointManager("r", store=store, enabled=True) as m:
            return (await m.save_checkpoint()).seq

    try:
        assert _run(save()) == 1
        first = store._threads
        assert first is not None
        store.close()
        assert store._threads is None
        assert not any(t.is_alive() for t in first._shared.threads)
        assert _run(save()) == 2  # reopened, with threads of its own
        assert store._threads is not None and store._threads is not first
    finally:
        store.close()


def test_interpreter_exit_waits_for_a_submitted_call(tmp_path: Path) -> None:
    # A call nobody awaits any more still finishes before the process exits (the
    # threads are daemons; the exit hook drains them), and before atexit handlers
    # run, as with a ThreadPoolExecutor.
    marker, seen = tmp_path / "done", tmp_path / "seen"
    code = f"""
import asyncio, atexit, pathlib, time
from pitstop.storage._threads import StoreThreads

threads = StoreThreads(1, "t")
marker, seen = pathlib.Path({str(marker)!r}), pathlib.Path({str(seen)!r})

def slow():
    time.sleep(0.3)
    marker.write_text("ok")

@atexit.register
def look():
    seen.write_text("done" if marker.exists() else "still running")

async def main():
    threads.submit(slow)

asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert marker.read_text() == "ok"
    assert seen.read_text() == "done"

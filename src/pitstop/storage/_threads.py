"""The store's threads: where the async manager's transactions run.

A FIFO of calls served by at most ``workers`` threads, each call handing its
outcome to an asyncio future on the loop that asked. It replaces
``loop.run_in_executor`` on a ``ThreadPoolExecutor``: a round trip of an empty
call took 24 against 61 µs p50 (5,000 interleaved pairs, one process), because
it makes no ``concurrent.futures.Future`` to chain to the asyncio one (a
condition variable, callbacks, and a copy of its state on the loop). A save
hops once, so each async save is that much cheaper.

What the executor did, this does too: a call whose future is cancelled before
the call starts does not run; the threads hold no strong reference to the
object that owns them, so one dropped without ``shutdown()`` lets them go; and
at interpreter exit every call already submitted finishes before ``atexit``
handlers run (the hook ``concurrent.futures`` uses, ``threading._register_atexit``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand over the outcome, unless the future was cancelled meanwhile."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Shared:
    """What the threads use: the queue, and under ``lock`` the calls submitted and
    not yet taken and the threads waiting for one (or about to). Not the owner
    itself, so that the threads do not keep it alive."""

    __slots__ = ("lock", "pending", "queue", "threads", "waiting")

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.pending = self.waiting = 0
        self.threads: list[threading.Thread] = []


def _work(shared: _Shared) -> None:
    get, lock = shared.queue.get, shared.lock
    while True:
        item = get()
        if item is None:
            return
        with lock:
            shared.pending -= 1
            shared.waiting -= 1
        loop, future, fn, args = item
        del item
        result: Any = None
        error: BaseException | None = None
        # Cancelled before it started (a caller that did not shield it): not run.
        if not future.cancelled():
            try:
                result = fn(*args)
            except BaseException as exc:  # the caller's to see, whatever it is
                error = exc
        with lock:  # waiting again before the caller hears back (and submits more)
            shared.waiting += 1
        # A closed loop raises RuntimeError: nobody waits for this outcome.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future, result, error)
        del loop, future, fn, args, result, error


def _stop(shared: _Shared) -> None:
    """The owner is gone (collected or shut down): one stop per thread, after the
    calls already queued."""
    with shared.lock:
        count = len(shared.threads)
    for _ in range(count):
        shared.queue.put(None)


_LIVE: weakref.WeakSet[StoreThreads] = weakref.WeakSet()


def _drain() -> None:
    """At interpreter exit, let every call already submitted finish (the threads are
    daemons, which would otherwise stop wherever they are, as a crash would)."""
    for threads in list(_LIVE):
        threads.shutdown()


# Before atexit handlers and the join of non-daemon threads, as concurrent.futures
# does; plain atexit where this interpreter has no such hook.
getattr(threading, "_register_atexit", atexit.register)(_drain)


class StoreThreads:
    """Up to ``workers`` threads, started as calls arrive and none is idle."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._workers, self._name = workers, name
        self._shared = _Shared()
        self._closed = False
        self._stopper = weakref.finalize(self, _stop, self._shared)
        _LIVE.add(self)

    def submit(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Run ``fn(*args)`` on one of the threads; its outcome arrives in the future.

        Call from a running event loop. Calls run in the order submitted (up to
        ``workers`` at once). Cancelling the future before the call starts keeps it
        from running; once started, it runs to its end and its outcome is dropped.

        Raises:
            RuntimeError: after ``shutdown()``, with no running loop, or when no
                thread can be started (then the call does not run).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        shared = self._shared
        with shared.lock:
            if self._closed:
                raise RuntimeError("the store's threads were shut down")
            shared.queue.put((loop, future, fn, args))
            shared.pending += 1
            if shared.pending > shared.waiting and len(shared.threads) < self._workers:
                thread = threading.Thread(
                    target=_work,
                    args=(shared,),
                    name=f"{self._name}_{len(shared.threads)}",
                    daemon=True,
                )
                try:
                    thread.start()
                except BaseException:
                    future.cancel()  # still queued: a thread that takes it skips it
                    raise
                shared.waiting += 1
                shared.threads.append(thread)
        return future

    def shutdown(self) -> None:
        """Let every submitted call finish, then stop the threads; idempotent.

        Raises:
            RuntimeError: called from one of these threads (it would wait for
                itself, or leave the calls queued behind it to run afterwards).
        """
        shared = self._shared
        current = threading.current_thread()
        with shared.lock:
            if current in shared.threads:
                raise RuntimeError("the store cannot be closed from its own thread")
            self._closed = True
            threads = list(shared.threads)
        self._stopper()  # one stop per thread, once
        for thread in threads:
            thread.join()

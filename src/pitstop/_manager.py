"""CheckpointManager: the manager for async runners.

Store calls hop once per transaction onto the store's own thread (no event
loop is tied to a store, so the manager works from any loop); a SQLite read
that nothing can make wait runs inline (``Store.execute_now``). A transaction
that started always finishes: if the caller is cancelled meanwhile, the
manager waits for the commit (or rollback), keeps its bookkeeping in step
with the database, and then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from ._context import AsyncClosing
from ._errors import EventLoopMismatch
from ._ops import DEFAULT_STORE, ManagerBase
from ._program import Program, Work

__all__ = ["DEFAULT_STORE", "CheckpointManager"]

R = TypeVar("R")


async def _settle(future: asyncio.Future[Any]) -> tuple[Any, BaseException | None]:
    """Wait for a transaction already under way, whatever cancels arrive meanwhile."""
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except BaseException:
            break
    exc = future.exception()
    return (None, exc) if exc is not None else (future.result(), None)


class CheckpointManager(ManagerBase, AsyncClosing):
    """Checkpoints for one run of an async runner, saved only when ``save_checkpoint``
    is called (by you or by a policy in a hook).

    Use it as ``async with CheckpointManager(...) as mgr:`` (or call ``aclose()``).
    Saves, restores, deletes and prunes of one manager run one at a time.
    """

    _offload = True

    def _setup(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _io_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            if self._lock is not None and self._lock.locked():
                raise EventLoopMismatch(
                    f"{self!r} is busy on another event loop; use one manager per loop, "
                    "or SyncCheckpointManager from threads"
                )
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    _METHOD = """
    async def {name}({params}):
        running = _program({call})
        return None if running is None else await self._run(running)
    """

    async def _run(self, program: Program[R]) -> R:
        async with self._io_lock():
            loop = asyncio.get_running_loop()
            result: Any = None
            error: BaseException | None = None
            cancelled: BaseException | None = None
            while True:
                try:
                    call = program.send(result) if error is None else program.throw(error)
                except StopIteration as stop:
                    if cancelled is not None:
                        raise cancelled from None
                    return stop.value  # type: ignore[no-any-return]
                except BaseException as exc:
                    if cancelled is not None and exc is not cancelled:
                        raise cancelled from exc  # the caller was cancelled: say so
                    raise
                if cancelled is not None:  # cancelled during the last call: start no new one
                    result, error = None, cancelled
                    continue
                if isinstance(call, Work):
                    # CPU work (a large output's encoding) runs off the loop; like a
                    # transaction, once started it finishes and is recorded.
                    future = loop.run_in_executor(None, call.fn, *call.args)
                else:
                    store = self._get_store()  # not before: a program may need no store
                    try:
                        if not store.hops:
                            result, error = store.execute(call), None
                            continue
                        done, result = store.execute_now(call)  # a read nothing can stall
                        if done:
                            error = None
                            continue
                    except BaseException as exc:
                        result, error = None, exc
                        continue
                    future = store.hop(store.execute, call)
                try:
                    result, error = await asyncio.shield(future), None
                except asyncio.CancelledError as exc:
                    result, error = await _settle(future)
                    cancelled = exc
                except BaseException as exc:
                    result, error = None, exc

    async def aclose(self) -> None:
        """Close the store if the manager opened it; a Store you passed stays open."""
        self._release_store()

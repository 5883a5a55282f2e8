"""SyncCheckpointManager: the manager for sync runners (plain functions, any thread).

It needs no event loop, starts none, and works from a thread that is already
running one (a sync runner called from async code or Jupyter). Hooks that do
not save only update bookkeeping; a save calls the store on the caller's thread.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from ._context import Closing
from ._ops import ManagerBase
from ._program import Program, Work

R = TypeVar("R")


class SyncCheckpointManager(ManagerBase, Closing):
    """Checkpoints for one run of a sync runner; the same methods as ``CheckpointManager``.

    Use it as ``with SyncCheckpointManager(...) as mgr:`` (or call ``close()``).
    Every method may be called from any thread; saves, restores, deletes and
    prunes of one manager run one at a time.
    """

    def _setup(self) -> None:
        self._io = threading.RLock()

    _METHOD = """
    def {name}({params}):
        running = _program({call})
        return None if running is None else self._run(running)
    """

    def _run(self, program: Program[R]) -> R:
        with self._io:
            result: Any = None
            error: BaseException | None = None
            while True:
                try:
                    call = program.send(result) if error is None else program.throw(error)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                try:
                    if isinstance(call, Work):
                        result, error = call.fn(*call.args), None
                        continue
                    store = self._get_store()  # not before: a program may need no store
                    result, error = store.execute(call), None
                except BaseException as exc:
                    result, error = None, exc

    def close(self) -> None:
        """Close the store if the manager opened it; a Store you passed stays open."""
        with self._io:
            self._release_store()

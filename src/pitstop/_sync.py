"""SyncCheckpointManager: the manager for sync runners (plain functions, any thread).

It needs no event loop, starts none, and works from a thread that is already
running one (a sync runner called from async code or Jupyter). Hooks that do
not save only update bookkeeping; a save calls the store on the caller's thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from ._ops import ManagerBase, Program

P = ParamSpec("P")
R = TypeVar("R")


class _op(Generic[P, R]):
    """Declares a sync method that runs a ``ManagerBase`` program (typed for mypy).

    At class creation it replaces itself with a plain function, so a call costs
    what a method call costs.
    """

    def __init__(self, program: Callable[Concatenate[ManagerBase, P], Program[R] | None]) -> None:
        self.program = program

    def __set_name__(self, owner: type[SyncCheckpointManager], name: str) -> None:
        program = self.program

        @functools.wraps(program)
        def method(self: SyncCheckpointManager, /, *args: Any, **kwargs: Any) -> Any:
            return self._run(program(self, *args, **kwargs))

        method.__name__, method.__qualname__ = name, f"{owner.__qualname__}.{name}"
        setattr(owner, name, method)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncCheckpointManager, owner: type[Any]) -> Callable[P, R]: ...
    def __get__(self, obj: object, owner: type[Any]) -> Any:
        raise AssertionError("replaced at class creation")  # pragma: no cover


class SyncCheckpointManager(ManagerBase):
    """Checkpoints for one run of a sync runner; the same methods as ``CheckpointManager``.

    Use it as ``with SyncCheckpointManager(...) as mgr:`` (or call ``close()``).
    Every method may be called from any thread; saves, restores, deletes and
    prunes of one manager run one at a time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._io = threading.RLock()

    def _run(self, program: Program[R] | None) -> R | None:
        if program is None:
            return None
        with self._io:
            store = self._get_store()
            result: Any = None
            error: BaseException | None = None
            while True:
                try:
                    call = program.send(result) if error is None else program.throw(error)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                try:
                    result, error = store.execute(call), None
                except BaseException as exc:
                    result, error = None, exc

    def close(self) -> None:
        """Close the store if the manager opened it; a Store you passed stays open."""
        with self._io:
            self._release_store()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    save_checkpoint = _op(ManagerBase._save_checkpoint)
    restore_checkpoint = _op(ManagerBase._restore_checkpoint)
    load_checkpoint = _op(ManagerBase._load_checkpoint)
    can_resume = _op(ManagerBase._can_resume)
    run_info = _op(ManagerBase._run_info)
    list_checkpoints = _op(ManagerBase._list_checkpoints)
    delete = _op(ManagerBase._delete)
    prune = _op(ManagerBase._prune)
    on_run_start = _op(ManagerBase._on_run_start)
    on_node_start = _op(ManagerBase._on_node_start)
    on_node_finish = _op(ManagerBase._on_node_finish)
    on_node_error = _op(ManagerBase._on_node_error)
    on_run_pause = _op(ManagerBase._on_run_pause)
    on_run_end = _op(ManagerBase._on_run_end)

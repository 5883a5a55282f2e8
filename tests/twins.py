"""Both managers behind one awaitable view, so one test body runs on both twins."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pitstop import CheckpointManager, SyncCheckpointManager


class Twin:
    """Either manager behind awaitable methods, so one test body runs on both twins."""

    def __init__(self, manager: CheckpointManager | SyncCheckpointManager) -> None:
        self.m = manager

    @property
    def is_sync(self) -> bool:
        return isinstance(self.m, SyncCheckpointManager)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.m, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call

    async def close(self) -> None:
        if isinstance(self.m, SyncCheckpointManager):
            self.m.close()
        else:
            await self.m.aclose()


MakeTwin = Callable[..., Twin]

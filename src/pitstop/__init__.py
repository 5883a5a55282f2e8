"""pitstop: zero-overhead, opt-in checkpoints for workflow runners."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    CheckpointingDisabled,
    CheckpointNotFound,
    CorruptCheckpoint,
    EventLoopMismatch,
    GraphMismatch,
    PitstopError,
    SchemaVersionError,
    SerializationError,
    StaleBaseError,
    StoreError,
)
from ._events import CheckpointEvent, Observer
from ._hooks import RunnerHooks, SyncRunnerHooks
from ._manager import CheckpointManager
from ._ops import DEFAULT_STORE
from ._policy import CheckpointPolicy
from ._serde import JsonSerializer, PickleSerializer, Serializer
from ._sync import SyncCheckpointManager
from ._types import (
    Checkpoint,
    CheckpointInfo,
    NodeState,
    NodeStatus,
    RunInfo,
    RunStatus,
    Undecoded,
)

if TYPE_CHECKING:
    from .storage.sql import MemoryStore, SqlStore, Store, open_store

_STORAGE = ("MemoryStore", "SqlStore", "Store", "open_store")


def __getattr__(name: str) -> Any:
    # Stores load on first use: a disabled manager never imports a database driver.
    if name in _STORAGE:
        from .storage import sql

        return getattr(sql, name)
    raise AttributeError(f"module 'pitstop' has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "CheckpointEvent",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointNotFound",
    "CheckpointPolicy",
    "CheckpointingDisabled",
    "CorruptCheckpoint",
    "DEFAULT_STORE",
    "EventLoopMismatch",
    "GraphMismatch",
    "JsonSerializer",
    "MemoryStore",
    "NodeState",
    "NodeStatus",
    "Observer",
    "PickleSerializer",
    "PitstopError",
    "RunInfo",
    "RunStatus",
    "RunnerHooks",
    "SchemaVersionError",
    "SerializationError",
    "Serializer",
    "SqlStore",
    "StaleBaseError",
    "Store",
    "StoreError",
    "SyncCheckpointManager",
    "SyncRunnerHooks",
    "Undecoded",
    "open_store",
]

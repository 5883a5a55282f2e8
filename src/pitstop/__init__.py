"""pitstop: zero-overhead, opt-in checkpoints for workflow runners."""

from ._errors import (
    CheckpointingDisabled,
    CheckpointNotFound,
    CorruptCheckpoint,
    GraphMismatch,
    PitstopError,
    SchemaVersionError,
    SerializationError,
    StaleBaseError,
    StoreError,
)
from ._events import CheckpointEvent, Observer
from ._hooks import RunnerHooks
from ._manager import DEFAULT_STORE, CheckpointManager
from ._policy import CheckpointPolicy
from ._serde import JsonSerializer, PickleSerializer, Serializer
from ._types import Checkpoint, CheckpointInfo, NodeState, NodeStatus, RunInfo
from .storage.base import Store
from .storage.memory import MemoryStore
from .storage.sql import SqlStore, open_store

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
    "GraphMismatch",
    "JsonSerializer",
    "MemoryStore",
    "NodeState",
    "NodeStatus",
    "Observer",
    "PickleSerializer",
    "PitstopError",
    "RunInfo",
    "RunnerHooks",
    "SchemaVersionError",
    "SerializationError",
    "Serializer",
    "SqlStore",
    "StaleBaseError",
    "Store",
    "StoreError",
    "open_store",
]

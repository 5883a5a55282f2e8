"""The public surface: exactly these names, sorted, all importable."""

import pitstop

EXPECTED = {
    "DEFAULT_STORE",
    "Checkpoint",
    "CheckpointEvent",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointNotFound",
    "CheckpointPolicy",
    "CheckpointingDisabled",
    "CorruptCheckpoint",
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
}


def test_exported_names_are_exactly_the_public_surface() -> None:
    assert set(pitstop.__all__) == EXPECTED
    assert pitstop.__all__ == sorted(pitstop.__all__)
    for name in pitstop.__all__:
        assert getattr(pitstop, name) is not None


def test_error_tree() -> None:
    for name in (
        "CheckpointNotFound",
        "CorruptCheckpoint",
        "SchemaVersionError",
        "SerializationError",
        "StoreError",
        "GraphMismatch",
        "CheckpointingDisabled",
    ):
        assert issubclass(getattr(pitstop, name), pitstop.PitstopError)
    assert issubclass(pitstop.StaleBaseError, pitstop.StoreError)
    assert issubclass(pitstop.CheckpointNotFound, LookupError)


def test_memory_store_satisfies_store_protocol() -> None:
    assert isinstance(pitstop.MemoryStore(), pitstop.Store)
    mgr = pitstop.CheckpointManager("r")
    assert isinstance(mgr, pitstop.RunnerHooks)

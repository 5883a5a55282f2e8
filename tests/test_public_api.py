"""The public surface: exactly these names, sorted, all importable."""

import inspect

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
        "EventLoopMismatch",
    ):
        assert issubclass(getattr(pitstop, name), pitstop.PitstopError)
    assert issubclass(pitstop.StaleBaseError, pitstop.StoreError)
    assert issubclass(pitstop.CheckpointNotFound, LookupError)


def test_stores_and_hook_protocols() -> None:
    with pitstop.MemoryStore() as store:
        assert isinstance(store, pitstop.Store)
    assert isinstance(pitstop.SqlStore("x.db"), pitstop.Store)  # nothing opened, no file
    assert isinstance(pitstop.CheckpointManager("r"), pitstop.RunnerHooks)
    assert isinstance(pitstop.SyncCheckpointManager("r"), pitstop.SyncRunnerHooks)


def test_twins_have_the_same_methods_with_the_same_docs() -> None:
    names = [n for n in dir(pitstop.SyncCheckpointManager) if not n.startswith("_")]
    names.remove("close")  # the async twin closes with `await aclose()`
    assert callable(pitstop.CheckpointManager.aclose)
    for name in names:
        sync, asyn = (
            getattr(pitstop.SyncCheckpointManager, name),
            getattr(pitstop.CheckpointManager, name),
        )
        assert getattr(sync, "__doc__", None) == getattr(asyn, "__doc__", None), name
    for name in ("save_checkpoint", "restore_checkpoint", "on_node_finish", "on_run_end"):
        assert name in names
        assert inspect.iscoroutinefunction(getattr(pitstop.CheckpointManager, name))
        assert not inspect.iscoroutinefunction(getattr(pitstop.SyncCheckpointManager, name))

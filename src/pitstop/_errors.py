"""The pitstop error tree.

::

    PitstopError
    ├── CheckpointNotFound     (also LookupError)  .run_id .seq
    ├── CorruptCheckpoint                          .run_id .seq .reason
    ├── SchemaVersionError                         .found .supported .run_id .seq
    ├── SerializationError                         .tag .node_id
    ├── GraphMismatch                              .run_id .added .removed .changed
    ├── CheckpointingDisabled                      .run_id (save on a disabled manager)
    └── StoreError                                 backend failures, wrapped with ``from``
        └── StaleBaseError                         a delta save raced another writer

Misuse of the API (bad arguments) raises ``ValueError`` / ``TypeError`` instead.
"""

from __future__ import annotations

from collections.abc import Collection


class PitstopError(Exception):
    """Base class of every error pitstop raises on purpose."""


class CheckpointNotFound(PitstopError, LookupError):
    """No checkpoint exists for ``run_id`` (at ``seq``, when given)."""

    def __init__(self, run_id: str, seq: int | None = None) -> None:
        self.run_id = run_id
        self.seq = seq
        where = f"run {run_id!r}" if seq is None else f"run {run_id!r} seq {seq}"
        super().__init__(f"no checkpoint for {where}")


class CorruptCheckpoint(PitstopError):
    """A stored checkpoint failed verification (checksum or decoding)."""

    def __init__(self, run_id: str, seq: int, reason: str) -> None:
        self.run_id = run_id
        self.seq = seq
        self.reason = reason
        super().__init__(f"checkpoint run {run_id!r} seq {seq} is corrupt: {reason}")


class SchemaVersionError(PitstopError):
    """Stored data was written by a schema version this pitstop cannot read."""

    def __init__(
        self, found: int, supported: int, *, run_id: str | None = None, seq: int | None = None
    ) -> None:
        self.found = found
        self.supported = supported
        self.run_id = run_id
        self.seq = seq
        where = "" if run_id is None else f" (run {run_id!r} seq {seq})"
        super().__init__(
            f"schema version {found} is newer than the supported version {supported}{where}; "
            "upgrade pitstop to read it"
        )


class SerializationError(PitstopError):
    """A value could not be encoded or decoded by the serializer."""

    def __init__(self, message: str, *, tag: str, node_id: str | None = None) -> None:
        self.message = message
        self.tag = tag
        self.node_id = node_id
        where = "" if node_id is None else f" (node {node_id!r})"
        super().__init__(f"[{tag}] {message}{where}")


class GraphMismatch(PitstopError):
    """The graph given at run start differs from the graph in the restored checkpoint."""

    def __init__(
        self,
        run_id: str,
        *,
        added: Collection[str] = (),
        removed: Collection[str] = (),
        changed: Collection[str] = (),
    ) -> None:
        self.run_id = run_id
        self.added = tuple(sorted(added))
        self.removed = tuple(sorted(removed))
        self.changed = tuple(sorted(changed))
        super().__init__(
            f"graph of run {run_id!r} differs from its checkpoint: added={list(self.added)} "
            f"removed={list(self.removed)} dependencies changed={list(self.changed)}"
        )


class StoreError(PitstopError):
    """The storage backend failed; the original exception is the ``__cause__``."""


class StaleBaseError(StoreError):
    """A delta save named a base checkpoint that is no longer the run's latest."""

    def __init__(self, run_id: str, base_seq: int, latest_seq: int | None) -> None:
        self.run_id = run_id
        self.base_seq = base_seq
        self.latest_seq = latest_seq
        super().__init__(
            f"run {run_id!r}: delta against seq {base_seq} but the latest is {latest_seq}"
        )


class CheckpointingDisabled(PitstopError):
    """``save_checkpoint`` was called on a manager whose ``enabled`` is False."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"checkpointing is disabled for run {run_id!r}; create the manager with "
            "enabled=True (or set manager.enabled = True) to save"
        )

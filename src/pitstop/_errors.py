"""The pitstop error tree.

::

    PitstopError
    ├── CheckpointNotFound     (also LookupError)  .run_id .seq
    ├── CorruptCheckpoint                          .run_id .seq .reason
    ├── SchemaVersionError                         .found .supported .run_id .seq
    ├── SerializationError                         .tag .node_id .path
    │   └── EncryptionKeyError                     .key_id: a key missing or wrong
    ├── GraphMismatch                              .run_id .added .removed .changed
    ├── CheckpointingDisabled                      .run_id (I/O on a disabled manager)
    ├── EventLoopMismatch      (also RuntimeError) an async manager busy on another loop
    └── StoreError                                 backend failures, wrapped with ``from``
        └── StaleBaseError                         .run_id .expected .found: another
                                                   writer saved the run meanwhile

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
    """A value could not be encoded or decoded by the serializer.

    ``path`` is where inside the value the problem is (keys and indexes, outermost
    first; empty for the value itself or when unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        tag: str,
        node_id: str | None = None,
        path: tuple[object, ...] = (),
    ) -> None:
        self.message = message
        self.tag = tag
        self.node_id = node_id
        self.path = path
        named = node_id is None or f"node {node_id!r}" in message
        super().__init__(f"[{tag}] {message}" + ("" if named else f" (node {node_id!r})"))

    def about(self, prefix: str, node_id: str | None) -> SerializationError:
        """The same error, its message prefixed (e.g. with the node it concerns)."""
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)  # a subclass's own fields (key_id) come along
        SerializationError.__init__(out, f"{prefix}{self.message}", tag=self.tag,
                                    node_id=node_id, path=self.path)  # fmt: skip
        return out


class EncryptionKeyError(SerializationError):
    """A payload's key is missing, or does not open it. ``key_id`` names the key."""

    def __init__(self, key_id: str, message: str) -> None:
        self.key_id = key_id
        super().__init__(message, tag=f"aes.{key_id}")


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
    """Another writer saved this run since this manager last saved or restored it.

    Two writers of one run id would fork its history; the second one is refused
    (nothing written) instead. Restore the run to continue from its latest state.
    """

    def __init__(
        self, run_id: str, expected: int | None, found: int | None, *, replaced: int | None = None
    ) -> None:
        """``replaced``: the seq of this manager's base, which now holds another
        checkpoint (its seq was given again after commits were lost)."""
        self.run_id = run_id
        self.expected = expected
        self.found = found
        self.replaced = replaced
        what = "saved" if found is not None else "changed (saved, deleted or pruned)"
        seen = (
            "" if found is None else f" (high-water seq {found}, this manager expected {expected})"
        )
        if replaced is not None:
            seen = (f" (seq {replaced}, this manager's base, now holds another checkpoint: "
                    "its commit was lost and the seq given again)")  # fmt: skip
        super().__init__(
            f"run {run_id!r} was {what} by another writer meanwhile{seen}; nothing was "
            "written: restore it to continue from its latest checkpoint"
        )


class EventLoopMismatch(PitstopError, RuntimeError):
    """An async manager was used from a second event loop while busy on the first."""


class CheckpointingDisabled(PitstopError):
    """A disabled manager was asked to read or write its store (it touches nothing)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"checkpointing is disabled for run {run_id!r}; create the manager with "
            "enabled=True (or set manager.enabled = True) to save or restore"
        )

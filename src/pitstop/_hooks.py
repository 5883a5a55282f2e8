"""The hook protocols a runner calls: ``RunnerHooks`` (async) and ``SyncRunnerHooks``.

A runner guards every call site with the manager's plain ``enabled``
attribute (one truthiness check, no call), or reads it once per run and takes
a hook-free loop. Hooks only update in-memory bookkeeping; storage is written
only when a policy makes a save due (or the run's end records its status).
Every method is optional to call, and keyword-only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RunnerHooks(Protocol):
    """What an async runner may await (``CheckpointManager`` implements it)."""

    async def on_run_start(
        self,
        *,
        graph: Mapping[str, Collection[str]] | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> None:
        """Before the first node runs; graph maps node -> dependencies, fingerprints node ->
        what its output is computed from (stored with it). Raises GraphMismatch."""

    async def on_node_start(self, *, node_id: str, deps: Collection[str] | None = None) -> None:
        """Before a node runs; a failed 'before_nodes' save raises unless on_error='log'."""

    async def on_node_finish(
        self, *, node_id: str, output: Any = None, fingerprint: str | None = None
    ) -> None:
        """After a node succeeded (output captured now); a failed save raises unless 'log'."""

    async def on_node_error(self, *, node_id: str, error: BaseException | str) -> None:
        """After a node raised; only bookkeeping, never a save."""

    async def on_run_pause(self, *, reason: str | None = None) -> None:
        """When the runner pauses; saves if policy.on_pause (failure: as on_node_finish)."""

    async def on_run_end(self, *, success: bool, error: BaseException | None = None) -> None:
        """After the last node; records the outcome, saves on failure, never masks ``error``."""


@runtime_checkable
class SyncRunnerHooks(Protocol):
    """What a sync runner may call (``SyncCheckpointManager`` implements it).

    The same hooks as ``RunnerHooks``, as plain methods; see there for when
    each is called and what a failed save does.
    """

    def on_run_start(
        self,
        *,
        graph: Mapping[str, Collection[str]] | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> None: ...
    def on_node_start(self, *, node_id: str, deps: Collection[str] | None = None) -> None: ...
    def on_node_finish(
        self, *, node_id: str, output: Any = None, fingerprint: str | None = None
    ) -> None: ...
    def on_node_error(self, *, node_id: str, error: BaseException | str) -> None: ...
    def on_run_pause(self, *, reason: str | None = None) -> None: ...
    def on_run_end(self, *, success: bool, error: BaseException | None = None) -> None: ...

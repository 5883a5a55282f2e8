"""Checkpoints for Dask: its local schedulers (a dask ``Callback``) and ``dask.distributed``.

::

    from pitstop.adapters.dask import DaskCheckpoint

    with DaskCheckpoint(mgr):  # mgr: a SyncCheckpointManager; threads, sync, processes
        result = collection.compute()
    (result,) = DaskCheckpoint(mgr).compute(collection, client=client)  # dask.distributed

A task is a node, named by its dask key (``node_id``). Checkpointed: every task
(up to ``max_tasks``, else ``TooManyTasks``) or the tasks of the ``layers=``
named; never data, aliases or randomly named tasks. Each gets a Merkle
fingerprint (its key, what it computes when the key has no dask token, and its
dependencies' fingerprints). On resume the finished tasks are replaced in the
graph by their saved outputs before the scheduler starts, so they never run
again. Local schedulers: the callback and the saves run in the calling process.
``dask.distributed``: the manager lives in the client process, which saves each
checkpointed result as it arrives; the cluster runs nothing of pitstop's. A
disabled manager installs nothing. Details and numbers: docs/adapters/dask.md.
Keys, the tasks chosen and their fingerprints are worked out in ``_dask_graph``.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._sync import SyncCheckpointManager
from ._dask_graph import (
    DaskCheckpointWarning,
    Graph,
    Key,
    Layers,
    Selection,
    TooManyTasks,
    analyse,
    cull,
    dask_module,
    node_id,
    same_graph,
    selection_of,
)

if TYPE_CHECKING:
    from pitstop import Checkpoint

__all__ = [
    "DaskCheckpoint",
    "DaskCheckpointWarning",
    "ResumeReport",
    "TooManyTasks",
    "node_id",
]

logger = logging.getLogger("pitstop.adapters.dask")

DEFAULT_MAX_TASKS = 1_000


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """What ``DaskCheckpoint`` found and did when the run's computation started."""

    run_id: str
    restored_seq: int | None
    """The checkpoint the run resumed from; None for a fresh run."""
    checkpointed: int
    """Tasks of the graph(s) that are checkpointed."""
    skipped: tuple[str, ...]
    """Node ids whose saved output replaced their task: they did not run."""
    stale: Mapping[str, str] = field(default_factory=dict)
    """Node ids completed in the checkpoint that ran again, with why (fingerprint)."""
    unmatched: int = 0
    """Nodes completed in the checkpoint that no task of this graph has (other keys)."""


# --- a run: restore, replace, record -------------------------------------------------


class _Session:
    """One run of the manager: from the first computation to the end of the block
    (``with``) or of ``compute``. Thread-safe: dask may call back from its threads."""

    def __init__(self, manager: SyncCheckpointManager, selection: Selection, limit: int) -> None:
        self.manager = manager
        self.selection = selection
        self.limit = limit
        self.lock = threading.Lock()
        self.started = False
        self.failed = False
        """Whether the last computation failed (a local scheduler says so in ``finish``)."""
        self.ids: dict[Key, str] = {}
        self.fingerprints: dict[Key, str] = {}
        self.found: dict[Key, list[str]] = {}
        """Dependencies of the tasks the run's registered graph lacks (given as they start)."""
        self.saved: dict[str, tuple[str | None, Any]] = {}
        """Node id -> (fingerprint, output) of the completed nodes of the restored checkpoint."""
        self.restored_seq: int | None = None
        self.skipped: list[str] = []
        self.stale: dict[str, str] = {}
        self.unmatched = 0
        self.checkpointed = 0
        self.local = threading.local()
        """``replaced``: the keys the current computation of this thread must not run."""

    def begin(self, dsk: dict[Key, Any]) -> None:
        """Before a computation: replace the finished tasks of ``dsk`` (in place) by
        their saved outputs; on the run's first computation, restore and start it."""
        DataNode = dask_module("dask.task_spec").DataNode
        graph = analyse(dsk, self.selection, self.limit)
        replaced: set[Key] = set()
        self.local.replaced = replaced
        with self.lock:
            registered = not self.started and self._start(graph)
            if not registered:  # a changed graph, or a later computation: found at run time
                self.found.update((k, graph.deps[nid]) for k, nid in graph.ids.items())
            for key, nid in graph.ids.items():
                hit = self.saved.get(nid)
                if hit is None:
                    continue
                if hit[0] == graph.fingerprints[key]:
                    dsk[key] = DataNode(key, hit[1])
                    replaced.add(key)
                    self.skipped.append(nid)
                else:  # only in a later computation: the first one's restore judged its own
                    self.stale.setdefault(nid, "fingerprint changed")
            self.ids.update(graph.ids)
            self.fingerprints.update(graph.fingerprints)
            self.checkpointed = len(self.ids)

    def _start(self, graph: Graph) -> bool:
        """Restore (if the run can resume) and start the run; whether ``graph`` became
        the run's registered graph."""
        mgr = self.manager
        fingerprints = {nid: graph.fingerprints[key] for key, nid in graph.ids.items()}
        cp: Checkpoint | None = None
        if mgr.can_resume():
            cp = mgr.restore_checkpoint(fingerprints=fingerprints)
            nodes = cp.nodes
            self.saved = {n: (nodes[n].fingerprint, out) for n, out in cp.completed.items()}
            self.restored_seq = cp.seq
            self.stale.update(cp.stale)
            known = set(graph.ids.values())
            self.unmatched = sum(1 for n in self.saved if n not in known)
        # The stored graph is kept when it is this one; a changed dask graph has other
        # keys (node ids), which is no conflict: its new tasks register as they start.
        same = cp is None or same_graph(cp.graph, graph.deps)
        if not same and mgr.policy.after_each_level:
            raise ValueError(
                f"run {mgr.run_id!r}: the dask graph differs from the checkpoint's, and "
                "CheckpointPolicy(after_each_level=True) needs one fixed graph for its levels; "
                "use every_n_nodes or every_seconds, or a new run id"
            )
        mgr.on_run_start(graph=graph.deps if same else None, fingerprints=fingerprints)
        self.started = True
        if cp is not None:
            logger.info(
                "run %r resumes from seq %d: %d of %d checkpointed tasks restored, %d stale",
                mgr.run_id, cp.seq, sum(1 for n in graph.ids.values() if n in self.saved),
                len(graph.ids), len(cp.stale),
            )  # fmt: skip
        return same

    def task_started(self, key: Key) -> None:
        nid = self.ids.get(key)
        if nid is not None:
            self.manager.on_node_start(node_id=nid, deps=self.found.get(key))

    def check_not_replaced(self, key: Key) -> None:
        """A local scheduler is about to run ``key``: it must not be one ``begin`` replaced.

        Raises:
            RuntimeError: it is; this dask runs a copy of the graph its ``start``
                callbacks get, so resuming would silently run every task again.
        """
        if key in getattr(self.local, "replaced", ()):
            raise RuntimeError(
                f"dask is running task {key!r}, which pitstop restored from the checkpoint: "
                "this dask version does not run the graph its start callbacks receive, so "
                "the local resume cannot skip tasks (use compute(..., client=...) or report "
                "this dask version)"
            )

    def task_finished(self, key: Key, value: Any) -> None:
        nid = self.ids.get(key)
        if nid is not None:
            self.manager.on_node_finish(
                node_id=nid, output=value, fingerprint=self.fingerprints[key]
            )

    def task_failed(self, key: Key, error: BaseException) -> None:
        nid = self.ids.get(key)
        if nid is not None:
            self.manager.on_node_error(node_id=nid, error=error)

    def end(self, error: BaseException | None) -> None:
        """After the run: succeeded, or failed with ``error`` (which this never replaces)."""
        if not self.started:
            return
        self.saved = {}  # the restored outputs: the graph holds what it still needs
        if error is None and self.failed:
            error = RuntimeError("a dask computation of this run failed")
        self.manager.on_run_end(success=error is None, error=error)

    def report(self) -> ResumeReport:
        with self.lock:
            return ResumeReport(self.manager.run_id, self.restored_seq, self.checkpointed,
                                tuple(self.skipped), dict(self.stale), self.unmatched)  # fmt: skip


@functools.cache
def _recorder_class() -> type[Any]:
    """The dask ``Callback`` that feeds a session (defined on first use: dask is
    imported only when a checkpointed computation starts)."""
    callback: Any = dask_module("dask.callbacks").Callback

    class Recorder(callback):  # type: ignore[misc]  # dask's Callback, used untyped
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def _start(self, dsk: dict[Key, Any]) -> None:
            # The scheduler runs the very dict it hands to ``start`` callbacks.
            self.session.begin(dsk)

        def _pretask(self, key: Key, dsk: Any, state: Any) -> None:
            self.session.check_not_replaced(key)
            self.session.task_started(key)

        def _posttask(self, key: Key, result: Any, dsk: Any, state: Any, worker: Any) -> None:
            self.session.task_finished(key, result)

        def _finish(self, dsk: Any, state: Any, failed: bool) -> None:
            self.session.failed = failed

    return Recorder


# --- the public face -------------------------------------------------------------------


class DaskCheckpoint:
    """Checkpoint and resume dask computations with a ``SyncCheckpointManager``.

    One run of the manager is one ``with`` block (every local computation inside
    it) or one ``compute`` call: its first computation restores the run's latest
    checkpoint when it can resume, and the end of the block (or call) marks the
    run succeeded or failed. Saves follow the manager's policy (e.g.
    ``CheckpointPolicy(every_n_nodes=1)``: after every finished task).

    Args:
        manager: the run's manager; disabled, nothing is installed anywhere.
        layers: which tasks are checkpointed: None (every task, up to ``max_tasks``),
            layer names (``dask.utils.key_split`` of the key) or a predicate on keys.
        max_tasks: the most tasks checkpointed when ``layers`` is None.

    Raises:
        TypeError: ``manager`` is not a ``SyncCheckpointManager``, or bad ``layers``.
        ValueError: ``max_tasks`` below 1.
    """

    def __init__(
        self,
        manager: SyncCheckpointManager,
        *,
        layers: Layers = None,
        max_tasks: int = DEFAULT_MAX_TASKS,
    ) -> None:
        if not isinstance(manager, SyncCheckpointManager):
            raise TypeError(
                f"manager must be a SyncCheckpointManager (dask calls back synchronously), "
                f"got {type(manager).__name__}"
            )
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
            raise TypeError(f"max_tasks must be an int, got {type(max_tasks).__name__}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {max_tasks}")
        self.manager = manager
        self._selection = selection_of(layers)
        self._limit = max_tasks
        self._session: _Session | None = None
        self._recorder: Any = None
        self._last: _Session | None = None

    def __repr__(self) -> str:
        return f"DaskCheckpoint({self.manager!r})"

    @property
    def report(self) -> ResumeReport | None:
        """What the current (or last) run restored; None before any computation."""
        session = self._session or self._last
        return None if session is None or not session.started else session.report()

    def __enter__(self) -> Self:
        """Record (and resume) the local computations of the block; nothing when disabled."""
        if self._session is not None:
            raise RuntimeError("this DaskCheckpoint is already active (a with block is open)")
        if self.manager.enabled:  # read once: a disabled manager installs nothing
            self._session = self._new_session()
            self._recorder = _recorder_class()(self._session)
            self._recorder.register()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc, warn=True)

    def _close(self, exc: BaseException | None, *, warn: bool) -> None:
        session, recorder = self._session, self._recorder
        if session is None:
            return
        self._session, self._recorder, self._last = None, None, session
        recorder.unregister()
        if warn and not session.started and exc is None:
            warnings.warn(
                DaskCheckpointWarning(
                    "no dask computation ran on a local scheduler inside the block, so nothing "
                    "was checkpointed; for dask.distributed use DaskCheckpoint.compute(..., "
                    "client=client)"
                ),
                stacklevel=3,
            )
        session.end(exc)

    def _new_session(self) -> _Session:
        return _Session(self.manager, self._selection, self._limit)

    def compute(self, *args: Any, client: Any = None, **kwargs: Any) -> tuple[Any, ...]:
        """``dask.compute(*args, **kwargs)`` as one checkpointed run of the manager.

        The scheduler is chosen as ``dask.compute`` chooses it; with ``client=`` (or
        a default ``distributed.Client``) the graph runs on that cluster and this
        process saves each checkpointed task's result as it arrives. Disabled: plain
        ``dask.compute``.

        Raises:
            TooManyTasks: see the class; nothing ran.
            Whatever a task raised (the run is marked failed) or a save raised
            (``StaleBaseError``: another process writes this run id).
        """
        dask = dask_module("dask")
        if client is None:
            client = _distributed_client(kwargs.get("scheduler"))
        if not self.manager.enabled:
            if client is not None:
                kwargs["scheduler"] = client
            return tuple(dask.compute(*args, **kwargs))
        if client is None:
            if self._session is not None:  # inside ``with self:``: recorded there
                return tuple(dask.compute(*args, **kwargs))
            self.__enter__()
            try:
                result = tuple(dask.compute(*args, **kwargs))
            except BaseException as exc:
                self._close(exc, warn=False)
                raise
            self._close(None, warn=False)
            return result
        kwargs.pop("scheduler", None)
        return self._compute_on(client, args, **kwargs)

    def _compute_on(
        self,
        client: Any,
        args: tuple[Any, ...],
        *,
        optimize_graph: bool = True,
        traverse: bool = True,
        **get_kwargs: Any,
    ) -> tuple[Any, ...]:
        base, core, DataNode = (
            dask_module("dask.base"),
            dask_module("dask.core"),
            dask_module("dask.task_spec").DataNode,
        )

        if getattr(client, "asynchronous", False):
            raise TypeError("DaskCheckpoint.compute needs a synchronous distributed.Client")
        if self._session is not None:
            raise RuntimeError("DaskCheckpoint.compute(client=...) inside its own with block")
        collections_, repack = base.unpack_collections(*args, traverse=traverse)
        if not collections_:
            return args
        # The graph Client.compute would send, built the way it builds it (the same keys).
        expr = (
            dask_module("dask._expr")
            .FinalizeCompute(base.collections_to_expr(collections_, optimize_graph))
            .optimize()
        )
        keys = list(core.flatten(expr.__dask_keys__()))
        dsk = dask_module("dask._task_spec").convert_legacy_graph(dict(expr.__dask_graph__()))
        session = self._last = self._new_session()
        futures: list[Any] = []
        try:
            session.begin(dsk)
            dsk = cull(dsk, keys)
            watched = [k for k in session.ids if k in dsk and not isinstance(dsk[k], DataNode)]
            wanted = list(dict.fromkeys([*keys, *watched]))
            futures = client.get(dsk, wanted, sync=False, **get_kwargs)
            results = self._collect(client, session, futures, set(keys))
        except BaseException as exc:
            session.end(exc)
            raise
        finally:
            for future in futures:  # unwanted now: the cluster forgets (or stops) their tasks
                future.release()
        session.end(None)
        return tuple(repack([results[k] for k in keys]))

    @staticmethod
    def _collect(
        client: Any, session: _Session, futures: list[Any], final: set[Key]
    ) -> dict[Key, Any]:
        """Save each checkpointed result as it arrives; return the final results."""
        results: dict[Key, Any] = {}
        done = dask_module("distributed").as_completed(
            futures, with_results=True, raise_errors=False, loop=client.loop
        )
        for future, value in done:
            key = future.key
            if future.status == "error":
                _, exc, tb = value
                session.task_failed(key, exc)
                raise exc.with_traceback(tb)
            if future.status == "cancelled":
                raise value
            session.task_started(key)  # the client learns of a task when it has finished
            session.task_finished(key, value)
            if key in final:
                results[key] = value
            else:
                future.release()  # saved: the cluster may forget it once its dependents ran
        return results


def _distributed_client(scheduler: Any) -> Any:
    """The ``distributed.Client`` that ``dask.compute(scheduler=scheduler)`` would use,
    or None (a local scheduler); imports nothing when distributed is not imported."""
    if "distributed" not in sys.modules:
        return None
    Client = dask_module("distributed").Client
    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None:
        configured = dask_module("dask").config.get("scheduler", None)
        if configured is not None:
            return _distributed_client(configured)
    elif scheduler not in ("dask.distributed", "distributed"):
        return None
    try:
        return Client.current(allow_global=True)
    except ValueError:
        return None

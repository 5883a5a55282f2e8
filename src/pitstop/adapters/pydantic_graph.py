"""Checkpoints for pydantic-graph (2.x) runs: resume after the last finished step.

::

    from pitstop import CheckpointManager, CheckpointPolicy
    from pitstop.adapters.pydantic_graph import run_with_checkpoints

    async with CheckpointManager("research", store="runs.db", enabled=True,
                                 policy=CheckpointPolicy(every_n_nodes=1)) as mgr:
        report = await run_with_checkpoints(graph, state=state, inputs=Plan(), manager=mgr)

``run_with_checkpoints`` takes what ``graph.run()`` takes (``state``, ``deps``,
``inputs``) and drives ``Graph.iter()`` one task at a time
(``run_with_checkpoints_sync`` is the same through ``asyncio.run``). Every step
that runs, a builder ``Step`` or a ``BaseNode`` class, is one pitstop node:

- **node id** ``"<k>:<step id>"``, ``k`` the step's 1-based number in the run,
  zero-padded to 4 digits (``"0003:Extract"``, see ``node_id``). Without forks
  the steps run one after another, so ``k`` names the same step occurrence in
  every process, and each iteration of a loop is its own node.
- **output** ``{"next": [(node id, inputs), ...], "state": state}``: the
  task(s) the step handed on (``"__end__"`` with the run's output when it
  ended the run) and the graph state right after it, encoded at once.
- **fingerprint** a hash chain: the previous step's fingerprint and this step's
  digest (``step_fingerprints``: its code and outgoing edges). The chain starts
  from a digest of the inputs and the initial state, or from your
  ``fingerprint=``. A changed step runs again, and every step after it.

Resume: the checkpoint's finished steps are judged by the current fingerprints;
the state left by the last one still valid is copied into your ``state`` object
(in place), and the tasks it handed on are sent to ``GraphRun.next()``, so the
finished steps do not run again. Execution stays at-least-once: the step that
was running when the process died runs again.

Supported: graphs without ``Fork`` or ``Join`` nodes (linear chains, decisions
and branches, loops, ``BaseNode`` state machines, ``StepNode`` hand-offs).
Broadcasts, maps and joins run tasks in parallel and keep join state inside the
run: an enabled run of such a graph raises ``UnsupportedGraph`` before any step
runs. ``ResumeError``: the run's checkpoint does not fit this graph.

With a disabled manager (or ``manager=None``) the call is ``graph.run(...)``:
no hook, no store, no fingerprint, nothing installed into pydantic-graph.
pydantic-graph 2.x has no persistence API (1.x's ``BaseStatePersistence`` is
gone); ``GraphRun.next(tasks)`` is what lets a run start from saved tasks.
See docs/adapters/pydantic-graph.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._errors import PitstopError, SerializationError
from .._manager import CheckpointManager
from .._sync import SyncCheckpointManager
from .._types import Checkpoint, NodeStatus

try:
    from pydantic_graph import EndMarker, Graph, GraphTaskRequest
    from pydantic_graph.id_types import NodeID
    from pydantic_graph.join import Join
    from pydantic_graph.node import EndNode, Fork, StartNode
    from pydantic_graph.step import Step

    # It imports pydantic_graph.paths and .step: inside the version check too.
    from ._pydantic_graph_digest import digest, paths_digest, step_fingerprints
except ImportError as exc:  # pragma: no cover - depends on the installed runner
    raise ImportError(
        "pitstop.adapters.pydantic_graph needs pydantic-graph >= 2.0 (GraphBuilder, "
        "GraphRun.next with task requests): pip install 'pitstop[pydantic-graph]'"
    ) from exc

__all__ = [
    "ResumeError",
    "UnsupportedGraph",
    "node_id",
    "run_with_checkpoints",
    "run_with_checkpoints_sync",
    "step_fingerprints",
]

Manager = CheckpointManager | SyncCheckpointManager

log = logging.getLogger(__name__)

END: Final = str(EndNode.id)
"""The id pydantic-graph gives its end node; ``next`` holds it when a step ended the run."""
_ID = re.compile(r"(\d+):(.+)", re.S)
_VERSION = "pitstop.pydantic_graph/1"
"""Mixed into every fingerprint: a new record layout must not match an old one."""


class UnsupportedGraph(PitstopError):
    """The graph (or its state) is one this adapter cannot checkpoint.

    Raised before any step runs. ``node_ids`` names the offending nodes (forks
    and joins), empty when the reason is the state; ``reason`` says why.
    """

    def __init__(self, graph_name: str | None, reason: str, node_ids: Sequence[str] = ()) -> None:
        self.graph_name = graph_name
        self.reason = reason
        self.node_ids = tuple(node_ids)
        name = "graph" if graph_name is None else f"graph {graph_name!r}"
        super().__init__(f"{name} cannot be checkpointed by pitstop: {reason}")


class ResumeError(PitstopError):
    """The run's checkpoint does not fit this graph or call, so it is not continued.

    Nothing ran. ``run_id`` and ``seq`` name the checkpoint; ``reason`` says
    what does not fit. Start a new run id (or ``manager.delete()`` the run).
    """

    def __init__(self, run_id: str, seq: int | None, reason: str) -> None:
        self.run_id = run_id
        self.seq = seq
        self.reason = reason
        super().__init__(f"run {run_id!r} (checkpoint seq {seq}) cannot be resumed: {reason}")


def node_id(index: int, step_id: str) -> str:
    """The pitstop node id of the ``index``-th step (1-based) of a run, e.g. ``"0003:Extract"``."""
    return f"{index:04d}:{step_id}"


# --- entry points -----------------------------------------------------------------------


async def run_with_checkpoints(
    graph: Graph,
    *,
    manager: Manager | None,
    state: Any = None,
    deps: Any = None,
    inputs: Any = None,
    fingerprint: str | None = None,
) -> Any:
    """Run ``graph`` like ``graph.run(state=, deps=, inputs=)``, checkpointed by ``manager``.

    A resumable run (``manager.can_resume()``) continues after its last finished
    step still valid: that step's state is copied into ``state`` (in place) and
    the tasks it handed on run next. The checkpoint policy decides when saves
    happen (``every_n_nodes``, ``every_seconds``; ``before_nodes`` takes step ids
    or node ids). Step errors propagate unchanged; the run is marked failed.

    Args:
        graph: a built pydantic-graph ``Graph`` without forks or joins.
        manager: ``CheckpointManager`` or ``SyncCheckpointManager`` (its hooks are
            then called directly, so a save blocks the loop while it writes);
            disabled or None runs ``graph.run`` and nothing else.
        state, deps, inputs: as for ``graph.run``. ``deps`` is never saved.
        fingerprint: what the run's inputs are, in your own words; default a digest
            of ``inputs`` and the initial ``state`` encoded by the manager's serializer.

    Raises:
        UnsupportedGraph: forks or joins, a state that cannot be restored in place,
            or ``policy.after_each_level`` (each step is its own level: use
            ``every_n_nodes=1``); raised before any step runs.
        ResumeError: the run's checkpoint does not fit this graph (nothing ran).
        SerializationError: a step's state or hand-off cannot be encoded (the step
            stays unfinished; the run is marked failed).
    """
    if manager is None or not manager.enabled:
        return await graph.run(state=state, deps=deps, inputs=inputs, infer_name=False)
    hooks: _Hooks = (
        _AsyncHooks(manager) if isinstance(manager, CheckpointManager) else _SyncHooks(manager)
    )
    return await _Run(graph, hooks, state, deps, inputs, fingerprint).execute()


def run_with_checkpoints_sync(
    graph: Graph,
    *,
    manager: Manager | None,
    state: Any = None,
    deps: Any = None,
    inputs: Any = None,
    fingerprint: str | None = None,
) -> Any:
    """``run_with_checkpoints`` for sync code: ``asyncio.run`` of it (not inside a running loop).

    Disabled (or ``manager=None``) it is ``asyncio.run(graph.run(...))``. Unlike
    ``graph.run_sync`` it leaves no event loop open behind it.
    """
    if manager is None or not manager.enabled:
        return asyncio.run(graph.run(state=state, deps=deps, inputs=inputs, infer_name=False))
    return asyncio.run(
        run_with_checkpoints(graph, manager=manager, state=state, deps=deps, inputs=inputs,
                             fingerprint=fingerprint)
    )  # fmt: skip


# --- the hooks of either twin, awaited alike ------------------------------------------------


class _Hooks:
    manager: Manager

    async def can_resume(self) -> bool:
        raise NotImplementedError

    async def head(self) -> Checkpoint:
        raise NotImplementedError

    async def restore(self, seq: int, fingerprints: Mapping[str, str]) -> Checkpoint:
        raise NotImplementedError

    async def save_before(self, node: str) -> None:
        raise NotImplementedError

    async def run_start(self) -> None:
        raise NotImplementedError

    async def node_start(self, node: str) -> None:
        raise NotImplementedError

    async def node_finish(self, node: str, output: Any, fingerprint: str) -> None:
        raise NotImplementedError

    async def node_error(self, node: str, error: BaseException) -> None:
        raise NotImplementedError

    async def run_end(self, error: BaseException | None) -> None:
        raise NotImplementedError


class _AsyncHooks(_Hooks):
    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = self.m = manager

    async def can_resume(self) -> bool:
        return await self.m.can_resume()

    async def head(self) -> Checkpoint:
        return await self.m.load_checkpoint(outputs=False)

    async def restore(self, seq: int, fingerprints: Mapping[str, str]) -> Checkpoint:
        return await self.m.restore_checkpoint(seq, fingerprints=fingerprints)

    async def save_before(self, node: str) -> None:
        await self.m.save_checkpoint(trigger="before_node", node=node)

    async def run_start(self) -> None:
        await self.m.on_run_start()

    async def node_start(self, node: str) -> None:
        await self.m.on_node_start(node_id=node)

    async def node_finish(self, node: str, output: Any, fingerprint: str) -> None:
        await self.m.on_node_finish(node_id=node, output=output, fingerprint=fingerprint)

    async def node_error(self, node: str, error: BaseException) -> None:
        await self.m.on_node_error(node_id=node, error=error)

    async def run_end(self, error: BaseException | None) -> None:
        await self.m.on_run_end(success=error is None, error=error)


class _SyncHooks(_Hooks):
    def __init__(self, manager: SyncCheckpointManager) -> None:
        self.manager = self.m = manager

    async def can_resume(self) -> bool:
        return self.m.can_resume()

    async def head(self) -> Checkpoint:
        return self.m.load_checkpoint(outputs=False)

    async def restore(self, seq: int, fingerprints: Mapping[str, str]) -> Checkpoint:
        return self.m.restore_checkpoint(seq, fingerprints=fingerprints)

    async def save_before(self, node: str) -> None:
        self.m.save_checkpoint(trigger="before_node", node=node)

    async def run_start(self) -> None:
        self.m.on_run_start()

    async def node_start(self, node: str) -> None:
        self.m.on_node_start(node_id=node)

    async def node_finish(self, node: str, output: Any, fingerprint: str) -> None:
        self.m.on_node_finish(node_id=node, output=output, fingerprint=fingerprint)

    async def node_error(self, node: str, error: BaseException) -> None:
        self.m.on_node_error(node_id=node, error=error)

    async def run_end(self, error: BaseException | None) -> None:
        self.m.on_run_end(success=error is None, error=error)


# --- one checkpointed run --------------------------------------------------------------------

_INITIAL_STATES: weakref.WeakKeyDictionary[Manager, tuple[str, str]] = weakref.WeakKeyDictionary()
"""Manager -> (run id, digest of the initial state) of the run it last started in this
process: an in-process retry passes the state the failed attempt mutated, which must not
count as a new initial state (the checkpoint's state replaces it anyway)."""


class _Run:
    def __init__(
        self,
        graph: Graph,
        hooks: _Hooks,
        state: Any,
        deps: Any,
        inputs: Any,
        fingerprint: str | None,
    ) -> None:
        self.graph, self.hooks, self.mgr = graph, hooks, hooks.manager
        self.state, self.deps, self.inputs = state, deps, inputs
        self.fingerprint = fingerprint
        check_graph(graph)
        if not _restorable(state):
            raise UnsupportedGraph(graph.name, f"its state, a {type(state).__qualname__}, cannot "
                                   "be restored in place; use a dataclass, a pydantic model or "
                                   "a dict")  # fmt: skip
        policy = self.mgr.policy
        if policy.after_each_level:
            raise UnsupportedGraph(graph.name, "policy.after_each_level needs the node set in "
                                   "advance; each step is its own level here: use "
                                   "CheckpointPolicy(every_n_nodes=1)")  # fmt: skip
        self.before = policy.before_nodes
        self.step_fps = step_fingerprints(graph)

    async def execute(self) -> Any:
        hooks, run_id = self.hooks, self.mgr.run_id
        resumable = await hooks.can_resume()
        edges = paths_digest(self.graph.edges_by_source.get(StartNode.id, []))
        if self.fingerprint is not None:
            run_fp = digest(_VERSION, "named", self.fingerprint, edges)
        else:
            known = _INITIAL_STATES.get(self.mgr)
            if resumable and known is not None and known[0] == run_id:
                initial = known[1]  # an in-process retry: ``state`` is the failed attempt's
            else:
                initial = self._encoded("the initial state", self.state)
            _INITIAL_STATES[self.mgr] = (run_id, initial)
            run_fp = digest(_VERSION, self._encoded("the graph inputs", self.inputs), initial,
                             edges)  # fmt: skip
        index, chain_fp, frontier = 0, run_fp, None
        if resumable:
            index, chain_fp, frontier = await self._resume(run_fp)
        await hooks.run_start()
        current: str | None = None
        try:
            async with self.graph.iter(state=self.state, deps=self.deps, inputs=self.inputs,
                                       infer_name=False) as run:  # fmt: skip
                # Routes the inputs from the start node (no step runs); on resume the
                # restored tasks replace the first step's.
                event: EndMarker | Sequence[GraphTaskRequest] = await anext(run)
                if frontier is not None and not isinstance(event, EndMarker):
                    root = event[0].fork_stack if event else ()
                    event = [GraphTaskRequest(NodeID(t), inputs, root) for t, inputs in frontier]
                while not isinstance(event, EndMarker):
                    if len(event) != 1:
                        raise UnsupportedGraph(self.graph.name, f"{len(event)} tasks were handed "
                                               "on at once; only sequential runs are supported",
                                               [t.node_id for t in event])  # fmt: skip
                    step_id = event[0].node_id
                    if not isinstance(self.graph.nodes.get(step_id), Step):
                        event = await run.next(event)  # a decision or the end node: no step
                        continue
                    index += 1
                    nid = node_id(index, step_id)
                    chain_fp = digest(chain_fp, self.step_fps[step_id])
                    if step_id in self.before and nid not in self.before:
                        await self._save_before(nid)
                    await hooks.node_start(nid)
                    current = nid  # from here on, an error is this step's
                    event = await run.next(event)
                    handed = (
                        [(END, event.value)]
                        if isinstance(event, EndMarker)
                        else [(str(t.node_id), t.inputs) for t in event]
                    )
                    step, current = current, None
                    await hooks.node_finish(step, {"next": handed, "state": self.state}, chain_fp)
                output = event.value
        except BaseException as exc:
            if current is not None and isinstance(exc, Exception):
                await hooks.node_error(current, exc)
            await hooks.run_end(exc)  # records the failure; never replaces exc
            raise
        await hooks.run_end(None)
        return output

    async def _save_before(self, node: str) -> None:
        """``before_nodes`` named by step id: the save the core makes for node ids."""
        try:
            await self.hooks.save_before(node)
        except PitstopError:
            if self.mgr.policy.on_error == "raise":
                raise

    async def _resume(self, run_fp: str) -> tuple[int, str, list[tuple[str, Any]] | None]:
        """Restore the latest checkpoint, judged by the current fingerprints.

        Returns the number of the last valid finished step, its fingerprint, and the
        tasks it handed on (None: nothing valid, start from the beginning).
        """
        head = await self.hooks.head()  # node ids and statuses only: nothing decoded
        chain = self._chain(head)
        fps, fp = {}, run_fp
        for step_id, nid in chain:
            fp = digest(fp, self.step_fps.get(step_id, f"missing step {step_id!r}"))
            fps[nid] = fp
        cp = await self.hooks.restore(head.seq, fps)
        done = cp.completed
        valid = 0
        while valid < len(chain) and chain[valid][1] in done:
            valid += 1
        if valid < len(chain) and any(nid in done for _, nid in chain[valid:]):
            raise ResumeError(self.mgr.run_id, cp.seq, "its finished steps are not a prefix "
                              "of the run after the fingerprint check")  # fmt: skip
        where = f"run {self.mgr.run_id!r}: "
        if cp.stale:
            first = min(cp.stale, key=lambda nid: int(nid.partition(":")[0]))
            log.info("%s%d finished steps from %s on run again: %s", where, len(cp.stale),
                     first, cp.stale[first])  # fmt: skip
        if not valid:
            log.info("%sno finished step to resume from: starting from the inputs", where)
            return 0, run_fp, None
        last = chain[valid - 1][1]
        handed, saved_state = self._record(cp, last, done[last])
        _restore_into(self.state, saved_state, self.mgr.run_id, cp.seq)
        log.info("%sresuming after step %s (%d finished steps restored from checkpoint seq %d)",
                 where, last, valid, cp.seq)  # fmt: skip
        return valid, fps[last], handed

    def _chain(self, head: Checkpoint) -> list[tuple[str, str]]:
        """(step id, node id) of the checkpoint's finished steps, in run order."""
        by_index: dict[int, tuple[str, str]] = {}
        for nid, node in head.nodes.items():
            match = _ID.fullmatch(nid)
            if match is None:
                raise ResumeError(self.mgr.run_id, head.seq, f"node {nid!r} is not a "
                                  "'<k>:<step id>' node of this adapter")  # fmt: skip
            if node.status is not NodeStatus.COMPLETED:
                continue
            k = int(match.group(1))
            if k in by_index:
                raise ResumeError(self.mgr.run_id, head.seq, f"step {k} finished twice "
                                  f"({by_index[k][1]!r} and {nid!r})")  # fmt: skip
            by_index[k] = (match.group(2), nid)
        if sorted(by_index) != list(range(1, len(by_index) + 1)):
            raise ResumeError(self.mgr.run_id, head.seq, "its finished steps "
                              f"{sorted(by_index)} are not steps 1..n")  # fmt: skip
        return [by_index[k] for k in sorted(by_index)]

    def _record(self, cp: Checkpoint, nid: str, record: Any) -> tuple[list[tuple[str, Any]], Any]:
        """The tasks step ``nid`` handed on and the state after it, checked against the graph."""
        if not isinstance(record, dict) or not isinstance(record.get("next"), list):
            raise ResumeError(self.mgr.run_id, cp.seq, f"the output of {nid!r} is not a step "
                              "record ({'next': [...], 'state': ...})")  # fmt: skip
        handed = []
        for item in record["next"]:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ResumeError(self.mgr.run_id, cp.seq, f"step {nid!r} handed on "
                                  f"{item!r}, not a (node id, inputs) pair")  # fmt: skip
            if item[0] != END and item[0] not in self.graph.nodes:
                raise ResumeError(self.mgr.run_id, cp.seq, f"step {nid!r} handed on to "
                                  f"{item[0]!r}, which this graph does not have")  # fmt: skip
            handed.append((item[0], item[1]))
        return handed, record.get("state")

    def _encoded(self, what: str, value: Any) -> str:
        try:
            return hashlib.sha256(self.mgr.serializer.dumps(value)).hexdigest()
        except SerializationError as exc:
            raise exc.about(f"{what} (digested for the run's fingerprint; or pass "
                            "fingerprint=): ", None) from exc  # fmt: skip


# --- shapes, state, fingerprints ------------------------------------------------------------


def check_graph(graph: Graph) -> None:
    """Raise ``UnsupportedGraph`` if ``graph`` has forks or joins (parallel tasks)."""
    parallel = sorted(str(k) for k, n in graph.nodes.items() if isinstance(n, Fork | Join))
    if parallel:
        raise UnsupportedGraph(graph.name, "forks and joins (broadcast, map, join) run tasks "
                               f"in parallel, which this adapter does not checkpoint: {parallel}",
                               parallel)  # fmt: skip


def _restorable(state: Any) -> bool:
    if state is None or isinstance(state, dict | list | set):
        return True
    return dataclasses.is_dataclass(state) or hasattr(state, "__dict__")


def _restore_into(target: Any, saved: Any, run_id: str, seq: int) -> None:
    """Make the caller's ``target`` hold ``saved`` (the state a checkpoint kept), in place."""
    if saved is target:
        return
    if type(saved) is not type(target):
        raise ResumeError(run_id, seq, f"its state is a {type(saved).__qualname__}, the state "
                          f"given is a {type(target).__qualname__}")  # fmt: skip
    if target is None:
        return
    if isinstance(target, dict):
        target.clear()
        target.update(saved)
    elif isinstance(target, list):
        target[:] = saved
    elif isinstance(target, set):
        target.clear()
        target.update(saved)
    elif hasattr(target, "__pydantic_fields_set__"):
        # A pydantic model: fields, extras and which fields were set; private
        # attributes are not saved, so the caller's stay.
        object.__setattr__(target, "__dict__", dict(saved.__dict__))
        object.__setattr__(target, "__pydantic_fields_set__", set(saved.__pydantic_fields_set__))
        extra = saved.__pydantic_extra__
        object.__setattr__(target, "__pydantic_extra__", None if extra is None else dict(extra))
    elif dataclasses.is_dataclass(target):
        for f in dataclasses.fields(target):
            object.__setattr__(target, f.name, getattr(saved, f.name))
    else:
        target.__dict__.clear()
        target.__dict__.update(saved.__dict__)

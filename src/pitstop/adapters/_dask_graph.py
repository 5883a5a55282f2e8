"""Dask graphs as pitstop sees them: keys as node ids, which tasks are checkpointed
(``layers=``, ``max_tasks``), their Merkle fingerprints, and culling
(``adapters.dask``)."""

from __future__ import annotations

import ast
import collections
import hashlib
import importlib
import logging
import math
import re
import warnings
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import PitstopError

Key = Hashable
"""A dask key: a str, or a tuple whose first item is the name (``("sum-<token>", 0, 1)``)."""

Layers = Collection[str] | Callable[[Key], bool] | None

logger = logging.getLogger("pitstop.adapters.dask")

_TOKEN = re.compile(r"-[0-9a-f]{32}(?:-|$)")
"""A dask token (``tokenize()``, 32 hex digits) inside a key's name."""
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
"""A uuid4: how dask names impure delayed calls (a new name in every process)."""
_FINALIZE = "finalize-hlgfinalizecompute-"
"""The last step of computing an array or bag: dask names it with a uuid4 hex by design."""
_PLAIN = re.compile(r"[^\W\d][\w.\-]*\Z")
"""A str key that cannot be read as a Python literal (fast path of ``node_id``)."""


class TooManyTasks(PitstopError, ValueError):
    """The graph has more tasks than ``max_tasks`` and no ``layers=`` chose among them.

    ``layers`` holds the graph's layer names, the largest first: pass some of them
    as ``layers=[...]`` (or raise ``max_tasks``).
    """

    def __init__(self, tasks: int, limit: int, layers: Mapping[str, int]) -> None:
        self.tasks = tasks
        self.limit = limit
        self.layers = dict(layers)
        shown = ", ".join(f"{name!r} ({n})" for name, n in list(self.layers.items())[:8])
        super().__init__(
            f"the graph has {tasks} tasks, more than max_tasks={limit} that pitstop checkpoints "
            f"without being told which: pass layers=[names] (this graph's: {shown}) or a larger "
            "max_tasks"
        )


class DaskCheckpointWarning(UserWarning):
    """Checkpointing did less than asked: random keys, unmatched layer names, or no
    computation seen."""


def dask_module(name: str) -> Any:
    """A module of dask or distributed, imported on first use (pitstop never imports
    them otherwise); used untyped, as their annotations are partial."""
    return importlib.import_module(name)


# --- keys -> node ids, selection, fingerprints ------------------------------------------


def node_id(key: Key) -> str:
    """The pitstop node id of a dask key (stable, and different for different keys).

    A str key is its own id unless it could be read as a Python literal; then,
    like every other key (tuples, ints, bytes), the id is its ``repr``. So
    ``("x", 0)`` and ``"('x', 0)"`` get different ids, and every id is valid
    (no NUL, no lone surrogate: ``repr`` escapes them). Reading an id back as a
    literal tells which kind of key it came from, so two keys never share one.
    """
    if type(key) is str:
        if _PLAIN.match(key) and key not in ("True", "False", "None"):
            return key
        if key and "\x00" not in key and not _is_literal(key) and _is_utf8(key):
            return key
        return repr(key)
    text = repr(key)
    # A repr that is no literal (inf, nan, an object) is quoted once more, so it
    # cannot be mistaken for the str key of the same text.
    return text if _is_simple(key) or _is_literal(text) else repr(text)


def _is_simple(key: object) -> bool:
    """Whether ``repr(key)`` is a Python literal, known without parsing it (exact
    types: a subclass, an IntEnum say, has a repr of its own)."""
    if type(key) in (str, int, bytes, bool):
        return True
    if type(key) is float:
        return math.isfinite(key)
    return type(key) is tuple and all(_is_simple(k) for k in key)


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(key: Key) -> str:
    name = key[0] if isinstance(key, tuple) and key else key
    return name if isinstance(name, str) else repr(name)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tasks are checkpointed: all (``accept`` None), or those ``accept`` takes;
    ``names``: the layer names it was made of, if any (to report those that match none)."""

    accept: Callable[[Key], bool] | None = None
    names: frozenset[str] = frozenset()


def selection_of(layers: Layers) -> Selection:
    if layers is None:
        return Selection()
    if callable(layers):
        return Selection(layers)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Collection):
        raise TypeError(
            f"layers must be a collection of layer names (str), a callable or None, got "
            f"{type(layers).__name__} {layers!r}"
        )
    names = frozenset(layers)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"layers must hold non-empty layer names (str), got {name!r}")
    key_split = dask_module("dask.utils").key_split
    return Selection(lambda key: key_split(key) in names, names)


@dataclass(slots=True)
class Graph:
    """The checkpointed tasks of one dask graph, as the scheduler will run it."""

    ids: dict[Key, str]
    """Checkpointed key -> node id."""
    fingerprints: dict[Key, str]
    deps: dict[str, list[str]]
    """Node id -> the node ids of the nearest checkpointed tasks upstream."""


def analyse(dsk: Mapping[Key, Any], selection: Selection, limit: int) -> Graph:
    """Choose the checkpointed tasks of ``dsk`` and fingerprint them.

    A selected alias stands for the task it points to: when dask fuses layers, the
    fused task gets one layer's name and the others' keys become aliases of it.

    Raises:
        TooManyTasks: no selection and more than ``limit`` tasks qualify.
    """
    spec, key_split = dask_module("dask.task_spec"), dask_module("dask.utils").key_split
    accept = selection.accept
    chosen: dict[Key, None] = {}  # ordered, without repeats
    random: list[Key] = []
    matched: set[str] = set()
    for key, task in dsk.items():
        if isinstance(task, spec.DataNode) or (accept is not None and not accept(key)):
            continue
        if isinstance(task, spec.Alias):
            if accept is None:
                continue  # its target is a task of its own
            target = _target(dsk, key, spec)
            if target is None:
                continue
            if selection.names:
                matched.add(key_split(key))
            key = target
        elif selection.names:
            matched.add(key_split(key))
        name = _name(key)
        if _FINALIZE in name:
            continue  # random by design; it only assembles what compute() returns
        if _UUID.search(name):
            random.append(key)
        else:
            chosen[key] = None
    if random:
        shown = ", ".join(repr(k) for k in random[:3])
        warnings.warn(
            DaskCheckpointWarning(
                f"{len(random)} task(s) have random keys ({shown}, ...): dask names impure "
                "delayed calls with a uuid, so no later process can find them; they are not "
                "checkpointed (use dask.delayed(..., pure=True) or dask_key_name=)"
            ),
            stacklevel=2,
        )
    if missing := selection.names - matched:
        layers = collections.Counter(key_split(k) for k, t in dsk.items()
                                     if not isinstance(t, spec.DataNode))  # fmt: skip
        shown = ", ".join(f"{n!r} ({c})" for n, c in layers.most_common(8))
        warnings.warn(
            DaskCheckpointWarning(
                f"layers {sorted(missing)} match no task of this graph, so they are not "
                f"checkpointed; the graph's layers: {shown}"
            ),
            stacklevel=2,
        )
    if accept is None and len(chosen) > limit:
        layers = collections.Counter(key_split(k) for k in chosen)
        raise TooManyTasks(len(chosen), limit, dict(layers.most_common()))
    ids = {key: node_id(key) for key in chosen}
    fingerprints, deps = _walk(dsk, ids)
    return Graph(ids, {k: fingerprints[k] for k in ids}, deps)


def _target(dsk: Mapping[Key, Any], key: Key, spec: Any) -> Key | None:
    """The task an alias (or a chain of them) points to; None for data or a key
    outside the graph."""
    seen = {key}
    while isinstance(task := dsk.get(key), spec.Alias):
        key = task.target
        if key in seen:
            return None
        seen.add(key)
    return None if task is None or isinstance(task, spec.DataNode) else key


def _walk(
    dsk: Mapping[Key, Any], ids: Mapping[Key, str]
) -> tuple[dict[Key, str], dict[str, list[str]]]:
    """Fingerprints of the checkpointed keys and everything upstream of them, and
    each checkpointed node's nearest checkpointed ancestors; iterative (graphs can
    be deeper than Python's recursion limit)."""
    fingerprints: dict[Key, str] = {}
    upstream: dict[Key, frozenset[str]] = {}  # for a key: checkpointed nodes it stands for
    deps: dict[str, list[str]] = {}
    unsure: list[Key] = []
    for root in ids:
        stack = [root]
        while stack:
            key = stack[-1]
            if key in fingerprints:
                stack.pop()
                continue
            task = dsk.get(key)
            needs = () if task is None else task.dependencies
            missing = [d for d in needs if d not in fingerprints]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            h = hashlib.blake2b(repr(key).encode("utf-8", "backslashreplace"), digest_size=16)
            if task is not None and not _TOKEN.search(_name(key)):
                h.update(_spec_token(task, key, unsure).encode())
            for fp in sorted(fingerprints[d] for d in needs):
                h.update(fp.encode())
            fingerprints[key] = h.hexdigest()
            above = frozenset().union(*(upstream[d] for d in needs)) if needs else frozenset()
            own = ids.get(key)
            if own is None:
                upstream[key] = above
            else:
                upstream[key] = frozenset((own,))
                deps[own] = sorted(above)
    if unsure:
        logger.warning(
            "%d task(s) with user-chosen keys cannot be tokenized deterministically (%s, ...): "
            "their fingerprint is their key and upstream alone, so a change to their own code "
            "or arguments is not noticed on resume",
            len(unsure),
            ", ".join(repr(k) for k in unsure[:3]),
        )
    return fingerprints, deps


def _spec_token(task: Any, key: Key, unsure: list[Key]) -> str:
    """What a task computes (function and arguments, dependencies by key), as dask hashes it."""
    tokenize = dask_module("dask.tokenize")
    try:
        token: str = tokenize.tokenize(task, ensure_deterministic=True)
    except tokenize.TokenizationError:
        unsure.append(key)
        return ""
    return token


def same_graph(stored: Mapping[str, Iterable[str]], graph: Mapping[str, Iterable[str]]) -> bool:
    return {k: set(v) for k, v in stored.items()} == {k: set(v) for k, v in graph.items()}


def cull(dsk: Mapping[Key, Any], keys: Iterable[Key]) -> dict[Key, Any]:
    """The part of ``dsk`` that ``keys`` need (a restored task needs nothing)."""
    out: dict[Key, Any] = {}
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key in out or key not in dsk:
            continue
        out[key] = task = dsk[key]
        stack.extend(task.dependencies)
    return out

"""What a pydantic-graph run's fingerprints are made of: digests of each step's code
and outgoing edges (``adapters.pydantic_graph``)."""

from __future__ import annotations

import hashlib
import types
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_graph import Graph
from pydantic_graph.paths import DestinationMarker, LabelMarker, Path, TransformMarker
from pydantic_graph.step import NodeStep, Step


def step_fingerprints(graph: Graph) -> dict[str, str]:
    """Step id -> a digest of the step's code and outgoing edges (what resume compares)."""
    out = {}
    for key, node in graph.nodes.items():
        if isinstance(node, NodeStep):
            code = _class_digest(node.node_type)
        elif isinstance(node, Step):
            code = _callable_digest(node.call, set())
        else:
            continue
        out[str(key)] = digest(code, paths_digest(graph.edges_by_source.get(key, [])))
    return out


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def paths_digest(paths: Sequence[Path]) -> str:
    items: list[str] = []
    for path in paths:
        for item in path.items:
            if isinstance(item, DestinationMarker):
                items.append(f"to {item.destination_id}")
            elif isinstance(item, LabelMarker):
                items.append(f"label {item.label}")
            elif isinstance(item, TransformMarker):
                items.append(f"transform {_callable_digest(item.transform, set())}")
            else:  # forks are refused before this is asked
                items.append(type(item).__name__)
        items.append("|")
    return digest(*items)


def _const(value: Any, seen: set[int]) -> str:
    """A constant of compiled code as stable text (frozensets sorted: str hashing is salted)."""
    if isinstance(value, types.CodeType):
        return _code_digest(value, seen)
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(_const(v, seen) for v in value)) + ")"
    if isinstance(value, tuple):
        return "(" + ",".join(_const(v, seen) for v in value) + ")"
    return repr(value)


def _code_digest(code: types.CodeType, seen: set[int]) -> str:
    # Bytecode, constants and names: not line numbers, so moving code or editing
    # comments changes nothing. Another Python version compiles differently: it
    # counts as a change.
    consts = ",".join(_const(c, seen) for c in code.co_consts)
    names, local = ",".join(code.co_names), ",".join(code.co_varnames)
    return digest(code.co_name, code.co_code.hex(), names, local, consts)


def _callable_digest(fn: Any, seen: set[int]) -> str:
    """A function's code, its defaults, the functions it closes over and the same-module
    functions it calls by name (recursively; cycles cut)."""
    fn = getattr(fn, "__func__", fn)  # bound methods, staticmethod, classmethod
    if isinstance(fn, property):
        return digest(*(_callable_digest(f, seen) for f in (fn.fget, fn.fset) if f is not None))
    if not isinstance(fn, types.FunctionType):
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - a callable object's class
        if isinstance(call, types.FunctionType):
            return _callable_digest(call, seen)
        return f"<{getattr(fn, '__qualname__', type(fn).__qualname__)}>"
    if id(fn) in seen:
        return f"<{fn.__qualname__}>"
    seen.add(id(fn))
    parts = [fn.__qualname__, _code_digest(fn.__code__, seen), _const(fn.__defaults__, seen)]
    for cell in fn.__closure__ or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(inner, types.FunctionType):
            parts.append(_callable_digest(inner, seen))
    for name in fn.__code__.co_names:
        used = fn.__globals__.get(name)
        if isinstance(used, types.FunctionType) and used.__module__ == fn.__module__:
            parts.append(_callable_digest(used, seen))
    return digest(*parts)


_RUNNER_MODULES = ("builtins", "abc", "typing", "pydantic_graph", "pydantic")


def _class_digest(cls: type) -> str:
    """A ``BaseNode`` class: its methods and fields, and those of its own base classes."""
    parts: list[str] = []
    seen: set[int] = set()
    for klass in cls.__mro__:
        module = klass.__module__
        if module.split(".")[0] in _RUNNER_MODULES:
            continue
        parts.append(klass.__qualname__)
        for name, attr in sorted(vars(klass).items()):
            if isinstance(attr, staticmethod | classmethod):
                attr = attr.__func__
            if isinstance(attr, types.FunctionType | property):
                parts.append(f"{name}={_callable_digest(attr, seen)}")
        fields: Mapping[str, Any] = getattr(klass, "__dataclass_fields__", {})
        parts.extend(f"field {name}: {f.type}" for name, f in fields.items())
    return digest(*parts)

"""Programs: how a manager's operation asks for store transactions (``Call``) and
CPU work (``Work``), and ``op``, which declares one for both twins; plus the two
run-time helpers their programs share (a pause of the cyclic garbage collector,
the guess of what is large enough to encode off the event loop)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import linecache
import os
import textwrap
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

if TYPE_CHECKING:
    from ._manager import CheckpointManager
    from ._ops import ManagerBase
    from ._sync import SyncCheckpointManager
    from .storage._programs import Call

P_ = ParamSpec("P_")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class Work(Generic[R]):
    """CPU work a program asks for (encoding a large output): the async twin runs it
    on a worker thread so the event loop keeps running; the sync twin just calls it."""

    fn: Callable[..., R]
    args: tuple[Any, ...]


Program = Generator["Call[Any] | Work[Any]", Any, R]
ProgramFn = Callable[..., "Program[Any] | None"]


class op(Generic[P_, R]):
    """Declares, once, a manager method that runs a program.

    Each twin turns every declared op into its own kind of method when it is
    defined (``ManagerBase.__init_subclass__`` fills in the twin's ``_METHOD``):
    a plain function for the sync twin, a coroutine function for the async one.
    The overloads tell type checkers what each twin's method looks like.
    """

    def __init__(self, program: Callable[Concatenate[ManagerBase, P_], Program[R] | None]) -> None:
        self.program = program

    def __set_name__(self, owner: type[ManagerBase], name: str) -> None:
        owner._OPS[name] = self.program

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncCheckpointManager, owner: type[Any]) -> Callable[P_, R]: ...
    @overload
    def __get__(
        self, obj: CheckpointManager, owner: type[Any]
    ) -> Callable[P_, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: object, owner: type[Any]) -> Any:
        if obj is None:
            return self
        raise TypeError(f"{type(obj).__name__} is not a manager twin: use CheckpointManager "
                        "or SyncCheckpointManager")  # fmt: skip


def twin_method(name: str, program: ProgramFn, template: str) -> Callable[..., Any]:
    """A twin's method ``name`` running ``program``, with the program's own parameters.

    ``template`` is the method's source (a twin's ``_METHOD``, dedented here), with
    ``{name}``, ``{params}`` for its parameter list and ``{call}`` for the arguments
    that pass them on to ``_program``. The source is filed under a name in
    pitstop's directory and in ``linecache``, so ``traceback`` and pytest show its
    lines (CPython 3.11's printer of an uncaught exception reads files only) and
    profilers see a pitstop call. Generated,
    as ``dataclasses`` generates ``__init__``: a runner calls two hooks per node,
    and a generic ``(*args, **kwargs)`` wrapper, which packs the keywords into a
    dict and unpacks them again, cost ~0.4 us a hook (timeit), a third of what
    an enabled hook adds to the bookkeeping itself.
    """
    params = list(inspect.signature(program).parameters.values())[1:]
    namespace: dict[str, Any] = {"_program": program}
    declared, passed, keywords = ["self"], ["self"], False
    for i, p in enumerate(params):
        if p.name in ("self", "running") or p.name.startswith("_"):
            raise TypeError(f"{program.__name__}: parameter {p.name!r} shadows the method's own")
        if p.kind is p.KEYWORD_ONLY:
            if not keywords:
                declared.append("*")
                keywords = True
            passed.append(f"{p.name}={p.name}")
        elif p.kind is p.POSITIONAL_OR_KEYWORD:
            passed.append(p.name)
        else:
            raise TypeError(f"{program.__name__}: {p.kind.description} parameters: unsupported")
        if p.default is p.empty:
            declared.append(p.name)
        else:
            namespace[f"_default{i}"] = p.default
            declared.append(f"{p.name}=_default{i}")
    source = textwrap.dedent(template).format(
        name=name, params=", ".join(declared), call=", ".join(passed)
    )
    kind = "async" if template.lstrip().startswith("async ") else "sync"
    filename = os.path.join(os.path.dirname(__file__), f"<{kind} {name}>")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    # Built above from the signature alone, as dataclasses builds __init__.
    exec(compile(source, filename, "exec"), namespace)
    method: Callable[..., Any] = namespace[name]
    return method


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a restore builds its objects.

    A restore of 10,000 nodes allocates tens of thousands of objects that all
    survive; the collector would scan them again and again for nothing (measured
    at K=10,000: p95 72-103 ms with it, 21-31 ms without). A collector the
    caller turned off stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


LARGE_ITEMS = 10_000
"""Outputs with this many items (or array elements, or frame cells) count as large."""
LARGE_BYTES = 1 << 20


def is_large(value: Any) -> bool:
    """A cheap guess (no walk) whether encoding ``value`` takes long enough to stall
    an event loop: a big str/bytes, a long container (or one holding long
    containers at its first level), a big array or frame."""
    kind = type(value)
    if kind is str or kind is bytes or kind is bytearray:
        return len(value) >= LARGE_BYTES
    if kind is list or kind is tuple or kind is dict or kind is set or kind is frozenset:
        if len(value) >= LARGE_ITEMS:
            return True
        if len(value) > 64:
            return False
        items = value.values() if kind is dict else value
        return sum(len(v) if hasattr(v, "__len__") else 1 for v in items) >= LARGE_ITEMS
    size = getattr(value, "size", None)  # numpy arrays; pandas frames and series (cells)
    return isinstance(size, int) and size >= LARGE_ITEMS

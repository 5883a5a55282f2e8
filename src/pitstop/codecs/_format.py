"""What the typed codec's writer and reader share: the stored format (extension
codes, the out-of-band layout), user-class references, time zones, and the
``TypeCodec`` registry with its entry points.

Only the standard library and msgspec are imported here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import importlib
import pathlib
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
from msgspec.msgpack import Ext

MAX_DEPTH = 200
"""Deepest nesting of containers a value may have (the top level is 1)."""

OOB_MIN = 64 * 1024
"""Buffers from this size on are written out of band (after the msgpack body)."""

# Extension type codes: part of the stored format, never renumber.
TUPLE, SET, FROZENSET, DICT, BIGINT, DATETIME, DATETIME_TZ, DATE, TIME, TIMEDELTA = range(1, 11)
DECIMAL, UUID, PATH, ENUM, DATACLASS, NAMEDTUPLE, MODEL, BYTEARRAY, CUSTOM, COMPLEX = range(11, 21)
NDARRAY, BUFFER, PANDAS, NPSCALAR = range(21, 25)

_OOB = 0xC1
_HEAD = struct.Struct("<BI")  # marker, body length
_BUFLEN = struct.Struct("<Q")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_PATHS = {cls.__name__: cls for cls in (pathlib.PurePosixPath, pathlib.PureWindowsPath,
                                        pathlib.PosixPath, pathlib.WindowsPath)}  # fmt: skip

_pack = msgspec.msgpack.Encoder().encode
_FIX = (
    "register a codec (pitstop.codecs.TypeCodec), convert it, or pass serializer=PickleSerializer()"
)


class _Refused(Exception):
    """Raised inside the walk; unwinding adds the path."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.path: list[Any] = []
        self.ids: list[int] = []


@dataclasses.dataclass(frozen=True, slots=True)
class TypeCodec:
    """How to save a type the typed codec does not know, in a few lines.

    ``encode`` turns a value into something the typed codec supports (a tuple,
    a dict, a str, an array, ...); ``decode`` gets that back and rebuilds the
    value. ``name`` is stored with each value: keep it stable (e.g.
    ``"myapp.Money"``). Readers find codecs by name: pass them to
    ``TypedSerializer(codecs=...)``, or publish them in the ``pitstop.codecs``
    entry-point group so ``pitstop show/export`` load them too.

    Example::

        money = TypeCodec(Money, "shop.Money", lambda m: (m.amount, m.currency),
                          lambda v: Money(*v))
    """

    type: type
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    subclasses: bool = False
    """Also use this codec for subclasses of ``type`` (which then come back as ``type``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.type, type):
            raise TypeError(f"TypeCodec.type must be a class, got {self.type!r}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError("TypeCodec.name must be a non-empty str")


def _qualified(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _lookup_attr(mod: Any, qualname: str) -> Any:
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _reachable(cls: type) -> str | None:
    """Why ``cls`` could not be found again by module and name (None: it can)."""
    module, qualname = _qualified(cls)
    if "<locals>" in qualname:
        return f"class {module}.{qualname} is defined inside a function, so no reader can find it"
    mod = sys.modules.get(module)
    try:
        found = _lookup_attr(mod, qualname) if mod is not None else None
    except AttributeError:
        found = None
    if found is not cls:
        return f"class {module}.{qualname} cannot be found again under that name"
    return None


def _kind_of(cls: type) -> int | None:
    """The extension code of a user class the codec rebuilds by itself."""
    if issubclass(cls, enum.Enum):
        return ENUM
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return NAMEDTUPLE
    if dataclasses.is_dataclass(cls):
        return DATACLASS
    pyd = sys.modules.get("pydantic")
    if pyd is not None and issubclass(cls, pyd.BaseModel):
        return MODEL
    return None


def _iso_exact(tz: dt.tzinfo | None) -> bool:
    """Whether ISO 8601 text gives ``tz`` back (no tz, or an unnamed whole-second offset).

    (Python 3.11's ``fromisoformat`` reads an offset such as ``+00:00:00.000001`` as UTC.)
    """
    if tz is None:
        return True
    if type(tz) is not dt.timezone:
        return False
    offset = tz.utcoffset(None)
    return not offset.microseconds and tz.tzname(None) == dt.timezone(offset).tzname(None)


def _datetime(value: dt.datetime) -> Ext:
    tz = value.tzinfo
    if value.fold == 0 and _iso_exact(tz):
        return Ext(DATETIME, value.isoformat().encode())
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return Ext(DATETIME_TZ, _pack((naive, value.fold, *_tz(tz))))


def _tz(tz: dt.tzinfo | None) -> tuple[int, Any, Any]:
    if tz is None:
        return 0, None, None
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        return 1, offset.total_seconds(), tz.tzname(None)
    key = getattr(tz, "key", None)
    if type(tz).__module__ == "zoneinfo" and isinstance(key, str):
        return 2, key, None
    raise _Refused(
        f"tzinfo {type(tz).__module__}.{type(tz).__qualname__} is not supported "
        "(use datetime.timezone or zoneinfo.ZoneInfo)"
    )


def _tz_back(kind: int, a: Any, b: Any) -> dt.tzinfo | None:
    if kind == 0:
        return None
    if kind == 1:
        offset = dt.timedelta(seconds=a)
        return dt.timezone(offset) if b is None else dt.timezone(offset, b)
    import zoneinfo

    return zoneinfo.ZoneInfo(a)


def entry_point_codecs() -> list[TypeCodec]:
    """Codecs published in the ``pitstop.codecs`` entry-point group.

    An entry point names a ``TypeCodec`` or an iterable of them.
    """
    from importlib.metadata import entry_points

    found: list[TypeCodec] = []
    for ep in entry_points(group="pitstop.codecs"):
        found.extend(_as_codecs(ep.load(), ep.value))
    return found


def load_codec(spec: str) -> list[TypeCodec]:
    """The codec(s) at ``module:name`` (what the CLI's ``--codec`` takes)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--codec wants module:name, got {spec!r}")
    obj = _lookup_attr(importlib.import_module(module), name)
    return _as_codecs(obj, spec)


def _as_codecs(obj: Any, where: str) -> list[TypeCodec]:
    if isinstance(obj, TypeCodec):
        return [obj]
    if isinstance(obj, Mapping) or not isinstance(obj, Iterable):
        raise TypeError(f"{where} is not a TypeCodec or an iterable of them")
    out = list(obj)
    if not all(isinstance(c, TypeCodec) for c in out):
        raise TypeError(f"{where} holds something that is not a TypeCodec")
    return out

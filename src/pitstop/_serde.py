"""Serializers (value <-> tagged bytes), metadata encoding and checksums.

JSON is the default and is strict: it accepts only values that come back with
the same types and values (``None``, ``bool``, ``int``, finite ``float``,
``str``, ``list``, ``dict`` with ``str`` keys, nested at most ``MAX_DEPTH``
deep). Anything else (tuples, sets, bytes, datetimes, enum members, subclasses,
non-str keys, NaN, lone surrogates, cycles) is refused with a
``SerializationError`` that names the path inside the value, instead of being
silently changed. Pickle can run code when loading, so it is used only when
the user passes ``PickleSerializer()``.

Only the standard library is imported here: ``import pitstop`` must stay light.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._errors import SerializationError

MAX_DEPTH = 200
"""Deepest nesting of lists and dicts that JSON values may have (the top level is 1)."""

_Key = str | int
_Path = tuple[_Key, ...]
# A container being walked: (container, depth, parent frame or None, key in the
# parent; "" at the top). Parent links rebuild the path only when something is wrong.
_Frame = tuple[Any, int, Any, _Key]

_LEAF = frozenset({str, int, bool, type(None)})
"""Exact types that JSON gives back unchanged with no further check (float needs one)."""

_SERIALIZER_TAIL = "; convert it or pass serializer=PickleSerializer()"
_METADATA_TAIL = (
    "; metadata must be plain JSON (None, bool, int, finite float, str, list, dict with str keys)"
)


@runtime_checkable
class Serializer(Protocol):
    """Turns user values (outputs, state) into bytes and back."""

    @property
    def tag(self) -> str:
        """Short name stored next to every blob this serializer wrote."""
        ...

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(path: _Path) -> str:
    if not path:
        return "top level"
    parts = [f"[{key!r}]" for key in path]
    if len(parts) > 12:  # a path to depth 201 would drown the message
        parts = [*parts[:6], "...", *parts[-4:]]
    return "".join(parts)


def _path(frame: _Frame) -> _Path:
    keys: list[_Key] = []
    while frame[2] is not None:
        keys.append(frame[3])
        frame = frame[2]
    return tuple(reversed(keys))


def _what(value: object) -> str:
    """Why a value that is not a container is refused."""
    kind = type(value)
    name = kind.__qualname__
    if kind is float:
        return f"float {value!r} is not JSON (NaN and infinity are refused)"
    if kind is tuple:
        return "tuple is not JSON (it would come back as a list)"
    for base in (int, float, str, list, dict):
        if isinstance(value, base):
            plain = base.__name__
            return f"{name} is not JSON (a subclass of {plain} would come back as a plain {plain})"
    return f"{name} is not JSON"


def _too_deep(frame: _Frame) -> tuple[_Path, str]:
    """A container past MAX_DEPTH: a cycle when it repeats an ancestor, else just deep."""
    chain: list[_Frame] = []
    current: _Frame | None = frame
    while current is not None:
        chain.append(current)
        current = current[2]
    chain.reverse()
    first: dict[int, _Frame] = {}
    for link in chain:
        seen = first.setdefault(id(link[0]), link)
        if seen is not link:
            return _path(link), (
                f"circular reference: this {type(link[0]).__name__} is its own ancestor "
                f"at {_where(_path(seen))}"
            )
    return _path(frame), f"nested deeper than {MAX_DEPTH} levels (depth {frame[1]})"


def _problem(value: object) -> tuple[_Path, str] | None:
    """The first value that would not come back unchanged, with its path; None if all do."""
    kind = type(value)
    if kind is not dict and kind is not list:
        if kind in _LEAF:
            return None
        if kind is float and math.isfinite(value):  # type: ignore[arg-type]
            return None
        return (), _what(value)
    # Iterative, so depth costs no Python recursion; the loops are written out
    # twice (dict, list) because this runs on every save.
    stack: list[_Frame] = [(value, 1, None, "")]
    pop, push, isfinite, leaf = stack.pop, stack.append, math.isfinite, _LEAF
    while stack:
        frame = pop()
        container, depth = frame[0], frame[1]
        if depth > MAX_DEPTH:
            return _too_deep(frame)
        if type(container) is dict:
            for key, item in container.items():
                if type(key) is not str:
                    return _path(
                        frame
                    ), f"dict key {_short(key)} ({type(key).__qualname__}) is not a str"
                kind = type(item)
                if kind in leaf:
                    continue
                if kind is dict or kind is list:
                    push((item, depth + 1, frame, key))
                elif kind is not float or not isfinite(item):
                    return (*_path(frame), key), _what(item)
        elif not leaf.issuperset(map(type, container)):  # a list of leaves is checked in C
            for index, item in enumerate(container):
                kind = type(item)
                if kind in leaf:
                    continue
                if kind is dict or kind is list:
                    push((item, depth + 1, frame, index))
                elif kind is not float or not isfinite(item):
                    return (*_path(frame), index), _what(item)
    return None


def _leaves(value: object) -> Iterator[tuple[_Path, object, bool]]:
    """(path, leaf or dict key, is_key) of a value that already passed ``_problem``."""
    stack: list[tuple[_Path, object]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if type(item) is dict:
            for key, child in item.items():
                yield path, key, True
                stack.append(((*path, key), child))
        elif type(item) is list:
            stack.extend(((*path, i), child) for i, child in enumerate(item))
        else:
            yield path, item, False


def _late_problem(value: object) -> tuple[_Path, str] | None:
    """What made the encoder fail on a value the walker accepted (rare: found lazily)."""
    for path, leaf, is_key in _leaves(value):
        if type(leaf) is str:
            try:
                leaf.encode("utf-8")
            except UnicodeEncodeError:
                what = "dict key" if is_key else "str"
                return (
                    path,
                    f"{what} {_short(leaf)} has a lone surrogate, which UTF-8 cannot encode",
                )
        elif type(leaf) is int:
            try:
                repr(leaf)
            except ValueError:
                return path, "int has too many digits to write (see sys.set_int_max_str_digits)"
    return None


def _encode(value: object, encode: Callable[[Any], bytes], prefix: str, tail: str) -> bytes:
    found = _problem(value)
    cause: BaseException | None = None
    if found is None:
        try:
            return encode(value)
        except (ValueError, RecursionError, msgspec.EncodeError) as exc:
            found = _late_problem(value) or ((), f"cannot be written as JSON: {exc}")
            cause = exc
    path, what = found
    raise SerializationError(f"{prefix}at {_where(path)}: {what}{tail}", tag="json") from cause


# Built once. msgspec is the fastest safe JSON codec here (about 4x the stdlib on
# load); the walker above has already refused everything it would write loosely.
_ENCODE = msgspec.json.Encoder().encode
_ENCODE_SORTED = msgspec.json.Encoder(order="sorted").encode
_DECODE = msgspec.json.Decoder().decode


def _decode(data: bytes) -> Any:
    """Strict UTF-8 JSON to a value; ValueError when it is not."""
    try:
        return _DECODE(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from exc


class JsonSerializer:
    """Strict JSON: only values that come back with the same types and values.

    Output is compact UTF-8 with dict key order kept.
    """

    tag = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``.

        Raises:
            SerializationError: a part of ``value`` is not plain JSON; the message
                names its path, e.g. ``at ['rows'][3]['when']``.
        """
        return _encode(value, _ENCODE, "", _SERIALIZER_TAIL)

    def loads_many(self, blobs: list[bytes]) -> list[Any]:
        """Decode many blobs written by ``dumps`` in one pass (a restore's outputs).

        Raises:
            SerializationError: some blob is not JSON; the caller then decodes one
                by one to name it.
        """
        values: list[Any] = self.loads(b"[" + b",".join(blobs) + b"]")
        return values

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by ``dumps``.

        Raises:
            SerializationError: ``data`` is not UTF-8 JSON (or is nested too deep to parse).
        """
        try:
            return _decode(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise SerializationError(f"invalid JSON: {exc}", tag=self.tag) from exc
        except RecursionError as exc:
            raise SerializationError(
                "invalid JSON: nested too deep to parse", tag=self.tag
            ) from exc


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    """Checkpoint metadata as compact UTF-8 JSON with sorted keys.

    Raises:
        SerializationError: ``metadata`` is not a mapping with str keys and plain
            JSON values (the same rules as ``JsonSerializer``; nothing is coerced).
    """
    if not isinstance(metadata, Mapping):
        raise SerializationError(
            f"metadata must be a mapping with str keys, got {type(metadata).__qualname__}",
            tag="json",
        )
    return _encode(dict(metadata), _ENCODE_SORTED, "metadata ", _METADATA_TAIL)


def decode_metadata(data: bytes) -> dict[str, Any]:
    """Metadata written by ``encode_metadata``.

    Raises:
        ValueError: ``data`` is not a UTF-8 JSON object.
    """
    try:
        meta = _decode(data)
    except RecursionError as exc:
        raise ValueError("metadata is not JSON: nested too deep to parse") from exc
    except ValueError as exc:
        raise ValueError(f"metadata is not JSON: {exc}") from exc
    if type(meta) is not dict:
        raise ValueError(f"metadata is not a JSON object (found {type(meta).__name__})")
    return meta


class PickleSerializer:
    """Pickle: any picklable value. Opt-in only: loading pickle can run code."""

    tag = "pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self._protocol = protocol

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=self._protocol)
        except Exception as exc:  # pickle raises many types (PicklingError, TypeError, ...)
            raise SerializationError(
                f"cannot pickle {type(value).__name__}: {exc}", tag=self.tag
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle: {exc}", tag=self.tag) from exc

"""Serializers (value <-> tagged bytes) and checksums.

JSON is the default and is strict: a value that would not come back equal
(tuples, sets, bytes, datetimes, non-str keys, NaN) is refused with
``SerializationError`` instead of being silently changed. Pickle can run code
when loading, so it is used only when the user passes ``PickleSerializer()``.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import pydantic_core

from ._errors import SerializationError


@runtime_checkable
class Serializer(Protocol):
    """Turns user values (outputs, state) into bytes and back."""

    @property
    def tag(self) -> str:
        """Short name stored next to every blob this serializer wrote."""
        ...

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Strict JSON: only values that round-trip unchanged."""

    tag = "json"

    def __init__(self, *, verify_roundtrip: bool = True) -> None:
        self._verify = verify_roundtrip

    def dumps(self, value: Any) -> bytes:
        try:
            data = pydantic_core.to_json(value, inf_nan_mode="strings")
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot encode {type(value).__name__} as JSON: {exc}", tag=self.tag
            ) from exc
        if self._verify and pydantic_core.from_json(data) != value:
            raise SerializationError(
                f"{type(value).__name__} value does not round-trip through JSON (tuple, set, "
                "bytes, datetime, non-str dict key or NaN inside?); convert it to plain "
                "JSON types or pass serializer=PickleSerializer()",
                tag=self.tag,
            )
        return data

    def loads(self, data: bytes) -> Any:
        try:
            return pydantic_core.from_json(data)
        except ValueError as exc:
            raise SerializationError(f"invalid JSON: {exc}", tag=self.tag) from exc


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


def checksum(parts: Iterable[bytes]) -> str:
    """sha256 over length-prefixed parts (so part boundaries count)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()

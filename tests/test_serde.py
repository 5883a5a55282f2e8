"""Serializers: strict JSON by default, pickle only when chosen."""

import datetime as dt
import math
from typing import Any

import pytest

from pitstop import JsonSerializer, PickleSerializer, SerializationError, Serializer
from pitstop._serde import checksum


@pytest.mark.parametrize(
    "value",
    [None, 0, -3, 1.5, "héllo", True, [], {}, {"a": [1, {"b": None}], "c": "x"}, [1, "2", 3.0]],
)
def test_json_round_trips_plain_values(value: Any) -> None:
    s = JsonSerializer()
    assert s.loads(s.dumps(value)) == value


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1: "a"}, b"raw", {1, 2}, dt.datetime(2026, 1, 1), math.nan, object(), [(1,)]],
    ids=["tuple", "int-key", "bytes", "set", "datetime", "nan", "object", "nested-tuple"],
)
def test_json_refuses_values_it_would_change(value: Any) -> None:
    with pytest.raises(SerializationError) as err:
        JsonSerializer().dumps(value)
    assert err.value.tag == "json"


def test_json_without_verification_converts_tuples() -> None:
    s = JsonSerializer(verify_roundtrip=False)
    assert s.loads(s.dumps((1, 2))) == [1, 2]


def test_json_loads_garbage_raises_serialization_error() -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().loads(b"{not json")


def test_pickle_round_trips_rich_values() -> None:
    s = PickleSerializer()
    value = {"when": dt.datetime(2026, 1, 1), "pair": (1, 2), "raw": b"\x00", "set": {1}}
    assert s.loads(s.dumps(value)) == value
    assert s.tag == "pickle"


def test_pickle_errors_are_typed() -> None:
    s = PickleSerializer()
    with pytest.raises(SerializationError):
        s.dumps(lambda: 1)
    with pytest.raises(SerializationError):
        s.loads(b"not a pickle")


def test_serializers_satisfy_protocol() -> None:
    assert isinstance(JsonSerializer(), Serializer)
    assert isinstance(PickleSerializer(), Serializer)


def test_checksum_counts_part_boundaries() -> None:
    assert checksum([b"ab", b"c"]) != checksum([b"a", b"bc"])
    assert checksum([b"x"]) == checksum([b"x"])
    assert len(checksum([])) == 64

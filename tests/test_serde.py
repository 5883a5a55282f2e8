"""Serializers: strict JSON by default, pickle only when chosen; metadata encoding."""

import collections
import datetime as dt
import decimal
import enum
import math
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from pitstop import JsonSerializer, PickleSerializer, SerializationError, Serializer
from pitstop._serde import MAX_DEPTH, decode_metadata, encode_metadata

PICKLE_HINT = "; convert it or pass serializer=PickleSerializer()"


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class MyInt(int):
    pass


class MyStr(str):
    __slots__ = ()


class MyList(list[int]):
    pass


def same(a: object, b: object) -> bool:
    """Equal with the same exact types all the way down (1 == True == 1.0 is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def nested_lists(depth: int) -> list[Any]:
    """``depth`` lists inside each other, built without recursion."""
    top: list[Any] = []
    current = top
    for _ in range(depth - 1):
        inner: list[Any] = []
        current.append(inner)
        current = inner
    return top


def nested_dicts(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    current = top
    for _ in range(depth - 1):
        inner: dict[str, Any] = {}
        current["k"] = inner
        current = inner
    return top


def refused(value: object) -> SerializationError:
    with pytest.raises(SerializationError) as err:
        JsonSerializer().dumps(value)
    assert err.value.tag == "json"
    assert err.value.node_id is None
    return err.value


# --- accepted values ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -3,
        2**100,
        -(2**200),
        1.5,
        -0.0,
        1e308,
        5e-324,
        "",
        "héllo",
        '日本語 🎉 \u2028 \x00 "quoted" \\ back',
        [],
        {},
        [1, "2", 3.0, None, True, 1.0, 0],
        {"a": [1, {"b": None, "c": [[], {}]}], "d": {"e": {"f": "g"}}, "": 1},
        {"ключ": "значение", "🎉": ["x"]},
    ],
    ids=lambda v: repr(v)[:30],
)
def test_json_round_trips_with_same_types(value: Any) -> None:
    s = JsonSerializer()
    assert same(s.loads(s.dumps(value)), value)


def test_json_keeps_dict_key_order() -> None:
    s = JsonSerializer()
    value = {"b": 1, "a": 2, "c": {"z": 1, "y": 2}}
    data = s.dumps(value)
    assert data == b'{"b":1,"a":2,"c":{"z":1,"y":2}}'
    back = s.loads(data)
    assert list(back) == ["b", "a", "c"]
    assert list(back["c"]) == ["z", "y"]


def test_json_output_is_compact_utf8() -> None:
    data = JsonSerializer().dumps({"k": "é🎉", "l": [1, 2.5, None, True]})
    assert data == '{"k":"é🎉","l":[1,2.5,null,true]}'.encode()


def test_json_shared_sublists_are_not_cycles() -> None:
    s = JsonSerializer()
    shared = [1, 2]
    assert s.loads(s.dumps({"a": shared, "b": [shared, shared]})) == {
        "a": [1, 2],
        "b": [[1, 2], [1, 2]],
    }


def test_json_accepts_exactly_max_depth() -> None:
    assert MAX_DEPTH == 200
    s = JsonSerializer()
    value = nested_lists(MAX_DEPTH)
    assert s.loads(s.dumps(value)) == value
    deep_dict = nested_dicts(MAX_DEPTH)
    assert s.loads(s.dumps(deep_dict)) == deep_dict


# --- refused values ------------------------------------------------------------


def test_json_error_names_the_path_inside_the_value() -> None:
    err = refused({"rows": [0, 1, 2, {"when": dt.datetime(2026, 1, 1)}]})
    assert err.message == f"at ['rows'][3]['when']: datetime is not JSON{PICKLE_HINT}"
    assert str(err) == f"[json] {err.message}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2), "at top level: tuple is not JSON (it would come back as a list)"),
        ([(1,)], "at [0]: tuple is not JSON"),
        ({1, 2}, "at top level: set is not JSON"),
        ({"s": frozenset()}, "at ['s']: frozenset is not JSON"),
        (b"raw", "at top level: bytes is not JSON"),
        ([bytearray(b"x")], "at [0]: bytearray is not JSON"),
        ({"d": dt.date(2026, 1, 1)}, "at ['d']: date is not JSON"),
        ([decimal.Decimal("1.5")], "at [0]: Decimal is not JSON"),
        (object(), "at top level: object is not JSON"),
        (
            {"c": Color.RED},
            "at ['c']: Color is not JSON (a subclass of int would come back as a plain int)",
        ),
        (
            [Mode.FAST],
            "at [0]: Mode is not JSON (a subclass of str would come back as a plain str)",
        ),
        ([MyInt(3)], "at [0]: MyInt is not JSON (a subclass of int"),
        ({"s": MyStr("x")}, "at ['s']: MyStr is not JSON (a subclass of str"),
        ({"l": MyList([1])}, "at ['l']: MyList is not JSON (a subclass of list"),
        (
            {"o": collections.OrderedDict(a=1)},
            "at ['o']: OrderedDict is not JSON (a subclass of dict would come back as a plain",
        ),
        (math.nan, "at top level: float nan is not JSON (NaN and infinity are refused)"),
        ({"x": [1.0, math.inf]}, "at ['x'][1]: float inf is not JSON"),
        ([-math.inf], "at [0]: float -inf is not JSON"),
        ({1: "a"}, "at top level: dict key 1 (int) is not a str"),
        ({"a": {True: 1}}, "at ['a']: dict key True (bool) is not a str"),
        ({"a": [{(1, 2): 1}]}, "at ['a'][0]: dict key (1, 2) (tuple) is not a str"),
        ({None: 1}, "at top level: dict key None (NoneType) is not a str"),
        ({Mode.FAST: 1}, "at top level: dict key <Mode.FAST: 'fast'> (Mode) is not a str"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_json_refuses_values_that_would_change(value: object, expected: str) -> None:
    err = refused(value)
    assert err.message.startswith(expected)
    assert err.message.endswith(PICKLE_HINT)


def test_json_refuses_one_level_too_deep() -> None:
    err = refused({"top": nested_lists(MAX_DEPTH)})
    assert "nested deeper than 200 levels (depth 201)" in err.message
    assert err.message.startswith("at ['top'][0][0][0][0][0]...[0][0][0][0]: ")


@pytest.mark.parametrize("build", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_json_refuses_very_deep_values_without_recursion_error(
    build: Any,
) -> None:
    err = refused(build(100_000))
    assert "nested deeper than 200 levels" in err.message


def test_json_refuses_a_list_that_contains_itself() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    err = refused(loop)
    assert err.message.startswith(
        "at [1]: circular reference: this list is its own ancestor at top level"
    )


def test_json_refuses_a_dict_cycle_below_the_top() -> None:
    inner: dict[str, Any] = {}
    inner["y"] = {"z": inner}
    err = refused({"x": [inner]})
    assert err.message.startswith(
        "at ['x'][0]['y']['z']: circular reference: this dict is its own ancestor at ['x'][0]"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\ud800", "at top level: str '\\ud800' has a lone surrogate"),
        (["ok", "a\udfffb"], "at [1]: str 'a\\udfffb' has a lone surrogate"),
        ({"a": {"\udc00": 1}}, "at ['a']: dict key '\\udc00' has a lone surrogate"),
    ],
    ids=["top", "list", "key"],
)
def test_json_refuses_lone_surrogates(value: object, expected: str) -> None:
    err = refused(value)
    assert err.message.startswith(expected)
    assert "which UTF-8 cannot encode" in err.message


def test_json_refuses_ints_too_long_to_write() -> None:
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        err = refused({"n": [1, 10**5000]})
    finally:
        sys.set_int_max_str_digits(limit)
    assert err.message.startswith("at ['n'][1]: int has too many digits to write")


def test_json_serializer_takes_no_options() -> None:
    with pytest.raises(TypeError):
        JsonSerializer(verify_roundtrip=False)  # type: ignore[call-arg]


# --- loads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "invalid JSON: JSON is malformed: object keys must be strings"),
        (b"", "invalid JSON: Input data was truncated"),
        (b"[1] 2", "invalid JSON: JSON is malformed: trailing characters"),
        (b"\xff\xfe", "invalid JSON: JSON is malformed: invalid character (byte 0)"),
        ('{"a":1}'.encode("utf-16"), "invalid JSON: JSON is malformed: invalid character (byte 0)"),
        (b"NaN", "invalid JSON: JSON is malformed: invalid character (byte 0)"),
        (b"[Infinity]", "invalid JSON: JSON is malformed: invalid character (byte 1)"),
        (b'{"a":-Infinity}', "invalid JSON: JSON is malformed: invalid character (byte 6)"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deep to parse"),
    ],
    ids=["garbage", "empty", "extra", "not-utf8", "utf16", "nan", "inf", "-inf", "deep"],
)
def test_json_loads_refuses_invalid_input(data: bytes, expected: str) -> None:
    with pytest.raises(SerializationError) as err:
        JsonSerializer().loads(data)
    assert err.value.tag == "json"
    assert err.value.message.startswith(expected)


# --- metadata ----------------------------------------------------------------------


def test_metadata_is_sorted_compact_utf8() -> None:
    meta = {"b": 1, "a": "é", "c": [1, {"y": 1, "x": 2.5}], "d": None}
    data = encode_metadata(meta)
    assert data == '{"a":"é","b":1,"c":[1,{"x":2.5,"y":1}],"d":null}'.encode()
    assert decode_metadata(data) == meta


def test_metadata_accepts_any_mapping() -> None:
    proxy = types.MappingProxyType({"z": True, "a": [1]})
    assert encode_metadata(proxy) == b'{"a":[1],"z":true}'
    assert encode_metadata({}) == b"{}"
    assert decode_metadata(b"{}") == {}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("a", 1)], "metadata must be a mapping with str keys, got list"),
        ("ab", "metadata must be a mapping with str keys, got str"),
        ({"a": (1, 2)}, "metadata at ['a']: tuple is not JSON"),
        ({1: "a"}, "metadata at top level: dict key 1 (int) is not a str"),
        ({"a": {2: "b"}}, "metadata at ['a']: dict key 2 (int) is not a str"),
        ({"a": [math.nan]}, "metadata at ['a'][0]: float nan is not JSON"),
        ({"when": dt.datetime(2026, 1, 1)}, "metadata at ['when']: datetime is not JSON"),
        ({"k": "\ud800"}, "metadata at ['k']: str '\\ud800' has a lone surrogate"),
        ({"deep": nested_lists(300)}, "metadata at ['deep'][0][0][0][0][0]...[0][0][0][0]: nested"),
    ],
    ids=[
        "list",
        "str",
        "tuple",
        "int-key",
        "nested-int-key",
        "nan",
        "datetime",
        "surrogate",
        "deep",
    ],
)
def test_metadata_refuses_what_json_would_change(metadata: Any, expected: str) -> None:
    with pytest.raises(SerializationError) as err:
        encode_metadata(metadata)
    assert err.value.tag == "json"
    assert err.value.message.startswith(expected)
    assert "PickleSerializer" not in err.value.message  # metadata is always JSON


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[]", "metadata is not a JSON object (found list)"),
        (b'"x"', "metadata is not a JSON object (found str)"),
        (b"null", "metadata is not a JSON object (found NoneType)"),
        (b"{", "metadata is not JSON: Input data was truncated"),
        (b"", "metadata is not JSON: Input data was truncated"),
        (b"\xff", "metadata is not JSON: JSON is malformed: invalid character (byte 0)"),
        (b'{"a":NaN}', "metadata is not JSON: JSON is malformed: invalid character (byte 5)"),
        (b'{"a":' * 100_000, "metadata is not JSON: nested too deep to parse"),
    ],
    ids=["list", "str", "null", "garbage", "empty", "not-utf8", "nan", "deep"],
)
def test_decode_metadata_refuses_non_objects(data: bytes, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        decode_metadata(data)
    assert str(err.value).startswith(expected)


# --- imports ---------------------------------------------------------------------


def test_serde_imports_no_heavy_packages() -> None:
    """_serde (with the _errors it needs) loads on the stdlib alone."""
    import pitstop._serde

    package_dir = str(Path(pitstop._serde.__file__).parent)
    code = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("pitstop")  # skip __init__: test this module alone
        package.__path__ = [{package_dir!r}]
        sys.modules["pitstop"] = package
        import pitstop._serde
        heavy = ("pydantic", "pydantic_core", "sqlalchemy", "sqlmodel")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


# --- pickle, protocol ------------------------------------------------------


def test_pickle_round_trips_rich_values() -> None:
    s = PickleSerializer()
    value = {"when": dt.datetime(2026, 1, 1), "pair": (1, 2), "raw": b"\x00", "set": {1}}
    assert s.loads(s.dumps(value)) == value
    assert s.tag == "pickle"


def test_pickle_errors_are_typed() -> None:
    s = PickleSerializer()
    with pytest.raises(SerializationError, match="cannot pickle function"):
        s.dumps(lambda: 1)
    with pytest.raises(SerializationError, match="cannot unpickle"):
        s.loads(b"not a pickle")


def test_serializers_satisfy_protocol() -> None:
    assert isinstance(JsonSerializer(), Serializer)
    assert isinstance(PickleSerializer(), Serializer)
    assert JsonSerializer().tag == "json"

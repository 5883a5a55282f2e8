"""numpy arrays and scalars, pandas frames, series, indexes and scalars for the typed codec.

Imported only when such a value is seen (writing) or read: a pipeline that
has no numpy output never imports numpy through pitstop.

numpy: any dtype but ``object`` (bool, ints, floats, complex, datetime64,
timedelta64, bytes, str, void and structured), shape and memory order kept;
raw data, copied once each way. ``np.lib.format``'s dtype descriptions are
plain values: reading them runs no code.

pandas: columns of numpy dtypes (``object`` columns are encoded value by
value), ``category``, the nullable ``Int*``/``UInt*``/``Float*``/``boolean``
dtypes, ``string``/``str``, tz-aware ``datetime64``; ``RangeIndex``,
``MultiIndex`` and other indexes with their names (and a datetime index's
freq); ``Timestamp``, ``Timedelta``, ``NaT`` and ``NA``. Other extension
dtypes (period, interval, sparse, Arrow) are refused with the column's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgspec.msgpack import Ext

from .._errors import SerializationError
from ._format import NDARRAY, NPSCALAR, PANDAS, _pack, _Refused

if TYPE_CHECKING:
    from ._typed import Decoder, Encoder


# -- numpy ----------------------------------------------------------------------


def _descr(np: Any, dtype: Any) -> Any:
    if dtype.hasobject:
        raise _Refused(
            f"numpy dtype {dtype} holds Python objects, which the typed codec does not save "
            "as raw data; convert with .tolist() or to a typed dtype"
        )
    return np.lib.format.dtype_to_descr(dtype)


def _ndarray(enc: Encoder, arr: Any, depth: int) -> Ext:
    import numpy as np

    descr = enc.walk(_descr(np, arr.dtype), depth + 1)
    if arr.flags.c_contiguous:
        order, src = 0, arr
    elif arr.flags.f_contiguous:
        order, src = 1, arr.T
    else:
        order, src = 0, np.ascontiguousarray(arr)
    raw = src.reshape(-1).view(np.uint8) if src.size and src.dtype.itemsize else b""
    record = [1] if arr.dtype.type is np.record else []  # the descr does not say it
    return Ext(NDARRAY, _pack((descr, list(arr.shape), order, enc.buffer(raw), *record)))


def encode_numpy(enc: Encoder, value: Any, depth: int) -> Any:
    import numpy as np

    if type(value) is np.ndarray:
        return _ndarray(enc, value, depth)
    if isinstance(value, np.generic):
        descr = enc.walk(_descr(np, value.dtype), depth + 1)
        record = [1] if type(value) is np.record else []
        return Ext(NPSCALAR, _pack((descr, value.tobytes(), *record)))
    raise _Refused(f"{type(value).__module__}.{type(value).__qualname__} is not supported")


def _dtype(np: Any, descr: Any, record: list[Any]) -> Any:
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"damaged numpy dtype {descr!r}: {exc}", tag="typed") from exc
    return np.dtype((np.record, dtype)) if record else dtype


_MAX_EMPTY = 1 << 24
"""Elements an array of width-0 elements may claim (it holds no bytes to check them by)."""


def _nd_back(parts: list[Any]) -> Any:
    import numpy as np

    descr, shape, order, raw, *record = parts
    dtype = _dtype(np, descr, record)
    count = 1
    for n in shape:
        count *= n
    if not (count and dtype.itemsize):
        # No bytes to read: build it at its shape (a copy of a reshaped array of
        # elements of width 0 would step through every one of them: damaged data
        # claiming 2**60 of them would never finish).
        if count > _MAX_EMPTY:
            raise SerializationError(
                f"damaged numpy array: {count} elements of width 0", tag="typed"
            )
        return np.empty(shape, dtype=dtype, order="F" if order else "C")
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    if order:
        return flat.reshape(shape[::-1]).T.copy(order="K")  # F order kept
    return flat.reshape(shape).copy()  # writable, and not a view of the stored blob


def decode(dec: Decoder, code: int, data: memoryview) -> Any:
    if code == NDARRAY:
        return _nd_back(dec.decode(data))
    if code == NPSCALAR:
        import numpy as np

        descr, raw, *record = dec.decode(data)
        dtype = _dtype(np, descr, record)
        if not dtype.itemsize:  # np.bytes_(b""), np.str_(""), np.void(b""): no item to read
            return dtype.type(b"" if dtype.kind in "SV" else "")
        return np.frombuffer(raw, dtype=dtype, count=1)[0]
    return _pandas_back(dec.decode(data))


# -- pandas ---------------------------------------------------------------------


def _values(enc: Encoder, obj: Any, depth: int, where: str) -> tuple[Any, ...]:
    """The values of a series or an index."""
    import numpy as np
    import pandas as pd

    dtype = obj.dtype
    if isinstance(dtype, np.dtype):
        nd = obj.to_numpy()
        if dtype.kind == "O":
            return ("obj", enc.walk(nd.tolist(), depth + 1))
        return ("np", _ndarray(enc, nd, depth))
    arr = obj.array
    if isinstance(dtype, pd.CategoricalDtype):
        return ("cat", _ndarray(enc, np.asarray(arr.codes), depth),
                _index(enc, dtype.categories, depth + 1), bool(dtype.ordered))  # fmt: skip
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = np.asarray(arr.asi8).view(f"M8[{dtype.unit}]")
        return ("dttz", _tz_name(dtype.tz, where), _ndarray(enc, utc, depth))
    if isinstance(dtype, pd.StringDtype):
        nan = dtype.na_value is not pd.NA
        objects = arr.to_numpy(dtype=object, na_value=None)
        if _repetitive(objects):
            # Few distinct strings (categories in all but name): each once, plus codes.
            # Decoding 1M short strings costs ~90 ms one by one, ~15 ms this way.
            codes, uniques = pd.factorize(objects, use_na_sentinel=True)
            small = np.int16 if len(uniques) < 32_000 else np.int32
            return ("strdict", dtype.storage, nan, _ndarray(enc, codes.astype(small), depth),
                    uniques.tolist())  # fmt: skip
        return ("str", dtype.storage, nan, objects.tolist())
    if type(dtype).__name__ in _MASKED:
        data = arr.to_numpy(dtype=dtype.numpy_dtype, na_value=_zero(dtype))
        mask = np.asarray(arr.isna())
        return ("masked", str(dtype), _ndarray(enc, data, depth), _ndarray(enc, mask, depth))
    raise _Refused(
        f"pandas dtype {dtype} ({where}) is not supported; convert it with .astype(...) "
        "or register a codec"
    )


def _tz_name(tz: Any, where: str) -> str:
    """``str(tz)``, which the reader turns back into a zone, if that gives ``tz`` back."""
    name = str(tz)
    if not _tz_name_exact(tz, name):
        raise _Refused(
            f"time zone {tz!r} ({where}) would not read back as the same zone; use a "
            "zoneinfo.ZoneInfo zone or an unnamed datetime.timezone offset"
        )
    return name


def _tz_name_exact(tz: Any, name: str) -> bool:
    import datetime as dt

    import pandas as pd

    try:
        back = pd.Timestamp(0, tz=name).tzinfo  # as the reader's tz_convert(name) reads it
    except Exception:
        return False
    same = type(back) is type(tz) and back == tz
    # timezone(+1h, "CET") == timezone(+1h): the name tells them apart
    return same and (not isinstance(tz, dt.timezone) or tz.tzname(None) == back.tzname(None))


def _repetitive(objects: Any) -> bool:
    """Whether a long string column repeats a few values (judged on its first 8,192)."""
    if len(objects) < 4096:
        return False
    sample = objects[:8192]
    return len(set(sample.tolist())) * 4 <= len(sample)


_MASKED = {f"{k}{n}Dtype" for k in ("Int", "UInt") for n in (8, 16, 32, 64)} | {
    "Float32Dtype", "Float64Dtype", "BooleanDtype"}  # fmt: skip


def _zero(dtype: Any) -> Any:
    return False if type(dtype).__name__ == "BooleanDtype" else 0


def _index(enc: Encoder, idx: Any, depth: int) -> tuple[Any, ...]:
    import pandas as pd

    name = enc.walk(idx.name, depth + 1) if not isinstance(idx, pd.MultiIndex) else None
    if type(idx) is pd.RangeIndex:
        return ("range", idx.start, idx.stop, idx.step, name)
    if isinstance(idx, pd.MultiIndex):
        import numpy as np

        levels = [_index(enc, level, depth + 1) for level in idx.levels]
        codes = [_ndarray(enc, np.asarray(c), depth) for c in idx.codes]
        return ("multi", levels, codes, enc.walk(list(idx.names), depth + 1))
    freq = getattr(idx, "freqstr", None) if isinstance(idx, pd.DatetimeIndex) else None
    return ("index", _values(enc, idx, depth, "index"), name, freq)


def encode_pandas(enc: Encoder, value: Any, depth: int) -> Any:
    import pandas as pd

    if type(value) is pd.DataFrame:
        cols = []
        for i in range(value.shape[1]):
            column = value.iloc[:, i]
            cols.append(_values(enc, column, depth, f"column {value.columns[i]!r}"))
        payload: tuple[Any, ...] = ("frame", _index(enc, value.columns, depth),
                                    _index(enc, value.index, depth), cols)  # fmt: skip
    elif type(value) is pd.Series:
        payload = ("series", _values(enc, value, depth, f"series {value.name!r}"),
                   _index(enc, value.index, depth), enc.walk(value.name, depth + 1))  # fmt: skip
    elif isinstance(value, pd.Index):
        payload = ("idx", _index(enc, value, depth))
    elif value is pd.NaT:
        payload = ("nat",)
    elif value is pd.NA:
        payload = ("na",)
    elif type(value) is pd.Timestamp:
        tz = None if value.tz is None else _tz_name(value.tz, "Timestamp")
        utc = value if value.tz is None else value.tz_convert("UTC").tz_localize(None)
        payload = ("ts", encode_numpy(enc, utc.asm8, depth), tz)
    elif type(value) is pd.Timedelta:
        payload = ("td", encode_numpy(enc, value.asm8, depth))
    else:
        raise _Refused(f"{type(value).__module__}.{type(value).__qualname__} is not supported")
    return Ext(PANDAS, _pack(payload))


def _values_back(parts: list[Any]) -> Any:
    import numpy as np
    import pandas as pd

    kind = parts[0]
    if kind == "np":
        return parts[1]
    if kind == "obj":
        values = parts[1]
        out = np.empty(len(values), dtype=object)
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            for i, v in enumerate(values):
                out[i] = v
        else:
            out[:] = values
        return out
    if kind == "cat":
        categories = _index_back(parts[2])
        dtype = pd.CategoricalDtype(categories, ordered=parts[3])
        return pd.Categorical.from_codes(parts[1], dtype=dtype)
    if kind == "dttz":
        return pd.DatetimeIndex(parts[2]).tz_localize("UTC").tz_convert(parts[1]).array
    if kind == "str":
        storage, nan, values = parts[1], parts[2], parts[3]
        dtype = pd.StringDtype(storage, na_value=np.nan if nan else pd.NA)
        return pd.array(values, dtype=dtype)
    if kind == "strdict":
        storage, nan, codes, uniques = parts[1], parts[2], parts[3], parts[4]
        table = np.empty(len(uniques) + 1, dtype=object)  # the last entry: missing (code -1)
        table[:-1] = uniques
        dtype = pd.StringDtype(storage, na_value=np.nan if nan else pd.NA)
        return pd.array(table.take(codes), dtype=dtype)
    if kind == "masked":
        dtype = pd.api.types.pandas_dtype(parts[1])
        return dtype.construct_array_type()(parts[2], parts[3])
    raise SerializationError(f"unknown pandas values kind {kind!r}", tag="typed")


def _index_back(parts: list[Any]) -> Any:
    import pandas as pd

    kind = parts[0]
    if kind == "range":
        return pd.RangeIndex(parts[1], parts[2], parts[3], name=parts[4])
    if kind == "multi":
        levels = [_index_back(level) for level in parts[1]]
        return pd.MultiIndex(levels=levels, codes=parts[2], names=parts[3], verify_integrity=False)
    values, name, freq = _values_back(parts[1]), parts[2], parts[3]
    if freq is not None:
        return pd.DatetimeIndex(values, freq=freq, name=name)
    dtype = getattr(values, "dtype", None)
    return pd.Index(values, name=name, dtype=dtype, copy=False)


def _pandas_back(parts: list[Any]) -> Any:
    import pandas as pd

    kind = parts[0]
    if kind == "frame":
        columns, index = _index_back(parts[1]), _index_back(parts[2])
        series = {}
        for i, col in enumerate(parts[3]):
            values = _values_back(col)
            series[i] = pd.Series(values, index=index, dtype=values.dtype, copy=False)
        frame = pd.DataFrame(series, index=index, copy=False)
        frame.columns = columns
        return frame
    if kind == "series":
        values = _values_back(parts[1])
        return pd.Series(values, index=_index_back(parts[2]), name=parts[3], dtype=values.dtype,
                         copy=False)  # fmt: skip
    if kind == "idx":
        return _index_back(parts[1])
    if kind == "nat":
        return pd.NaT
    if kind == "na":
        return pd.NA
    if kind == "ts":
        ts = pd.Timestamp(parts[1])
        return ts if parts[2] is None else ts.tz_localize("UTC").tz_convert(parts[2])
    if kind == "td":
        return pd.Timedelta(parts[1])
    raise SerializationError(f"unknown pandas value kind {kind!r}", tag="typed")

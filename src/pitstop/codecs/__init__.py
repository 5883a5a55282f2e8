"""Serializers and how their bytes are stored.

- ``TypedSerializer`` (the default): exact round trips of typed Python values,
  numpy and pandas included, without running code on load.
- ``JsonSerializer``: strict JSON (the default of pitstop 0.1; still read).
- ``PickleSerializer``: anything picklable; opt-in for writing and reading.
- ``TypeCodec``: teach the typed serializer a type of your own.
- ``Envelope`` / ``AesGcmKeys``: compression, deduplication, encryption at rest.
"""

from __future__ import annotations

from .._serde import JsonSerializer, PickleSerializer, Serializer
from ._envelope import AesGcmKeys, Envelope
from ._format import TypeCodec, entry_point_codecs, load_codec
from ._typed import TypedSerializer

__all__ = [
    "AesGcmKeys",
    "Envelope",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "TypeCodec",
    "TypedSerializer",
    "entry_point_codecs",
    "load_codec",
]

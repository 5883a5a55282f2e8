"""Store targets: a SQLite path, or a database URL. Typos raise, never become files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

_SQLITE = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
_POSTGRES = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg",
             "postgresql+psycopg2"}  # fmt: skip
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_SCHEME_COLON = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_KNOWN_SLASHES = re.compile(r"^(sqlite|postgres|postgresql)(\+\w+)?//", re.I)
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["sqlite", "postgresql"]
    location: str
    """The SQLite file path, or a libpq connection URL."""


def parse_target(target: str | os.PathLike[str]) -> Target:
    """Where a store lives.

    Raises:
        ValueError: empty, in-memory SQLite, an unsupported scheme, or text that
            looks like a URL but is not one (``sqlite:/x.db``, ``postgres//host``).
        TypeError: neither a str nor a path.
    """
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(f"a store target must be a str or a path, got {type(target).__name__}")
    if not target.strip():
        raise ValueError("empty store target; pass a SQLite path or a database URL")
    if target == ":memory:":
        raise ValueError("an in-memory SQLite target is not supported; use MemoryStore()")
    m = _URL.match(target)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme in _SQLITE:
            path = rest[1:] if rest.startswith("/") else rest
            if not path or path == ":memory:" or rest[:1] not in ("/", ""):
                raise ValueError(f"bad SQLite URL {target!r}: expected sqlite:///relative/path "
                                 "or sqlite:////absolute/path")  # fmt: skip
            return Target("sqlite", path)
        if scheme in _POSTGRES:
            if not rest:
                raise ValueError(f"bad PostgreSQL URL {target!r}: no host or database")
            return Target("postgresql", "postgresql://" + rest)
        raise ValueError(f"unsupported store URL scheme {scheme!r} in {target!r}; use a SQLite "
                         "path, sqlite:///path or postgresql://user@host/db")  # fmt: skip
    looks_like_url = _SCHEME_COLON.match(target) or _KNOWN_SLASHES.match(target)
    if looks_like_url and _DRIVE.match(target) is None:
        raise ValueError(f"{target!r} looks like a URL but is not one (expected scheme://...); "
                         "for a file of that name, write ./ before it")  # fmt: skip
    return Target("sqlite", target)

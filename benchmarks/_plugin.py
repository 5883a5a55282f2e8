"""Shared fixtures for the benchmarks, a pytest plugin loaded by benchmarks/run.sh (-p _plugin).

- ``loop``: one event loop per module, created once and reused: an async
  sample runs ``loop.run_until_complete(...)`` and never pays for loop creation.
- ``recorder``: collects every benchmark's summaries; at the end of the session
  they are written to ``--bench-json`` (default ``.benchmarks/latest.json``),
  which ``check_targets.py`` reads.
- ``pg_url``: a fresh PostgreSQL database for the session, dropped afterwards
  (``$PITSTOP_BENCH_PG_URL``, default the local test server); the PostgreSQL
  benchmarks skip when it is unreachable.

``examples/`` is not a package: it goes on ``sys.path`` so the overhead
benchmark can run ``examples/dag_runner.py``, the async runner users copy.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _harness import Recorder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-json",
        default=str(ROOT / ".benchmarks" / "latest.json"),
        help="where the benchmark results are written (JSON)",
    )


@pytest.fixture(scope="session")
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """Every benchmark's results; written as JSON when the session ends."""
    rec = Recorder()
    yield rec
    path = Path(str(request.config.getoption("--bench-json")))
    rec.write(path)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per benchmark module."""
    ev = asyncio.new_event_loop()
    try:
        yield ev
    finally:
        ev.run_until_complete(ev.shutdown_asyncgens())
        ev.run_until_complete(ev.shutdown_default_executor())
        ev.close()


@pytest.fixture(scope="session")
def pg_url(recorder: Recorder) -> Iterator[str]:
    """The URL of a PostgreSQL database of the session's own, dropped afterwards."""
    import psycopg

    server = os.environ.get("PITSTOP_BENCH_PG_URL", DEFAULT_PG_URL)
    server = server.replace("+asyncpg", "").replace("+psycopg", "")
    name = f"pitstop_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {server} is unreachable: {exc}")
    with admin:
        version = admin.execute("SHOW server_version").fetchone()
        recorder.machine["postgresql"] = "?" if version is None else str(version[0])
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

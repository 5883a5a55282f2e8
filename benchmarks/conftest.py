"""Shared fixtures for the benchmarks (run explicitly, see benchmarks/run.sh).

pytest-benchmark has no async support, so each module gets one event loop,
created once and reused: a benchmarked function calls
``loop.run_until_complete(make_coro())`` and never pays for loop creation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


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

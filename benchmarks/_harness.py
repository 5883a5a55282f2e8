"""Interleaved timing and the results file shared by every benchmark.

pytest-benchmark runs one benchmark to the end before the next starts, so a
baseline and its variant see different moments of the machine. Here a round
runs every variant once, back to back, in an order shuffled from round to round
(a seeded generator: the same orders every run): drift (CPU frequency, a
neighbour on the VM, the page cache) hits the baseline and its variants alike,
and the ratios between them are what the benchmarks report (STYLE rule 13).

Shuffled, not rotated: rotating the starting variant keeps the cyclic order, so
in every round but the one it started, each variant ran right after the same
one, and what that one left behind (a thread woken, a PostgreSQL round trip,
caches filled with its objects) was charged to it. Measured on the peer
restore at K=10 with its eight readers (300 rounds): rotated, pitstop's sync
reader 0.205 ms and its async reader 0.122 ms p50, AsyncSqliteSaver 0.738 ms;
shuffled, 0.178, 0.186 and 0.247 ms (the twins run the same code for a SQLite
read).

A variant is a callable that runs one sample and returns the nanoseconds it
timed. It times only what it measures: untimed setup (a new output to save, a
fresh run) happens inside it, before it reads the clock.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

Sample = Callable[[], int]
"""Runs one sample of a variant; returns the nanoseconds it timed."""


@dataclass(frozen=True)
class Summary:
    """One variant's samples, in seconds per unit (per node, per run, per save)."""

    p50: float
    p95: float
    rounds: int


@dataclass(frozen=True)
class Result:
    """One row of the results file."""

    bench: str
    """hooks, overhead, save_one, save_full or restore."""
    group: str
    """What the variants share: a runner, or a backend."""
    variant: str
    size: int
    """Nodes per run (N) or per workflow (K); for hooks, nodes per sample."""
    unit: str
    """What p50 and p95 are the time of: "node", "run" or "op"."""
    p50: float
    p95: float
    rounds: int
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating between closest ranks."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


SEED = 20261126
"""Seed of the round orders of ``interleave``."""


def interleave(
    variants: Mapping[str, Sample],
    *,
    rounds: int,
    warmup: int = 0,
    per: int = 1,
    after: dict[str, list[tuple[str, float]]] | None = None,
) -> dict[str, Summary]:
    """Run ``warmup + rounds`` rounds of every variant; summarize the timed rounds.

    Args:
        variants: name -> sample; each round calls each once, in an order of its
            own (shuffled by a generator seeded with ``SEED``).
        rounds: timed rounds (each variant gets exactly this many samples).
        warmup: untimed rounds first (caches, lazy imports, first connections).
        per: units in one sample (nodes per run...): summaries are per unit.
        after: filled, when given, with name -> (the variant that ran just before,
            this sample) for every timed sample, in order; the first of a round
            follows the last of the round before. What one variant leaves behind
            (caches filled with its objects, a database busy with its write) is
            charged to the next one: this tells how much.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    orders = random.Random(SEED)
    previous = ""
    gc.collect()
    for r in range(warmup + rounds):
        order = names[:]
        orders.shuffle(order)
        for name in order:
            ns = variants[name]()
            if r >= warmup:
                samples[name].append(ns / 1e9 / per)
                if after is not None:
                    after.setdefault(name, []).append((previous, ns / 1e9 / per))
            previous = name
    return {
        name: Summary(percentile(s, 50), percentile(s, 95), len(s)) for name, s in samples.items()
    }


def timed_async(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[object]]) -> Sample:
    """A sample that times ``await make()`` inside the (reused) loop.

    The clock is read inside the coroutine, so ``run_until_complete`` itself is
    not part of the measurement: an async runner already runs in its loop.
    """

    async def one() -> int:
        t0 = time.perf_counter_ns()
        await make()
        return time.perf_counter_ns() - t0

    def sample() -> int:
        return loop.run_until_complete(one())

    return sample


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.rstrip("\n")


def _changed() -> list[str]:
    """``git status --porcelain`` lines: files changed or added in the working tree."""
    return [line for line in _git("status", "--porcelain").splitlines() if line]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


class Recorder:
    """Collects results during a pytest session; writes them as JSON at the end."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.machine: dict[str, Any] = {"loadavg_start": os.getloadavg()}
        # The code measured is what was imported when the session started.
        self.commit = _git("rev-parse", "--short", "HEAD")
        self.tree = _changed()

    def add(
        self,
        bench: str,
        group: str,
        size: int,
        unit: str,
        summaries: Mapping[str, Summary],
        **extra: Any,
    ) -> None:
        for variant, s in summaries.items():
            self.results.append(
                Result(bench, group, variant, size, unit, s.p50, s.p95, s.rounds, dict(extra))
            )

    def write(self, path: Path) -> None:
        data = {
            "datetime": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": self.commit,
            "working_tree": self.tree,
            "commit_at_end": _git("rev-parse", "--short", "HEAD"),
            "working_tree_at_end": _changed(),
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "psycopg": _version("psycopg"),
            **self.machine,
            "loadavg_end": os.getloadavg(),
            "results": [asdict(r) for r in self.results],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")

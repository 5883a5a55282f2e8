"""Check the performance targets against a pytest-benchmark JSON file.

Usage: python benchmarks/check_targets.py [.benchmarks/latest.json]

Prints Markdown tables (each variant next to its baseline, with the ratio of
medians) and exits 1 when a target is missed, 2 when the file lacks a result.

Targets:
- disabled, flag read once per run, is within noise of no hooks at every N:
  median ratio <= 1.05, or its median inside the baseline's interquartile range;
- saving 1 changed node at K=10,000 takes at most 2x the median at K=10 (each backend).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OVERHEAD_RATIO = 1.05
SAVE_RATIO = 2.0
SAVE_SMALL, SAVE_LARGE = 10, 10_000
VARIANTS = ["site_guard", "once", "enabled"]
# Every size must be in the JSON: a missing one is an error (exit 2), not a pass.
OVERHEAD_SIZES = [100, 1_000, 10_000]
STORAGE_SIZES = [10, 1_000, 10_000]
BACKENDS = ["sqlite", "memory"]


class MissingResult(Exception):
    """The JSON file has no benchmark for a (kind, key) the checks need."""


@dataclass(frozen=True)
class Stats:
    median: float
    q1: float
    q3: float
    iqr: float
    rounds: int


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    passed: bool


class Results:
    """Benchmark stats (seconds) indexed by their ``extra_info``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._by_key: dict[tuple[str, ...], Stats] = {}
        for bench in data.get("benchmarks", []):
            info: dict[str, Any] = bench.get("extra_info", {})
            kind = info.get("kind")
            if kind is None:
                continue
            label = info.get("variant") or info.get("backend")
            size = info.get("n", info.get("k"))
            s = bench["stats"]
            stats = Stats(s["median"], s["q1"], s["q3"], s["iqr"], s["rounds"])
            self._by_key[(str(kind), str(label), str(size))] = stats

    def get(self, kind: str, label: str, size: int) -> Stats:
        found = self._by_key.get((kind, label, str(size)))
        if found is None:
            raise MissingResult(f"no result for {kind} {label} size={size}")
        return found


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def overhead(res: Results) -> tuple[str, list[Check]]:
    header = ["N", "plain (us)"]
    for v in VARIANTS:
        header += [f"{v} (us)", f"{v} / plain"]
    rows, checks = [], []
    for n in OVERHEAD_SIZES:
        base = res.get("overhead", "plain", n)
        row = [f"{n:,}", _us(base.median)]
        for v in VARIANTS:
            s = res.get("overhead", v, n)
            row += [_us(s.median), f"{s.median / base.median:.3f}"]
        rows.append(row)
        once = res.get("overhead", "once", n)
        ratio = once.median / base.median
        in_iqr = base.q1 <= once.median <= base.q3
        checks.append(
            Check(
                f"disabled, once per run ~ no hooks, N={n:,}",
                f"ratio {ratio:.3f} (limit {OVERHEAD_RATIO}); "
                f"median {'inside' if in_iqr else 'outside'} baseline IQR "
                f"[{_us(base.q1)}, {_us(base.q3)}] us",
                ratio <= OVERHEAD_RATIO or in_iqr,
            )
        )
    return _table(header, rows), checks


def by_backend(res: Results, kind: str) -> str:
    header = ["K"]
    for b in BACKENDS:
        header += [f"{b} median (ms)", f"{b} IQR (ms)", f"{b} / K={SAVE_SMALL}"]
    rows = []
    for k in STORAGE_SIZES:
        row = [f"{k:,}"]
        for b in BACKENDS:
            s, small = res.get(kind, b, k), res.get(kind, b, SAVE_SMALL)
            row += [_ms(s.median), _ms(s.iqr), f"{s.median / small.median:.2f}"]
        rows.append(row)
    return _table(header, rows)


def save_checks(res: Results) -> list[Check]:
    checks = []
    for b in BACKENDS:
        small = res.get("save_one", b, SAVE_SMALL)
        large = res.get("save_one", b, SAVE_LARGE)
        ratio = large.median / small.median
        checks.append(
            Check(
                f"save 1 changed node, {b}: K={SAVE_LARGE:,} vs K={SAVE_SMALL}",
                f"{_ms(large.median)} ms / {_ms(small.median)} ms = {ratio:.2f} "
                f"(limit {SAVE_RATIO})",
                ratio <= SAVE_RATIO,
            )
        )
    return checks


def report(res: Results) -> tuple[str, bool]:
    machine = res.data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    parts = [
        f"run: {res.data.get('datetime', '?')}, python {machine.get('python_version', '?')}, "
        f"{cpu.get('brand_raw', '?')} ({cpu.get('count', '?')} cpus)",
        "",
        "Overhead: one run of N no-op async nodes (median per run)",
        "",
    ]
    table, checks = overhead(res)
    parts += [table, ""]
    titles = {
        "save_one": "Save with 1 changed node",
        "save_full": "First (full) save of K nodes",
        "restore": "Restore latest (run with 20 checkpoints)",
    }
    for kind, title in titles.items():
        parts += [title, "", by_backend(res, kind), ""]
    checks += save_checks(res)
    rows = [(c.target, c.measured, "PASS" if c.passed else "FAIL") for c in checks]
    parts += ["Targets", "", _table(["target", "measured", "result"], rows)]
    return "\n".join(parts), all(c.passed for c in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", default=".benchmarks/latest.json", type=Path)
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    try:
        text, ok = report(Results(data))
    except MissingResult as exc:
        print(f"check_targets: {exc} in {args.json}", file=sys.stderr)
        return 2
    print(text)
    print()
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

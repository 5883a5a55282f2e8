"""Check the performance targets against a benchmark results file.

Usage: python benchmarks/check_targets.py [--peers | --all] [.benchmarks/latest.json]

Without a flag, the targets of pitstop alone (below); ``--peers``, those of the
side-by-side comparison with LangGraph's savers (``bench_peers.py``, written by
``benchmarks/run.sh peers``); ``--all``, both.

Prints Markdown tables (p50 and p95 of each variant next to its baseline from
the same run, with the ratio of p50s), then one PASS/FAIL line per target.
Exits 1 when a target is missed, 2 when the file lacks a result.

Targets:
- enabled hooks that do not save, sync twin: p50 per node at most 2 µs above
  the bare bookkeeping (the same two calls straight on the manager's core);
- disabled, flag read once per run, is within noise of no hook code, for each
  runner and N: p50 ratio <= 1.02;
- saving 1 changed node is flat in K: p50 at K=10,000 at most 2x the p50 at
  K=10, for each backend and twin.

Peer targets (``--peers``; issue "Storage v2: beat LangGraph's savers on every
save and restore"), K = 10, 1,000, 10,000, one changed node per save:
- save p50 on SQLite, sync and async twin, at most SqliteSaver.put's p50 (sync);
- save p50 on PostgreSQL at most 0.6 ms, both twins;
- save p95 at most 2x its p50, every pitstop variant, at every K;
- restore latest on SQLite at K=10 at most 0.4 ms; at K=10,000 at most 25 ms
  on SQLite and PostgreSQL (both twins) and at most LangGraph's sync
  ``get_tuple`` on the same backend;
- save with ``keep_last=5``: p50 at K=10,000 at most 2x the p50 at K=10;
- SQLite file after 200 saves at K=1,000 no larger than SqliteSaver's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOOK_LIMIT_S = 2e-6
ONCE_RATIO = 1.02
SAVE_RATIO = 2.0
HOOK_VARIANTS = ["bare", "sync_twin", "run_until_complete", "asyncio_run"]
# Every size must be in the file: a missing one is an error (exit 2), not a pass.
OVERHEAD = {"async DAG": [100, 1_000], "sync loop": [100, 1_000, 10_000]}
OVERHEAD_VARIANTS = ["once", "site_guard"]
STORAGE_SIZES = [10, 1_000, 10_000]
SAVE_SMALL, SAVE_LARGE = 10, 10_000
BACKENDS = ["memory", "sqlite", "postgres"]
TWINS = ["sync", "async"]
# bench_peers.py: variants by backend; the peers are "langgraph sync" / "langgraph async".
PEER_BACKENDS = {
    "sqlite": ["pitstop sync", "pitstop async", "pitstop sync normal",
               "pitstop sync keep_last=5", "langgraph sync", "langgraph async"],
    "postgres": ["pitstop sync", "pitstop async", "pitstop sync normal", "langgraph sync",
                 "langgraph async"],
}  # fmt: skip
RAW = "raw insert"
"""The floor interleaved with the saves (one row, one commit): shown beside them."""
PEER_RESTORE = ["pitstop sync", "pitstop async", "langgraph sync", "langgraph async"]
PEER_SIZE = ["pitstop sync", "pitstop sync keep_last=5", "langgraph sync"]
PEER_SIZE_K = 1_000
PG_SAVE_LIMIT_S = 0.6e-3
P95_RATIO = 2.0
RESTORE_SMALL_LIMIT_S = 0.4e-3
RESTORE_LARGE_LIMIT_S = 25e-3


class MissingResult(Exception):
    """The file has no result for a (bench, group, variant, size) the checks need."""


@dataclass(frozen=True)
class Stat:
    p50: float
    p95: float
    rounds: int
    extra: dict[str, Any]


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    passed: bool

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.target}: {self.measured}"


class Results:
    """Benchmark results (seconds per unit) indexed by bench, group, variant, size."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._by_key: dict[tuple[str, str, str, int], Stat] = {}
        for r in data.get("results", []):
            key = (r["bench"], r["group"], r["variant"], int(r["size"]))
            self._by_key[key] = Stat(r["p50"], r["p95"], r["rounds"], r.get("extra", {}))

    def get(self, bench: str, group: str, variant: str, size: int | None = None) -> Stat:
        for (b, g, v, s), stat in self._by_key.items():
            if (b, g, v) == (bench, group, variant) and size in (None, s):
                return stat
        raise MissingResult(f"no result for {bench} / {group} / {variant} / size={size}")


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f}"


def _load(value: Sequence[float] | None) -> str:
    return "?" if not value else " ".join(f"{x:.2f}" for x in value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def hooks(res: Results) -> tuple[str, list[Check]]:
    bare = res.get("hooks", "per node", "bare")
    header = ["variant", "p50 (µs)", "p95 (µs)", "p50 - bare (µs)", "p50 / bare"]
    rows = []
    for v in HOOK_VARIANTS:
        s = res.get("hooks", "per node", v)
        rows.append([v, _us(s.p50), _us(s.p95), f"{(s.p50 - bare.p50) * 1e6:+,.2f}",
                     f"{s.p50 / bare.p50:.2f}"])  # fmt: skip
    twin = res.get("hooks", "per node", "sync_twin")
    extra = twin.p50 - bare.p50
    check = Check(
        "sync hook overhead (no save) over bare bookkeeping",
        f"{_us(twin.p50)} - {_us(bare.p50)} = {extra * 1e6:+.2f} µs per node at p50 "
        f"(limit {HOOK_LIMIT_S * 1e6:g} µs)",
        extra <= HOOK_LIMIT_S,
    )
    title = f"Enabled hooks, no save: per node, p50 and p95 of {twin.rounds} interleaved rounds"
    return f"{title}\n\n{_table(header, rows)}", [check]


def overhead(res: Results, group: str) -> tuple[str, list[Check]]:
    header = ["N", "plain p50 (µs)", "plain p95 (µs)"]
    for v in OVERHEAD_VARIANTS:
        header += [f"{v} p50 (µs)", f"{v} p95 (µs)", f"{v} / plain"]
    rows, checks = [], []
    for n in OVERHEAD[group]:
        base = res.get("overhead", group, "plain", n)
        row = [f"{n:,}", _us(base.p50), _us(base.p95)]
        for v in OVERHEAD_VARIANTS:
            s = res.get("overhead", group, v, n)
            row += [_us(s.p50), _us(s.p95), f"{s.p50 / base.p50:.3f}"]
        rows.append(row)
        once = res.get("overhead", group, "once", n)
        ratio = once.p50 / base.p50
        checks.append(
            Check(
                f"disabled, once per run ~ no hooks, {group} N={n:,}",
                f"p50 ratio {ratio:.3f} (limit {ONCE_RATIO})",
                ratio <= ONCE_RATIO,
            )
        )
    title = f"Disabled manager, {group} runner: one run of N no-op nodes, p50 and p95 per run"
    return f"{title}\n\n{_table(header, rows)}", checks


def storage(res: Results, bench: str, title: str) -> str:
    parts = []
    for b in BACKENDS:
        header = ["K"]
        for t in TWINS:
            header += [f"{t} p50 (ms)", f"{t} p95 (ms)", f"{t} / K={SAVE_SMALL}"]
        header.append("async / sync")
        if bench == "save_one":
            header.append("snapshots")
        rows = []
        for k in STORAGE_SIZES:
            row = [f"{k:,}"]
            stats = {t: res.get(bench, b, t, k) for t in TWINS}
            for t, s in stats.items():
                small = res.get(bench, b, t, SAVE_SMALL)
                row += [_ms(s.p50), _ms(s.p95), f"{s.p50 / small.p50:.2f}"]
            row.append(f"{stats['async'].p50 / stats['sync'].p50:.2f}")
            if bench == "save_one":
                row.append("/".join(str(stats[t].extra.get("snapshots", "?")) for t in TWINS))
            rows.append(row)
        rounds = ", ".join(f"K={k:,}: {res.get(bench, b, 'sync', k).rounds}" for k in STORAGE_SIZES)
        parts += [f"{title}, {b} (rounds {rounds})", "", _table(header, rows), ""]
    return "\n".join(parts).rstrip()


def save_checks(res: Results) -> list[Check]:
    checks = []
    for b in BACKENDS:
        for t in TWINS:
            small = res.get("save_one", b, t, SAVE_SMALL)
            large = res.get("save_one", b, t, SAVE_LARGE)
            ratio = large.p50 / small.p50
            checks.append(
                Check(
                    f"save 1 changed node flat in K, {b} {t}",
                    f"p50 K={SAVE_LARGE:,} {_ms(large.p50)} ms / K={SAVE_SMALL} "
                    f"{_ms(small.p50)} ms = {ratio:.2f} (limit {SAVE_RATIO:g})",
                    ratio <= SAVE_RATIO,
                )
            )
    return checks


def run_header(res: Results) -> list[str]:
    d = res.data
    changed = d.get("working_tree", [])
    tree = "clean working tree" if not changed else f"{len(changed)} files changed in the tree"
    src = [line for line in changed if " src/" in line]
    tree += f", {len(src)} of them in src/" if changed else ""
    moved = d.get("commit_at_end", d.get("commit")) != d.get("commit")
    return [
        f"run: {d.get('datetime', '?')}, commit {d.get('commit', '?')} at start ({tree})"
        + (f", {d.get('commit_at_end')} at end" if moved else ""),
        f"python {d.get('python', '?')}, {d.get('cpu', '?')} ({d.get('cpus', '?')} cpus), "
        f"SQLite {d.get('sqlite', '?')}, psycopg {d.get('psycopg', '?')}, "
        f"PostgreSQL {d.get('postgresql', '?')}",
        f"load average (1, 5, 15 min) at start {_load(d.get('loadavg_start'))}, "
        f"at end {_load(d.get('loadavg_end'))}",
        "",
    ]


def report(res: Results) -> tuple[str, list[Check]]:
    parts = run_header(res)
    table, checks = hooks(res)
    parts += [table, ""]
    for group in OVERHEAD:
        table, more = overhead(res, group)
        parts += [table, ""]
        checks += more
    parts += [storage(res, "save_one", "Save with 1 changed node, per save"), ""]
    parts += [storage(res, "save_full", "First (full) save of K nodes, per save"), ""]
    parts += [storage(res, "restore", "Restore latest of 20 checkpoints, per restore"), ""]
    checks += save_checks(res)
    return "\n".join(parts), checks


def _peer_lines(res: Results) -> list[str]:
    peers = res.data.get("peers", {})
    versions = ", ".join(f"{k} {v}" for k, v in peers.get("versions", {}).items())
    lines = [f"peer packages: {versions or '?'}", "SQLite PRAGMAs, read from each connection:"]
    for who, p in peers.get("sqlite_pragmas", {}).items():
        lines.append(f"  {who}: journal_mode={p.get('journal_mode')}, "
                     f"synchronous={p.get('synchronous')}")  # fmt: skip
    return [*lines, ""]


def _peer_table(res: Results, bench: str, backend: str, variants: Sequence[str]) -> str:
    header = ["K", "variant", "class", "p50 (ms)", "p95 (ms)", "p95 / p50",
              "p50 / langgraph sync", "p50 / langgraph async"]  # fmt: skip
    if bench == "peer_save":
        header.append("snapshots")
    rows = []
    for k in STORAGE_SIZES:
        lg = {t: res.get(bench, backend, f"langgraph {t}", k) for t in TWINS}
        for v in variants:
            s = res.get(bench, backend, v, k)
            row = [f"{k:,}", v, str(s.extra.get("saver", "?")), _ms(s.p50), _ms(s.p95),
                   f"{s.p95 / s.p50:.2f}", f"{s.p50 / lg['sync'].p50:.2f}",
                   f"{s.p50 / lg['async'].p50:.2f}"]  # fmt: skip
            if bench == "peer_save":
                row.append(str(s.extra.get("snapshots", "?")))
            rows.append(row)
    return _table(header, rows)


def _after_table(res: Results, backend: str, variants: Sequence[str]) -> str | None:
    """The save p50s split by what ran just before: a LangGraph save, or anything
    else (None for a results file written before the split was recorded)."""
    header = ["K", "variant", "after a langgraph save: n", "p50 (ms)", "after another: n",
              "p50 (ms)", "ratio"]  # fmt: skip
    rows = []
    for k in STORAGE_SIZES:
        for v in variants:
            e = res.get("peer_save", backend, v, k).extra
            if "after_langgraph_n" not in e:
                return None
            lg, other = e["after_langgraph_p50"], e["after_other_p50"]
            ratio = "-" if lg is None or not other else f"{lg / other:.2f}"
            rows.append([f"{k:,}", v, str(e["after_langgraph_n"]),
                         "-" if lg is None else _ms(lg), str(e["after_other_n"]),
                         "-" if other is None else _ms(other), ratio])  # fmt: skip
    return _table(header, rows)


def peers(res: Results) -> tuple[str, list[Check]]:
    parts = _peer_lines(res)
    for b, variants in PEER_BACKENDS.items():
        rounds = ", ".join(
            f"K={k:,}: {res.get('peer_save', b, variants[0], k).rounds}" for k in STORAGE_SIZES
        )
        parts += [f"Peers: save with 1 changed node, {b}, per save (rounds {rounds})", "",
                  _peer_table(res, "peer_save", b, [*variants, RAW]), ""]  # fmt: skip
        after = _after_table(res, b, [v for v in (*variants, RAW) if "langgraph" not in v])
        if after is not None:
            parts += [f"Peers: the same saves, {b}, p50 by the variant that ran just before "
                      "(the same rounds; no target)", "", after, ""]  # fmt: skip
    for b in PEER_BACKENDS:
        rounds = ", ".join(
            f"K={k:,}: {res.get('peer_restore', b, PEER_RESTORE[0], k).rounds}"
            for k in STORAGE_SIZES
        )
        parts += [f"Peers: restore latest of 20 saves, {b}, per restore (rounds {rounds})", "",
                  _peer_table(res, "peer_restore", b, PEER_RESTORE), ""]  # fmt: skip
    sizes = {v: res.get("peer_size", "sqlite", v, PEER_SIZE_K) for v in PEER_SIZE}
    lg_size = sizes["langgraph sync"].p50
    saves = sizes["langgraph sync"].extra.get("saves", "?")
    rows = [[v, str(s.extra.get("saver", "?")), f"{s.p50 / 1e6:,.2f}", f"{s.p50 / lg_size:.3f}"]
            for v, s in sizes.items()]  # fmt: skip
    parts += [f"Peers: SQLite file after {saves} saves at K={PEER_SIZE_K:,} (WAL checkpointed)",
              "", _table(["variant", "class", "MB", "/ langgraph sync"], rows), ""]  # fmt: skip
    return "\n".join(parts).rstrip(), peer_checks(res, sizes)


def peer_checks(res: Results, sizes: dict[str, Stat]) -> list[Check]:
    checks = []
    save, restore = "peer_save", "peer_restore"
    for t in TWINS:
        for k in STORAGE_SIZES:
            s = res.get(save, "sqlite", f"pitstop {t}", k)
            lg = res.get(save, "sqlite", "langgraph sync", k)
            raw = res.get(save, "sqlite", RAW, k)
            checks.append(Check(
                f"save p50 <= SqliteSaver.put p50, sqlite {t} K={k:,}",
                f"{_ms(s.p50)} ms vs {_ms(lg.p50)} ms = {s.p50 / lg.p50:.2f}x (limit 1; "
                f"raw insert {_ms(raw.p50)} ms)",
                s.p50 <= lg.p50,
            ))  # fmt: skip
    for t in TWINS:
        for k in STORAGE_SIZES:
            s = res.get(save, "postgres", f"pitstop {t}", k)
            raw = res.get(save, "postgres", RAW, k)
            checks.append(Check(
                f"save p50 <= {_ms(PG_SAVE_LIMIT_S)} ms, postgres {t} K={k:,}",
                f"{_ms(s.p50)} ms (raw insert {_ms(raw.p50)} ms)", s.p50 <= PG_SAVE_LIMIT_S,
            ))  # fmt: skip
    for b, variants in PEER_BACKENDS.items():
        for v in (v for v in variants if v.startswith("pitstop")):
            stats = {k: res.get(save, b, v, k) for k in STORAGE_SIZES}
            ratios = ", ".join(f"K={k:,} {s.p95 / s.p50:.2f}" for k, s in stats.items())
            checks.append(Check(
                f"save p95 <= {P95_RATIO:g}x p50, {b} {v}", f"p95/p50 {ratios}",
                all(s.p95 <= P95_RATIO * s.p50 for s in stats.values()),
            ))  # fmt: skip
    small, large = STORAGE_SIZES[0], STORAGE_SIZES[-1]
    for t in TWINS:
        s = res.get(restore, "sqlite", f"pitstop {t}", small)
        checks.append(Check(
            f"restore p50 <= {_ms(RESTORE_SMALL_LIMIT_S)} ms, sqlite {t} K={small:,}",
            f"{_ms(s.p50)} ms", s.p50 <= RESTORE_SMALL_LIMIT_S,
        ))  # fmt: skip
    for b in PEER_BACKENDS:
        for t in TWINS:
            s = res.get(restore, b, f"pitstop {t}", large)
            checks.append(Check(
                f"restore p50 <= {_ms(RESTORE_LARGE_LIMIT_S)} ms, {b} {t} K={large:,}",
                f"{_ms(s.p50)} ms", s.p50 <= RESTORE_LARGE_LIMIT_S,
            ))  # fmt: skip
    for b in PEER_BACKENDS:
        lg = res.get(restore, b, "langgraph sync", large)
        for t in TWINS:
            s = res.get(restore, b, f"pitstop {t}", large)
            checks.append(Check(
                f"restore p50 <= LangGraph sync get_tuple p50, {b} {t} K={large:,}",
                f"{_ms(s.p50)} ms vs {_ms(lg.p50)} ms = {s.p50 / lg.p50:.2f}x (limit 1)",
                s.p50 <= lg.p50,
            ))  # fmt: skip
    keep = "pitstop sync keep_last=5"
    ks, kl = res.get(save, "sqlite", keep, small), res.get(save, "sqlite", keep, large)
    checks.append(Check(
        "save with keep_last=5 flat in K, sqlite sync",
        f"p50 K={large:,} {_ms(kl.p50)} ms / K={small} {_ms(ks.p50)} ms = "
        f"{kl.p50 / ks.p50:.2f} (limit {SAVE_RATIO:g})",
        kl.p50 <= SAVE_RATIO * ks.p50,
    ))  # fmt: skip
    mine, lg_size = sizes["pitstop sync"].p50, sizes["langgraph sync"].p50
    checks.append(Check(
        f"SQLite file after 200 saves at K={PEER_SIZE_K:,} <= SqliteSaver's",
        f"{mine / 1e6:,.2f} MB vs {lg_size / 1e6:,.2f} MB = {mine / lg_size:.3f}x (limit 1)",
        mine <= lg_size,
    ))  # fmt: skip
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("json", nargs="?", default=".benchmarks/latest.json", type=Path)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--peers", action="store_true", help="only the LangGraph comparison")
    which.add_argument("--all", action="store_true", help="pitstop's targets and the peers'")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    res = Results(data)
    try:
        if args.peers:
            table, checks = peers(res)
            text = "\n".join([*run_header(res), table, ""])
        else:
            text, checks = report(res)
            if args.all:
                table, more = peers(res)
                text += "\n" + table + "\n"
                checks += more
    except MissingResult as exc:
        print(f"check_targets: {exc} in {args.json}", file=sys.stderr)
        return 2
    print(text)
    print("Targets")
    print()
    for check in checks:
        print(check.line())
    ok = all(c.passed for c in checks)
    print()
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

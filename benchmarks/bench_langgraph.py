"""PitstopSaver beside LangGraph's own savers on a growing message list.

    .venv/bin/python benchmarks/bench_langgraph.py            # 500 steps (about 1 minute)
    .venv/bin/python benchmarks/bench_langgraph.py --quick    # 100 steps
    .venv/bin/python benchmarks/bench_langgraph.py --no-pg    # SQLite only

The workload is a real ``StateGraph``: a chat whose ``messages`` channel
(``add_messages``) grows by one message per step (alternating human and AI
messages of ~300 characters, langchain-core message objects), with a step
counter, looping ``--steps`` times. Each step is one checkpoint (``put``) and
its task's writes (``put_writes``).

How it is measured:

1. The graph runs once per saver family, in memory, and every call it makes to
   its checkpointer is recorded (``put`` and ``put_writes``, in order), with
   the channel versions that family hands out (pitstop: integers, LangGraph's
   savers: their zero-padded strings). ``durability="sync"`` keeps the calls
   in step order.
2. Those calls are replayed into fresh savers on disk, **interleaved**: step k
   of pitstop, then step k of its peer (the first one alternating from step to
   step), so both see the same machine moments. Only ``put`` is timed (the
   ``put_writes`` of the step follow it untimed).
3. Restore: ``get_tuple`` of the latest checkpoint (no id), interleaved rounds,
   the first rounds dropped; each one is checked to hold every message.
4. Size: the SQLite files once every connection is closed (WAL folded in);
   on PostgreSQL, ``pg_total_relation_size`` of every table (indexes and TOAST
   included) in each saver's own schema.

Peers: ``SqliteSaver`` (WAL, ``synchronous=FULL``, its defaults) against
``PitstopSaver`` on a SQLite file (durability "full": ``synchronous=FULL``);
with PostgreSQL reachable (``$PITSTOP_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``), ``PostgresSaver`` against
``PitstopSaver`` on PostgreSQL, each in a schema of its own (dropped after).

Targets (PASS/FAIL lines; exit status 1 if one is missed), for runs of 500 steps
or more (``--quick`` only reports): the SQLite file at most 1/10 of
``SqliteSaver``'s (the issue's target); ``put`` p50 at most 1.10x ``SqliteSaver``'s (parity: a put
still encodes the whole list, as LangGraph's savers do, and writes far less);
``get_tuple`` p50 at most 1.25x (the budget for verifying what is read: headers,
lineage, manifests, blob digests, channel versions). Everything else, PostgreSQL
included, is printed for information (INFO lines).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import zstandard
from _harness import percentile
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from pitstop import MemoryStore, SqlStore
from pitstop.adapters.langgraph import PitstopSaver

try:  # the bench extra; mypy without it (as in CI) sees Any
    from langgraph.checkpoint.postgres import PostgresSaver  # type: ignore[import-not-found,unused-ignore]
    from langgraph.checkpoint.sqlite import SqliteSaver  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover
    sys.exit(f"needs the bench extra (pip install -e '.[bench,dev]'): {exc}")

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SYLLABLES = ["ka", "lo", "mi", "ter", "an", "ve", "ro", "sun", "pel", "di", "gra", "on",
             "ex", "ti", "mar", "bo", "ne", "us", "qua", "fi", "le"]  # fmt: skip
_rng = random.Random(7)
WORDS = ["".join(_rng.choice(SYLLABLES) for _ in range(_rng.randint(1, 4))) for _ in range(2000)]
"""A vocabulary of pseudo-words: text that zstd compresses about as much as English (~3x),
so pitstop's compression of snapshots gets no unfair help."""
RESTORE_WARMUP = 5
PACKAGES = ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite",
            "langgraph-checkpoint-postgres", "langchain-core", "psycopg")  # fmt: skip


# -- the graph ---------------------------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    step: int


def message(i: int) -> AnyMessage:
    """Message i: ~300 characters of deterministic text, human and AI in turn."""
    rng = random.Random(i)
    text = f"[{i}] " + " ".join(rng.choice(WORDS) for _ in range(45))
    return AIMessage(text, id=f"m{i}") if i % 2 else HumanMessage(text, id=f"m{i}")


def build(steps: int) -> StateGraph[Chat]:
    def chat(state: Chat) -> dict[str, Any]:
        return {"messages": [message(state["step"])], "step": state["step"] + 1}

    def route(state: Chat) -> str:
        return "chat" if state["step"] < steps else END

    graph = StateGraph(Chat)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_conditional_edges("chat", route)
    return graph


# -- recording and replay ----------------------------------------------------------------


@dataclass
class Step:
    """One ``put`` as the graph made it, and the ``put_writes`` that followed it."""

    put: tuple[Any, ...]
    writes: list[tuple[Any, ...]] = field(default_factory=list)


def record(saver: BaseCheckpointSaver[Any], steps: int, thread: str) -> list[Step]:
    """Run the graph on ``saver``; every put and put_writes it made, in order."""
    out: list[Step] = []
    put, put_writes = saver.put, saver.put_writes

    def recording_put(*args: Any) -> RunnableConfig:
        out.append(Step(args))
        return put(*args)

    def recording_writes(*args: Any) -> None:
        out[-1].writes.append(args)
        put_writes(*args)

    setattr(saver, "put", recording_put)  # noqa: B010 - instance attribute over the method
    setattr(saver, "put_writes", recording_writes)  # noqa: B010
    graph = build(steps).compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": 10 * steps}
    graph.invoke({"messages": [], "step": 0}, config, durability="sync")
    return out


@dataclass
class Subject:
    name: str
    saver: BaseCheckpointSaver[Any]
    steps: list[Step]
    puts: list[float] = field(default_factory=list)
    restores: list[float] = field(default_factory=list)

    def replay(self, k: int) -> None:
        step = self.steps[k]
        t = time.perf_counter_ns()
        self.saver.put(*step.put)
        self.puts.append((time.perf_counter_ns() - t) / 1e6)
        for args in step.writes:
            self.saver.put_writes(*args)

    def restore(self, thread: str, want: int) -> None:
        t = time.perf_counter_ns()
        tup = self.saver.get_tuple({"configurable": {"thread_id": thread}})
        elapsed = (time.perf_counter_ns() - t) / 1e6
        got = 0 if tup is None else len(tup.checkpoint["channel_values"]["messages"])
        if got != want:
            raise AssertionError(f"{self.name}: restored {got} messages, expected {want}")
        self.restores.append(elapsed)


def race(a: Subject, b: Subject, thread: str, steps: int, rounds: int) -> None:
    """Replay both recordings step by step, then restore, interleaved (order alternating)."""
    if len(a.steps) != len(b.steps):
        raise AssertionError(
            f"{len(a.steps)} puts recorded for {a.name}, {len(b.steps)} for {b.name}"
        )
    for k in range(len(a.steps)):
        for s in (a, b) if k % 2 == 0 else (b, a):
            s.replay(k)
    for r in range(rounds + RESTORE_WARMUP):
        for s in (a, b) if r % 2 == 0 else (b, a):
            s.restore(thread, steps)
    for s in (a, b):
        del s.restores[: RESTORE_WARMUP * 1]
    check_equal(a, b, thread)


def check_equal(a: Subject, b: Subject, thread: str) -> None:
    """The latest checkpoint of both holds the same values (what the replay must give)."""
    ta = a.saver.get_tuple({"configurable": {"thread_id": thread}})
    tb = b.saver.get_tuple({"configurable": {"thread_id": thread}})
    assert ta is not None and tb is not None
    va, vb = ta.checkpoint["channel_values"], tb.checkpoint["channel_values"]
    if va != vb:
        raise AssertionError(f"{a.name} and {b.name} restored different values")


# -- report ------------------------------------------------------------------------------


def stats(values: Sequence[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 95)


def table(title: str, a: Subject, b: Subject, size_a: int, size_b: int) -> list[str]:
    pa, pb = stats(a.puts), stats(b.puts)
    ra, rb = stats(a.restores), stats(b.restores)
    rows = [
        f"### {title}",
        "",
        f"| | {a.name} | {b.name} | {a.name} / {b.name} |",
        "|---|---|---|---|",
        f"| put p50 (ms) | {pa[0]:.3f} | {pb[0]:.3f} | {pa[0] / pb[0]:.2f}x |",
        f"| put p95 (ms) | {pa[1]:.3f} | {pb[1]:.3f} | {pa[1] / pb[1]:.2f}x |",
        f"| restore p50 (ms) | {ra[0]:.3f} | {rb[0]:.3f} | {ra[0] / rb[0]:.2f}x |",
        f"| restore p95 (ms) | {ra[1]:.3f} | {rb[1]:.3f} | {ra[1] / rb[1]:.2f}x |",
        f"| database size (bytes) | {size_a:,} | {size_b:,} | {size_a / size_b:.3f}x |",
        "",
        f"({len(a.puts)} puts each, {len(a.restores)} restores each after "
        f"{RESTORE_WARMUP} warm-up rounds)",
        "",
    ]
    return rows


def file_size(path: Path) -> int:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


def pg_size(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def pg_schemas(url: str, n: int) -> Iterator[list[str]]:
    names = [f"bench_lg_{uuid.uuid4().hex[:10]}" for _ in range(n)]
    with psycopg.connect(url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield names
        finally:
            for name in names:
                admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def versions() -> str:
    found = []
    for dist in PACKAGES:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} -")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"# bench_langgraph: python {platform.python_version()}, {', '.join(found)}; "
            f"nproc {os.cpu_count()}; load average {load}")  # fmt: skip


# -- main --------------------------------------------------------------------------------


def recordings(steps: int, thread: str) -> tuple[list[Step], list[Step]]:
    with MemoryStore() as store, PitstopSaver(store) as ours:
        mine = record(ours, steps, thread)
    with SqliteSaver.from_conn_string(":memory:") as theirs:
        peer = record(theirs, steps, thread)
    return mine, peer


def run_sqlite(tmp: Path, steps: int, rounds: int, mine: list[Step], peer: list[Step],
               thread: str) -> tuple[Subject, Subject, int, int]:  # fmt: skip
    ours_path, theirs_path = tmp / "pitstop.db", tmp / "sqlite_saver.db"
    with SqlStore.sqlite(ours_path) as store, PitstopSaver(store) as ours, \
            SqliteSaver.from_conn_string(str(theirs_path)) as theirs:  # fmt: skip
        a = Subject("PitstopSaver", ours, mine)
        b = Subject("SqliteSaver", theirs, peer)
        race(a, b, thread, steps, rounds)
    return a, b, file_size(ours_path), file_size(theirs_path)


def run_pg(url: str, steps: int, rounds: int, mine: list[Step], peer: list[Step],
           thread: str) -> tuple[Subject, Subject, int, int]:  # fmt: skip
    with pg_schemas(url, 2) as (s_ours, s_theirs):
        conninfo = psycopg.conninfo.make_conninfo(url, options=f"-c search_path={s_theirs}")
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(SqlStore(url, options=f"-c search_path={s_ours}"))
            ours = stack.enter_context(PitstopSaver(store))
            theirs = stack.enter_context(PostgresSaver.from_conn_string(conninfo))
            theirs.setup()
            a = Subject("PitstopSaver", ours, mine)
            b = Subject("PostgresSaver", theirs, peer)
            race(a, b, thread, steps, rounds)
        return a, b, pg_size(url, s_ours), pg_size(url, s_theirs)


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Verdicts:
    """PASS/FAIL lines (targets) and INFO lines (printed, not judged)."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def target(self, ok: bool, text: str) -> None:
        self.lines.append(("PASS" if ok else "FAIL", text))

    def info(self, text: str) -> None:
        self.lines.append(("INFO", text))

    def ratio(self, what: str, a: float, b: float, unit: str, limit: float | None) -> None:
        digits = 0 if unit == "bytes" else 3
        text = f"{what}: {a:,.{digits}f} vs {b:,.{digits}f} {unit} = {a / b:.3f}x"
        if limit is None:
            self.info(text)
        else:
            self.target(a <= limit * b, f"{text} (limit {limit:.2f})")

    @property
    def passed(self) -> bool:
        return all(kind != "FAIL" for kind, _ in self.lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 steps, fewer restores")
    parser.add_argument("--steps", type=int, default=None, help="steps (default 500)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--pg-url", default=os.environ.get("PITSTOP_BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    steps = args.steps or (100 if args.quick else 500)
    rounds = 20 if args.quick else 60
    thread = "chat-1"
    say(versions())
    started = time.perf_counter()
    mine, peer = recordings(steps, thread)
    last = mine[-1].put[1]["channel_values"]["messages"]
    raw = JsonPlusSerializer().dumps_typed(last)[1]
    packed = len(zstandard.ZstdCompressor(level=1).compress(raw))
    say(f"# recorded {len(mine)} puts (pitstop versions) and {len(peer)} (LangGraph versions) "
        f"of a {steps}-step chat; a message is ~{len(message(1).content)} characters; the "
        f"final list encodes to {len(raw):,} bytes, {len(raw) / packed:.1f}x smaller "
        "with zstd level 1")  # fmt: skip
    out = Verdicts()
    with tempfile.TemporaryDirectory() as tmp:
        a, b, sa, sb = run_sqlite(Path(tmp), steps, rounds, mine, peer, thread)
    for line in table(f"SQLite file, {steps} steps", a, b, sa, sb):
        say(line)
    # The targets are for the workload (500 steps); a shorter run only reports.
    full = steps >= 500
    out.ratio(f"SQLite size after {steps} steps vs SqliteSaver", sa, sb, "bytes",
              0.10 if full else None)  # fmt: skip
    out.ratio("put p50 vs SqliteSaver", stats(a.puts)[0], stats(b.puts)[0], "ms",
              1.10 if full else None)  # fmt: skip
    out.ratio("restore p50 vs SqliteSaver", stats(a.restores)[0], stats(b.restores)[0], "ms",
              1.25 if full else None)  # fmt: skip
    out.ratio("put p95 vs SqliteSaver", stats(a.puts)[1], stats(b.puts)[1], "ms", None)
    if not args.no_pg:
        try:
            psycopg.connect(args.pg_url, connect_timeout=3).close()
        except psycopg.Error as exc:
            out.info(f"PostgreSQL skipped: {args.pg_url} unreachable ({type(exc).__name__})")
        else:
            a, b, sa, sb = run_pg(args.pg_url, steps, rounds, mine, peer, thread)
            for line in table(f"PostgreSQL, {steps} steps", a, b, sa, sb):
                say(line)
            out.ratio("PostgreSQL size vs PostgresSaver", sa, sb, "bytes", None)
            out.ratio("PostgreSQL put p50 vs PostgresSaver", stats(a.puts)[0],
                      stats(b.puts)[0], "ms", None)  # fmt: skip
            out.ratio("PostgreSQL restore p50 vs PostgresSaver", stats(a.restores)[0],
                      stats(b.restores)[0], "ms", None)  # fmt: skip
    say("```text")
    for kind, text in out.lines:
        say(f"{kind}  {text}")
    say("```")
    say(f"# {time.perf_counter() - started:.0f} s; exit status {0 if out.passed else 1}")
    return 0 if out.passed else 1


if __name__ == "__main__":
    sys.exit(main())

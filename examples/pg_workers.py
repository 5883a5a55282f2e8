"""Several worker processes share one job through PostgreSQL; one is killed, another resumes.

The coordinator splits a job into shards (``batch-0``, ``batch-1``, ...), deals
them round-robin to W worker processes and starts them (``sys.executable``;
they share nothing but the database URL, like separate machines). Each worker
runs a small DAG per shard with ``dag_runner`` and a checkpoint after every node.
With a kill, one worker dies for real (``os._exit``) in the middle of a shard;
the coordinator reads from PostgreSQL which shards' runs did not succeed and
deals them to the surviving workers in a new round: the half-done shard resumes
from its checkpoint and skips the nodes already completed. The final results are
read back from the checkpoints (kept after success) and compared with a clean
in-process run (PASS/FAIL, exit code 1 on FAIL); then the job's checkpoints are
deleted unless ``--keep``.

The database URL is a plain ``postgresql://user@host:port/db`` (psycopg 3 runs
underneath); settings for psycopg.connect go to ``SqlStore(url, **kwargs)``, e.g.
``SqlStore(url, options="-c search_path=jobs")``.

    python examples/pg_workers.py --story          # 2 workers, 4 shards, kill w1 at 'stats'
    python examples/pg_workers.py --workers 3 --shards 6 --kill-worker 2 --kill-at hist --keep
    python examples/pg_workers.py --worker 0 --shard batch-1 --job-id J   # one worker (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dag_runner import Node, run_dag, run_dag_plain

from pitstop import (
    CheckpointInfo,
    CheckpointManager,
    CheckpointNotFound,
    CheckpointPolicy,
    RunStatus,
    SqlStore,
    Store,
)

DEFAULT_URL = os.environ.get("PITSTOP_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NODES = ("fetch", "clean", "stats", "hist", "report")
KILL_EXIT = 3
"""Exit code of the worker killed by ``--kill-at``."""


def say(message: str) -> None:
    # Flush every line: the killed worker leaves through os._exit, which skips buffers.
    print(message, flush=True)


def run_id(job_id: str, shard: str) -> str:
    return f"{job_id}-{shard}"


def prefixed(tag: str) -> Callable[[str], None]:
    return lambda message: say(f"{tag} {message}")


def build_shard(
    shard: str, log: Callable[[str], None] = say, kill_at: str | None = None
) -> list[Node]:
    """fetch -> clean -> (stats, hist) -> report for one shard; ``kill_at`` dies in that node."""

    def node(node_id: str, fn: Callable[..., Any], deps: tuple[str, ...] = ()) -> Node:
        async def run(*inputs: Any) -> Any:
            if node_id == kill_at:
                log(f"{node_id}: KILLED (os._exit({KILL_EXIT}), the machine is gone)")
                os._exit(KILL_EXIT)
            log(f"{node_id}: executing")
            await asyncio.sleep(0.01)  # pretend this is slow
            return fn(*inputs)

        return Node(node_id, run, deps)

    def fetch() -> list[float]:
        rng = random.Random(shard)
        return [round(rng.gauss(50.0, 12.0), 3) for _ in range(2_000)]

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "mean": round(statistics.fmean(values), 6),
            "stdev": round(statistics.pstdev(values), 6),
            "median": round(statistics.median(values), 6),
        }

    def hist(values: list[float]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in values:
            key = f"{int(v // 10) * 10:03d}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def report(s: dict[str, float], h: dict[str, int]) -> dict[str, str]:
        text = json.dumps({"shard": shard, "stats": s, "hist": h}, sort_keys=True)
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}

    return [
        node("fetch", fetch),
        node("clean", lambda rows: [v for v in rows if 0.0 <= v <= 100.0], ("fetch",)),
        node("stats", stats, ("clean",)),
        node("hist", hist, ("clean",)),
        node("report", report, ("stats", "hist")),
    ]


async def run_worker(
    worker: int, shards: list[str], job_id: str, db_url: str, kill_at: str | None
) -> None:
    """Run (or resume) each shard in turn; ``kill_at`` kills the process in the first one."""
    handler = logging.StreamHandler(sys.stdout)
    runner_log = logging.getLogger("dag_runner")  # logs "<node>: skipped (restored ...)"
    runner_log.addHandler(handler)
    runner_log.setLevel(logging.INFO)
    policy = CheckpointPolicy(every_n_nodes=1)  # kept after success: the coordinator reads them
    meta = {"worker": worker, "pid": os.getpid()}
    say(f"w{worker} pid {os.getpid()}: shards {', '.join(shards)}")
    async with SqlStore.from_url(db_url) as store:
        for i, shard in enumerate(shards):
            tag = f"w{worker} {shard}"
            handler.setFormatter(logging.Formatter(f"{tag} %(message)s"))
            nodes = build_shard(shard, prefixed(tag), kill_at if i == 0 else None)
            async with CheckpointManager(
                run_id(job_id, shard), store=store, enabled=True, policy=policy, metadata=meta
            ) as mgr:
                run = await mgr.run_info()  # None for a shard never started
                if run is not None and run.can_resume:
                    say(f"{tag}: resuming from checkpoint seq {run.latest_seq}")
                else:
                    say(f"{tag}: new")
                outputs = await run_dag(nodes, manager=mgr)
            say(f"{tag}: done, sha256 {outputs['report']['sha256']}")


# --- the coordinator -----------------------------------------------------------------


def start(
    worker: int, shards: list[str], args: argparse.Namespace, kill: bool
) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(worker)]
    cmd += ["--job-id", args.job_id, "--db-url", args.db_url]
    for shard in shards:
        cmd += ["--shard", shard]
    if kill:
        cmd += ["--kill-at", args.kill_at]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_round(
    plan: dict[int, list[str]], args: argparse.Namespace, kill: int | None
) -> dict[int, tuple[int, str]]:
    """Start one process per worker in ``plan`` at once; their (exit code, output)."""
    procs = {k: start(k, s, args, kill=k == kill) for k, s in plan.items()}
    done: dict[int, tuple[int, str]] = {}
    for k, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        done[k] = (proc.returncode, out)
        for line in out.splitlines():
            say(f"    {line}")
        say(f"  -> w{k} exit code {proc.returncode}")
    return done


@dataclass(frozen=True, slots=True)
class ShardState:
    """What PostgreSQL says about one shard's run."""

    succeeded: bool
    completed: dict[str, Any]
    """Node outputs of the latest checkpoint ({} if none)."""


def inspector(store: Store, job_id: str, shard: str) -> CheckpointManager:
    """A manager for reading (or deleting) the shard's run; it runs no node."""
    return CheckpointManager(run_id(job_id, shard), store=store, enabled=True)


async def shard_state(store: Store, job_id: str, shard: str) -> ShardState:
    # load_checkpoint verifies and decodes without adopting the run, and works on
    # a succeeded run too (can_resume/restore_checkpoint are for resuming it).
    mgr = inspector(store, job_id, shard)
    run = await mgr.run_info()
    if run is None or run.latest_seq is None:
        return ShardState(False, {})
    latest = await mgr.load_checkpoint()
    return ShardState(run.status is RunStatus.SUCCEEDED, dict(latest.completed))


async def read_db(url: str, job_id: str, shards: list[str]) -> dict[str, ShardState]:
    async with SqlStore.from_url(url) as store:
        return {s: await shard_state(store, job_id, s) for s in shards}


async def history(url: str, job_id: str, shard: str, delete: list[str]) -> list[CheckpointInfo]:
    """The shard's checkpoints; then delete every checkpoint of the shards in ``delete``."""
    async with SqlStore.from_url(url) as store:
        infos = await inspector(store, job_id, shard).list_checkpoints()
        for s in delete:
            with contextlib.suppress(CheckpointNotFound):  # never started
                await inspector(store, job_id, s).delete()  # the run's row (its seqs) stays
    return infos


def digest(results: dict[str, str | None]) -> str:
    text = "\n".join(f"{s} {d}" for s, d in sorted(results.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def clean_run(shards: list[str]) -> dict[str, str | None]:
    """Every shard in this process, without pitstop: the reference results."""

    async def one(shard: str) -> str:
        sha: str = (await run_dag_plain(build_shard(shard, lambda m: None)))["report"]["sha256"]
        return sha

    return {s: asyncio.run(one(s)) for s in shards}


def coordinate(args: argparse.Namespace) -> int:
    """Run the job on W worker processes, reassign unfinished shards, compare; 0 on PASS."""
    shards = [f"batch-{n}" for n in range(args.shards)]
    plan = {k: shards[k :: args.workers] for k in range(args.workers)}
    killed: int | None = args.kill_worker
    held = plan[killed][0] if killed is not None else None  # the shard it dies in
    shown = SqlStore.from_url(args.db_url).url  # password masked; never opened
    say(f"job {args.job_id}: {len(shards)} shards, {args.workers} workers, db {shown}")
    checks: dict[str, bool] = {}
    alive, outputs, before = list(plan), {k: "" for k in plan}, list[str]()
    for rnd in range(1, args.workers + 1):
        say(f"== round {rnd}: " + "; ".join(f"w{k} <- {', '.join(s)}" for k, s in plan.items()))
        for k, (code, out) in run_round(plan, args, killed if rnd == 1 else None).items():
            outputs[k] += out
            if code != 0:
                alive.remove(k)
            if rnd == 1 and k == killed:
                checks[f"w{k} was killed mid-shard (exit code {code})"] = code == KILL_EXIT
        state = asyncio.run(read_db(args.db_url, args.job_id, shards))
        if rnd == 1 and held is not None:
            before = [n for n in NODES if n in state[held].completed]
            say(f"  {held} in PostgreSQL: completed {', '.join(before) or 'nothing'}")
        todo = [s for s in shards if not state[s].succeeded]
        plan = {k: todo[i :: len(alive)] for i, k in enumerate(alive)} if todo else {}
        plan = {k: s for k, s in plan.items() if s}
        if not plan:
            break
        say(f"  unfinished: {', '.join(todo)}; reassigned to the surviving workers")
    final = asyncio.run(read_db(args.db_url, args.job_id, shards))
    got = {s: final[s].completed.get("report", {}).get("sha256") for s in shards}
    checks["every shard finished"] = None not in got.values()
    if held is not None:
        # The survivor that ran the held shard must skip exactly what was completed.
        taker = next((k for k, o in outputs.items() if k != killed and f" {held}: " in o), None)
        out = outputs[taker] if taker is not None else ""
        skipped = [n for n in before if f"w{taker} {held} {n}: skipped (restored" in out]
        rerun = [n for n in before if f"w{taker} {held} {n}: executing" in out]
        ok = taker is not None and skipped == before and not rerun
        checks[f"{held} resumed by w{taker}, skipped {', '.join(skipped) or 'nothing'}"] = ok
    delete = [] if args.keep else shards
    infos = asyncio.run(history(args.db_url, args.job_id, held or shards[0], delete))
    if held is not None:
        say(f"== {held} in PostgreSQL: one run id, written by whichever worker held it")
        for i in infos:
            who = f"w{i.metadata['worker']} pid {i.metadata['pid']}"
            rows = f"{i.nodes_written} node row(s)"
            say(f"  seq {i.seq} parent {i.parent_seq} after {i.node:<6} by {who}: {rows}")
        chain = [(i.seq, i.parent_seq) for i in infos]
        want = [(n, n - 1 or None) for n in range(1, len(infos) + 1)]
        checks[f"{held} seqs 1..{len(infos)} contiguous, parent = previous seq"] = chain == want
    want_d, got_d = digest(clean_run(shards)), digest(got)
    say(f"workers digest: {got_d}")
    say(f"clean digest:   {want_d}")
    checks["workers digest == clean digest"] = got_d == want_d
    say("== result")
    for text, ok in checks.items():
        say(f"  [{'ok' if ok else 'FAILED'}] {text}")
    kept = "kept" if args.keep else "deleted"
    say(f"checkpoints of runs {run_id(args.job_id, 'batch-*')} {kept}")
    passed = all(checks.values())
    say("PASS" if passed else "FAIL")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db-url", default=DEFAULT_URL, help="PostgreSQL URL ($PITSTOP_PG_URL)")
    parser.add_argument("--job-id", default=f"pgw-{uuid.uuid4().hex[:8]}", help="run id prefix")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--kill-worker", type=int, help="the worker that dies (--story: 1)")
    parser.add_argument("--kill-at", choices=NODES, help="node it dies in (--story: stats)")
    parser.add_argument("--keep", action="store_true", help="keep the job's checkpoints")
    parser.add_argument("--story", action="store_true", help="kill, reassign, compare")
    parser.add_argument("--worker", type=int, help="run as worker K (started by the coordinator)")
    parser.add_argument("--shard", action="append", default=[], help="a shard of worker K")
    args = parser.parse_args(argv)
    if args.worker is not None:
        asyncio.run(run_worker(args.worker, args.shard, args.job_id, args.db_url, args.kill_at))
        return 0
    if args.story or args.kill_at is not None or args.kill_worker is not None:
        args.kill_worker = 1 if args.kill_worker is None else args.kill_worker
        args.kill_at = args.kill_at or "stats"
    if args.workers < 1 or args.shards < args.workers:
        parser.error("need 1 <= --workers <= --shards")
    if args.kill_worker is not None and not 0 <= args.kill_worker < args.workers:
        parser.error("--kill-worker must name one of the workers")
    return coordinate(args)


if __name__ == "__main__":
    sys.exit(main())

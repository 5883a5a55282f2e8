"""dask.distributed: the client dies in stage 3, a new client process resumes on the same cluster.

Web-log sessions on a ``LocalCluster`` of two worker processes (what a cluster of
machines looks like to a client):

    fetch[shard] -> clean -> sessionize[shard] -> aggregate -> report
       6 tasks      1 task       6 tasks          1 task      1 task

``DaskCheckpoint.compute(graph, client=client)`` submits the graph and, in the
client process, saves each task's result as it arrives (a checkpoint after every
task, into a SQLite file next to the client). Workers and the scheduler run
nothing of pitstop's. With ``--crash-at sessionize`` the client process dies for
real (``os._exit(3)``) right after the first ``sessionize`` task is saved, while
the others still run on the workers; the cluster drops the dead client's work.
A new client process resumes: the finished tasks are replaced by their saved
outputs before the graph is submitted, so they never run again. With
``--kill-worker`` it also SIGKILLs a worker process mid-graph; the scheduler
recomputes what that worker held, and the graph still completes.

    python examples/dask_distributed.py --story        # crash, resume, compare: PASS/FAIL
    python examples/dask_distributed.py --crash-at sessionize   # own LocalCluster
    python examples/dask_distributed.py --scheduler tcp://127.0.0.1:8786 --kill-worker

Each task drops a file into ``$PITSTOP_DASK_TRACE`` (when set) as it runs, so
the story can count what really ran, on which worker process.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _story import DIGEST_PREFIX, child, digest_in, fresh, say, story_parser, verdict
from dask.delayed import Delayed, delayed
from dask.utils import key_split
from distributed import Client, LocalCluster

from pitstop import CheckpointEvent, CheckpointPolicy, SyncCheckpointManager
from pitstop.adapters.dask import DaskCheckpoint

DEFAULT_DB = "pitstop-dask-distributed-demo.db"
RUN_ID = "web-sessions"
SHARDS = 6
STAGES = ("fetch", "clean", "sessionize", "aggregate", "report")
CRASH_EXIT = 3
TRACE_ENV = "PITSTOP_DASK_TRACE"
"""A directory where every task execution leaves a file ``<stage>.<shard>.<pid>.<id>``."""
GAP_S = 30 * 60  # a new session after 30 minutes without a request


def trace(stage: str, shard: int | None = None) -> None:
    where = os.environ.get(TRACE_ENV)
    if where:
        name = f"{stage}.{'-' if shard is None else shard}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        Path(where, name).touch(exist_ok=False)


# --- the stages (they run on the workers) -------------------------------------------


def fetch(shard: int) -> pd.DataFrame:
    """One shard of a day of web requests (made up here, seeded)."""
    trace("fetch", shard)
    rng = np.random.default_rng(zlib.crc32(f"shard-{shard}".encode()))
    n = 20_000
    users = rng.integers(0, 3_000, n) * SHARDS + shard
    users[rng.random(n) < 0.03] = shard  # one crawler per shard: thousands of requests
    return pd.DataFrame({
        "ts": np.sort(rng.integers(0, 86_400, n)).astype(np.int64),
        "user": users.astype(np.int64),
        "path": pd.Categorical(rng.choice(["/", "/search", "/item", "/cart", "/pay"], n)),
        "status": rng.choice([200, 200, 200, 304, 404, 500], n).astype(np.int16),
        "bytes": rng.lognormal(8.0, 1.0, n).astype(np.int64),
    })  # fmt: skip


def clean(*shards: pd.DataFrame) -> pd.DataFrame:
    """All shards together: drop server errors and duplicates, then the crawlers (a
    crawler is a user with far more requests than anyone else: a global question)."""
    trace("clean")
    logs = pd.concat(shards, ignore_index=True)
    logs = logs[logs["status"] < 500].drop_duplicates()
    counts = logs["user"].value_counts()
    bots = counts[counts > 20 * counts.median()].index
    return logs[~logs["user"].isin(bots)].sort_values(["user", "ts"], ignore_index=True)


def sessionize(logs: pd.DataFrame, shard: int) -> pd.DataFrame:
    """Sessions of the shard's users (stage 3: the heavy one)."""
    trace("sessionize", shard)
    time.sleep(0.3)  # pretend this takes a while
    mine = logs[logs["user"] % SHARDS == shard]
    new = (mine["user"].diff() != 0) | (mine["ts"].diff() > GAP_S)
    session = new.cumsum().rename("session")
    out = mine.groupby(session).agg(
        user=("user", "first"), start=("ts", "min"), end=("ts", "max"),
        requests=("ts", "size"), bytes=("bytes", "sum"),
    )  # fmt: skip
    return out.assign(shard=shard).reset_index(drop=True)


def aggregate(*sessions: pd.DataFrame) -> pd.DataFrame:
    trace("aggregate")
    every = pd.concat(sessions, ignore_index=True)
    every["hour"] = every["start"] // 3_600
    every["minutes"] = (every["end"] - every["start"]) / 60
    return every.groupby("hour").agg(
        sessions=("user", "size"), users=("user", "nunique"),
        minutes=("minutes", "mean"), requests=("requests", "mean"),
    ).round(6)  # fmt: skip


def report(hourly: pd.DataFrame) -> dict[str, Any]:
    trace("report")
    summary = {
        "sessions": int(hourly["sessions"].sum()),
        "busiest_hour": int(hourly["sessions"].idxmax()),
        "mean_minutes": round(float(hourly["minutes"].mean()), 6),
        "by_hour": [int(v) for v in hourly["sessions"]],
    }
    text = json.dumps(summary, sort_keys=True)
    return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def pure(fn: Any) -> Any:
    """``dask.delayed(fn, pure=True)``: each call's key is a hash of what it computes."""
    return delayed(fn, pure=True)


def build() -> Delayed:
    logs = pure(clean)(*[pure(fetch)(s) for s in range(SHARDS)])
    hourly = pure(aggregate)(*[pure(sessionize)(logs, s) for s in range(SHARDS)])
    result: Delayed = pure(report)(hourly)
    return result


# --- the client ------------------------------------------------------------------------


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[Client]:
    """A client of the cluster at ``address``, or of a new LocalCluster of 2 processes."""
    if address is not None:
        with Client(address, timeout="20s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    with local_cluster() as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


def local_cluster() -> LocalCluster:
    # dashboard_address=":0": any free port for the scheduler's HTTP server (another cluster
    # on this machine may hold the default, 8787, and distributed would warn). mypy --strict
    # flags calls of distributed's unannotated functions, hence the ignores.
    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )


def kill_a_worker(client: Client) -> None:
    """SIGKILL the process of a worker that is running a task (its nanny restarts it)."""
    busy = client.processing()  # type: ignore[no-untyped-call]
    address = next((w for w, keys in busy.items() if keys), next(iter(busy)))
    pid = client.run(os.getpid, workers=[address])[address]
    say(f"SIGKILL worker pid {pid} ({address}, running {len(busy[address])} task(s))")
    os.kill(pid, signal.SIGKILL)


def run(db: Path, client: Client, crash_at: str | None, kill_worker: bool) -> dict[str, Any]:
    """Compute the pipeline on ``client``'s cluster, checkpoints in ``db`` (this process)."""
    saved: collections.Counter[str] = collections.Counter()

    def watch(event: CheckpointEvent) -> None:  # runs in this process, after each save
        if event.name != "checkpoint.save" or event.info is None or event.info.node is None:
            return
        stage = key_split(event.info.node)
        saved[stage] += 1
        say(f"saved {stage} #{saved[stage]} (checkpoint seq {event.seq})")
        if stage == crash_at:
            say(f"client: CRASH in {stage} (os._exit({CRASH_EXIT}); the workers keep going)")
            os._exit(CRASH_EXIT)
        if kill_worker and sum(saved.values()) == 1:
            kill_a_worker(client)

    policy = CheckpointPolicy(every_n_nodes=1)
    with SyncCheckpointManager(
        RUN_ID, store=db, enabled=True, policy=policy, observers=[watch]
    ) as mgr:
        ckpt = DaskCheckpoint(mgr)
        (result,) = ckpt.compute(build(), client=client)
        report_ = ckpt.report
    if report_ is not None and report_.restored_seq is not None:
        layers = collections.Counter(key_split(n) for n in report_.skipped)
        shown = ", ".join(f"{name} x{n}" for name, n in sorted(layers.items()))
        say(f"resumed from checkpoint seq {report_.restored_seq}: skipped {shown or 'nothing'}")
    out: dict[str, Any] = result
    return out


# --- the story ---------------------------------------------------------------------------


def traced(directory: Path) -> set[str]:
    """The trace files in ``directory``: one per task execution."""
    return {p.name for p in directory.iterdir()}


def wait_idle(client: Client, timeout: float = 30.0) -> None:
    """Until the scheduler forgot every task and no worker runs one (the dead client's
    tasks that were running finish, and their results are dropped)."""

    def tasks(dask_scheduler: Any) -> int:
        return len(dask_scheduler.tasks)

    def executing(dask_worker: Any) -> int:
        return int(dask_worker.state.executing_count)

    deadline = time.monotonic() + timeout
    while True:
        known = client.run_on_scheduler(tasks)  # type: ignore[no-untyped-call]
        if not known and not any(client.run(executing).values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not drop the dead client's tasks")
        time.sleep(0.1)


def story(db: Path) -> int:
    fresh(db)
    with tempfile.TemporaryDirectory(prefix="pitstop-dask-trace-") as tmp:
        trace_dir = Path(tmp)
        os.environ[TRACE_ENV] = str(trace_dir)  # the worker processes inherit it
        with local_cluster() as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            address = cluster.scheduler_address
            pids = sorted(client.run(os.getpid).values())
            say(f"== a LocalCluster at {address}: worker processes {pids}")
            say("== 1/4 a client process that dies inside 'sessionize' (stage 3 of 5)")
            crashed = child(__file__, db, "--scheduler", address, "--crash-at", "sessionize")
            wait_idle(client)
            with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as reader:
                left = reader.load_checkpoint()
            saved = collections.Counter(key_split(n) for n in left.completed)
            held = sorted(int(out["shard"].iloc[0]) for n, out in left.completed.items()
                          if key_split(n) == "sessionize")  # fmt: skip
            say(f"  the SQLite file holds seq {left.seq}: completed {dict(sorted(saved.items()))}")
            before = traced(trace_dir)
            say("== 2/4 a new client process resumes on the same cluster, and kills a worker")
            resumed = child(__file__, db, "--scheduler", address, "--kill-worker")
            ran = [name.split(".")[:2] for name in sorted(traced(trace_dir) - before)]
            say("== 3/4 a clean run on the cluster, checkpoints off")
            want: str = build().compute(scheduler=client)["sha256"]  # type: ignore[no-untyped-call]
            say(f"  {DIGEST_PREFIX}{want}")
            after = sorted(client.run(os.getpid).values())
    say("== 4/4 what ran where")
    stages = collections.Counter(stage for stage, _ in ran)
    shards = {int(s) for stage, s in ran if stage == "sessionize"}
    say(f"  tasks run by the resumed client's graph: {dict(sorted(stages.items()))}")
    per_shard = collections.Counter(int(s) for stage, s in ran if stage == "sessionize")
    say(f"  sessionize runs per shard: {dict(sorted(per_shard.items()))} (more than one: the "
        "task ran again after its worker was killed; at-least-once)")  # fmt: skip
    say(f"  worker processes now {after} (the killed one was restarted)")
    got = digest_in(resumed.stdout)
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as reader:
        run_ = reader.run_info()
    status = run_.status.value if run_ is not None else "missing"
    rest = set(range(SHARDS)) - set(held)
    checks = {
        f"crashed client died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "crashed client printed no report": digest_in(crashed.stdout) is None,
        f"checkpoint after the crash: fetch x{SHARDS}, clean, sessionize x1": saved
        == {"fetch": SHARDS, "clean": 1, "sessionize": 1},
        f"resume skipped fetch x{SHARDS}, clean x1, sessionize x1": (
            f"skipped clean x1, fetch x{SHARDS}, sessionize x1" in resumed.stdout
        ),
        "resume ran no fetch or clean task": stages["fetch"] == stages["clean"] == 0,
        f"resume ran sessionize for shards {sorted(rest)} (not {held})": shards == rest,
        "resume ran aggregate and report": stages["aggregate"] >= 1 and stages["report"] == 1,
        "a worker was SIGKILLed mid-graph and restarted": "SIGKILL worker pid" in resumed.stdout
        and after != pids,
        "resumed client exited 0": resumed.returncode == 0,
        f"resumed digest == clean digest ({got})": got == want,
        f"run marked {status}": status == "succeeded",
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    parser = story_parser(__doc__, DEFAULT_DB, STAGES, crash_help="the client dies in this stage")
    parser.add_argument("--scheduler", help="address of a running cluster (default: a new one)")
    parser.add_argument("--kill-worker", action="store_true", help="SIGKILL a worker mid-graph")
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db)
    with connect(args.scheduler) as client:
        say(f"pipeline {RUN_ID!r}: client pid {os.getpid()}, checkpoints in {args.db}")
        result = run(args.db, client, args.crash_at, args.kill_worker)
    say(f"{DIGEST_PREFIX}{result['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

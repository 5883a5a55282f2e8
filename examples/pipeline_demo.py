"""Crash in the middle of a 4-stage pipeline, resume from SQLite, get the same result.

ingest -> preprocess -> analyze -> report, run by ``dag_runner`` with a
checkpoint after every node in a SQLite file. Every stage prints
"<stage>: executing" when it really runs; the runner logs
"<stage>: skipped (restored from checkpoint seq N)" for restored stages.
Checkpoints stay in the file after success, and the run is marked succeeded:
running the command once more starts a fresh run (nothing to resume).

    python examples/pipeline_demo.py --story                    # the whole story
    python examples/pipeline_demo.py --crash-at analyze         # dies with exit code 1
    python examples/pipeline_demo.py                            # resumes, prints the digest
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from _story import DIGEST_PREFIX, child, digest_in, fresh, say, story_parser, verdict
from dag_runner import Node, run_dag

from pitstop import CheckpointManager, CheckpointPolicy, RunInfo, RunStatus, SyncCheckpointManager

DEFAULT_DB = "pitstop-demo.db"
RUN_ID = "pipeline-demo"
STAGES = ("ingest", "preprocess", "analyze", "report")
SENSORS = ("boiler", "condenser", "intake", "turbine")


def build_pipeline(crash_at: str | None = None, records: int = 20_000) -> list[Node]:
    """The four stages; ``crash_at`` names the stage that kills the process midway."""

    def maybe_crash(stage: str) -> None:
        if stage == crash_at:
            say(f"{stage}: CRASH (simulated power cut: os._exit(1))")
            os._exit(1)

    async def ingest() -> list[dict[str, Any]]:
        say("ingest: executing")
        rng = random.Random(2024)
        base = {s: 60.0 + 15.0 * i for i, s in enumerate(SENSORS)}
        rows: list[dict[str, Any]] = []
        for i in range(records):
            sensor = rng.choice(SENSORS)
            value: float | None = round(rng.gauss(base[sensor], 8.0), 3)
            roll = rng.random()
            if roll < 0.02:
                value = None  # a dropped reading
            elif roll < 0.03:
                value = 9999.0  # a stuck sensor
            rows.append({"id": i, "sensor": sensor, "fahrenheit": value})
        maybe_crash("ingest")
        return rows

    async def preprocess(rows: list[dict[str, Any]]) -> dict[str, Any]:
        say(f"preprocess: executing on {len(rows)} records")
        celsius: dict[str, list[float]] = {s: [] for s in SENSORS}
        missing = out_of_range = 0
        for row in rows:
            f = row["fahrenheit"]
            if f is None:
                missing += 1
            elif not -40.0 <= f <= 250.0:
                out_of_range += 1
            else:
                celsius[row["sensor"]].append(round((f - 32.0) * 5.0 / 9.0, 4))
        maybe_crash("preprocess")
        return {"celsius": celsius, "dropped": {"missing": missing, "out_of_range": out_of_range}}

    async def analyze(clean: dict[str, Any]) -> dict[str, Any]:
        say("analyze: executing")
        stats: dict[str, Any] = {}
        for n, (sensor, values) in enumerate(sorted(clean["celsius"].items())):
            mean, stdev = statistics.fmean(values), statistics.pstdev(values)
            stats[sensor] = {
                "count": len(values),
                "mean": round(mean, 6),
                "stdev": round(stdev, 6),
                "median": round(statistics.median(values), 6),
                "p95": round(statistics.quantiles(values, n=20)[-1], 6),
                "anomalies": sum(1 for v in values if abs(v - mean) > 3 * stdev),
            }
            await asyncio.sleep(0.01)  # pretend this is slow
            if n == len(SENSORS) // 2:
                maybe_crash("analyze")
        return stats

    async def report(clean: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        say("report: executing")
        maybe_crash("report")
        summary = {
            "records_kept": sum(s["count"] for s in stats.values()),
            "dropped": clean["dropped"],
            "hottest": max(stats, key=lambda s: stats[s]["mean"]),
            "anomalies": sum(s["anomalies"] for s in stats.values()),
            "sensors": stats,
        }
        text = json.dumps(summary, sort_keys=True, separators=(",", ":"))
        return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}

    return [
        Node("ingest", ingest),
        Node("preprocess", preprocess, ("ingest",)),
        Node("analyze", analyze, ("preprocess",)),
        Node("report", report, ("preprocess", "analyze")),
    ]


async def run_pipeline(db: Path, *, run_id: str = RUN_ID, crash_at: str | None = None) -> str:
    """Run (or resume) the pipeline against the SQLite file ``db``; return the digest."""
    policy = CheckpointPolicy(every_n_nodes=1)  # a checkpoint after every stage
    async with CheckpointManager(run_id, store=db, enabled=True, policy=policy) as mgr:
        outputs = await run_dag(build_pipeline(crash_at), manager=mgr)
    digest: str = outputs["report"]["sha256"]
    return digest


def _run_info(db: Path) -> RunInfo | None:
    """The run's row in ``db`` (status, checkpoints), read without running anything."""
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as mgr:
        return mgr.run_info()


def story(db: Path, crash_at: str) -> int:
    """Crash a child process, resume it, compare with a clean run; 0 on PASS."""
    clean_db = db.with_name(f"{db.stem}-clean{db.suffix}")
    fresh(db)
    fresh(clean_db)
    say(f"== 1/3 a run that crashes during {crash_at!r}")
    crashed = child(__file__, db, "--crash-at", crash_at)
    say("== 2/3 the same command without --crash-at: resumes from the checkpoint")
    resumed = child(__file__, db)
    say("== 3/3 a clean, uninterrupted run in a fresh database")
    clean = child(__file__, clean_db)
    done = STAGES[: STAGES.index(crash_at)]
    skipped = [s for s in done if f"{s}: skipped (restored" in resumed.stdout]
    rerun = [s for s in done if f"{s}: executing" in resumed.stdout]
    got, want = digest_in(resumed.stdout), digest_in(clean.stdout)
    run = _run_info(db)
    status = run.status.value if run is not None else "missing"
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == 1,
        "crashing run printed no report": digest_in(crashed.stdout) is None,
        f"resume skipped {', '.join(skipped) or 'nothing'}": skipped == list(done) and not rerun,
        "resumed and clean runs exited 0": resumed.returncode == clean.returncode == 0,
        f"resumed digest == clean digest ({got})": got is not None and got == want,
        f"run marked {status}, so the next run starts fresh": (
            run is not None and run.status is RunStatus.SUCCEEDED and not run.can_resume
        ),
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    parser = story_parser(__doc__, DEFAULT_DB, STAGES)
    parser.add_argument("--run-id", default=RUN_ID)
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db, args.crash_at or "analyze")
    logging.basicConfig(level=logging.INFO, format="  [%(name)s] %(message)s", stream=sys.stdout)
    say(f"pipeline {args.run_id!r}, checkpoints in {args.db}")
    digest = asyncio.run(run_pipeline(args.db, run_id=args.run_id, crash_at=args.crash_at))
    say(f"{DIGEST_PREFIX}{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A plain synchronous runner with checkpoints: die in stage 3, resume, same result.

load -> clean -> features -> train -> report: a house-price model fitted to data
made in this process (a seeded random generator), run by ``run_pipeline``, a
topological loop over a dict graph. ``SyncCheckpointManager`` saves a checkpoint
after every stage into a SQLite file (the embedded store; ``store=None`` would
mean ./pitstop.db). A second process resumes from that file: the stages that
finished are skipped with their outputs restored, the rest run.

    python examples/sync_runner.py --story                # crash, resume, compare: PASS/FAIL
    python examples/sync_runner.py --story --inside-loop  # the same, called from async code
    python examples/sync_runner.py --crash-at features    # dies in 'features' (os._exit(3))
    python examples/sync_runner.py                        # resumes if it can; prints the digest

pitstop takes 9 lines here, each marked ``# pitstop``: the import, the policy,
the manager, the resume line and five hook calls. Besides those, the runner
takes the manager as a parameter and skips stages whose output was restored.
The manager needs no event loop, so the runner also works when called from
inside a running one (``--inside-loop``).
"""

from __future__ import annotations

import asyncio
import graphlib
import hashlib
import json
import logging
import math
import os
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _story import DIGEST_PREFIX, child, digest_in, fresh, say, story_parser, verdict

from pitstop import CheckpointPolicy, SyncCheckpointManager  # pitstop 1/9

DEFAULT_DB = "pitstop-sync-demo.db"
RUN_ID = "house-prices"
STAGES = ("load", "clean", "features", "train", "report")
GRAPH: dict[str, list[str]] = {  # stage -> the stages whose outputs it takes, in order
    "load": [],
    "clean": ["load"],
    "features": ["clean"],
    "train": ["features"],
    "report": ["features", "train"],
}
COLUMNS = ["sqft", "bedrooms", "age", "distance_km", "sqft_per_bedroom"]
CRASH_EXIT = 3
"""Exit code of a process killed by ``--crash-at`` (a Python error would exit with 1)."""
LOOP_BANNER = "calling the sync runner from inside a running event loop"

Stage = Callable[..., Any]


# --- the runner: a plain topological loop, plus the marked pitstop lines -------------


def run_pipeline(
    graph: dict[str, list[str]], stages: dict[str, Stage], mgr: SyncCheckpointManager
) -> dict[str, Any]:
    """Run every stage after the stages it depends on; return all outputs by stage.

    A stage receives its dependencies' outputs as positional arguments, in the
    order ``graph`` lists them. Stages restored from a checkpoint do not run.
    """
    outputs = dict(mgr.restore_checkpoint().completed) if mgr.can_resume() else {}  # pitstop 2/9
    mgr.on_run_start(graph=graph)  # pitstop 3/9
    for name in graphlib.TopologicalSorter(graph).static_order():
        if name in outputs:
            say(f"{name}: skipped (restored from checkpoint)")
            continue
        mgr.on_node_start(node_id=name)  # pitstop 4/9
        try:
            outputs[name] = stages[name](*[outputs[dep] for dep in graph[name]])
        except Exception as exc:
            say(f"{name}: FAILED: {exc!r}")
            mgr.on_run_end(success=False, error=exc)  # pitstop 5/9
            raise
        mgr.on_node_finish(node_id=name, output=outputs[name])  # pitstop 6/9
    mgr.on_run_end(success=True)  # pitstop 7/9
    return outputs


def pipeline_digest(db: Path, crash_at: str | None = None) -> str:
    """Run (or resume) the pipeline with checkpoints in the SQLite file ``db``."""
    policy = CheckpointPolicy(every_n_nodes=1)  # pitstop 8/9: a checkpoint after every stage
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True, policy=policy) as mgr:  # pitstop 9/9
        outputs = run_pipeline(GRAPH, build_stages(crash_at), mgr)
    digest: str = outputs["report"]["sha256"]
    return digest


# --- the stages: outputs are plain JSON (lists, dicts, numbers) so they can be saved --


def build_stages(crash_at: str | None = None, log: Callable[[str], None] = say) -> dict[str, Stage]:
    """The five stages; ``crash_at`` names the stage that kills the process midway."""

    def maybe_crash(stage: str) -> None:
        if stage == crash_at:
            log(f"{stage}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
            os._exit(CRASH_EXIT)

    def load() -> list[dict[str, Any]]:
        log("load: executing")
        rng = random.Random(2024)
        rows: list[dict[str, Any]] = []
        for i in range(4_000):
            sqft = rng.uniform(450.0, 4_200.0)
            bedrooms = max(1, min(6, round(sqft / 650.0 + rng.gauss(0.0, 0.7))))
            age, distance = rng.randint(0, 90), rng.expovariate(1 / 12)
            price = (60_000 + 210 * sqft + 9_500 * bedrooms - 1_100 * age - 3_200 * distance
                     + rng.gauss(0.0, 35_000.0))  # fmt: skip
            row: dict[str, Any] = {"id": i, "sqft": round(sqft, 1), "bedrooms": bedrooms,
                                   "age": age, "distance_km": round(distance, 2),
                                   "price": round(price, -2)}  # fmt: skip
            roll = rng.random()
            if roll < 0.02:
                row["sqft"] = None  # not recorded
            elif roll < 0.03:
                row["price"] = -row["price"]  # a sign typo
            elif roll < 0.04:
                rows.append(dict(row))  # entered twice
            rows.append(row)
        maybe_crash("load")
        return rows

    def clean(rows: list[dict[str, Any]]) -> dict[str, Any]:
        log(f"clean: executing on {len(rows)} rows")
        seen: set[int] = set()
        kept: list[dict[str, Any]] = []
        dropped = {"duplicate": 0, "missing_sqft": 0, "bad_price": 0}
        for row in rows:
            if row["id"] in seen:
                dropped["duplicate"] += 1
            elif row["sqft"] is None:
                dropped["missing_sqft"] += 1
            elif row["price"] <= 0:
                dropped["bad_price"] += 1
            else:
                kept.append(row)
            seen.add(row["id"])
        maybe_crash("clean")
        return {"rows": kept, "dropped": dropped}

    def features(cleaned: dict[str, Any]) -> dict[str, Any]:
        log("features: executing")
        raw: dict[str, list[list[float]]] = {"train": [], "test": []}
        target: dict[str, list[float]] = {"train": [], "test": []}
        for row in cleaned["rows"]:
            split = "test" if row["id"] % 5 == 0 else "train"
            x = [row["sqft"], row["bedrooms"], row["age"], row["distance_km"]]
            raw[split].append([float(v) for v in x] + [row["sqft"] / row["bedrooms"]])
            target[split].append(row["price"] / 1_000.0)  # in thousands
        # Standardize with the training split's statistics only.
        scaling = {}
        for j, col in enumerate(COLUMNS):
            values = [x[j] for x in raw["train"]]
            scaling[col] = [statistics.fmean(values), statistics.pstdev(values)]
        maybe_crash("features")  # midway: the scaling is known, no row is scaled yet
        out: dict[str, Any] = {"columns": COLUMNS, "scaling": scaling}
        for split, xs in raw.items():
            scaled = [[(v - scaling[c][0]) / scaling[c][1] for v, c in zip(x, COLUMNS, strict=True)]
                      for x in xs]  # fmt: skip
            out[split] = {"x": scaled, "y": target[split]}
        return out

    def train(feats: dict[str, Any]) -> dict[str, Any]:
        log(f"train: executing on {len(feats['train']['y'])} rows")
        xs = [[1.0, *x] for x in feats["train"]["x"]]  # a leading 1 for the intercept
        ys = feats["train"]["y"]
        k = len(xs[0])
        # Ridge regression through the normal equations: (X'X + lambda I) w = X'y.
        a = [[sum(r[i] * r[j] for r in xs) + (1e-3 if i == j else 0.0) for j in range(k)]
             for i in range(k)]  # fmt: skip
        b = [sum(r[i] * y for r, y in zip(xs, ys, strict=True)) for i in range(k)]
        maybe_crash("train")
        w = solve(a, b)
        fitted = [sum(wi * xi for wi, xi in zip(w, r, strict=True)) for r in xs]
        return {
            "intercept": w[0],
            "weights": dict(zip(feats["columns"], w[1:], strict=True)),
            "train_rmse": rmse(fitted, ys),
        }

    def report(feats: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
        log("report: executing")
        maybe_crash("report")
        weights = [model["weights"][c] for c in feats["columns"]]
        xs, ys = feats["test"]["x"], feats["test"]["y"]
        predicted = [model["intercept"] + sum(w * v for w, v in zip(weights, x, strict=True))
                     for x in xs]  # fmt: skip
        mean_y = statistics.fmean(ys)
        ss_res = sum((p - y) ** 2 for p, y in zip(predicted, ys, strict=True))
        summary = {
            "test_rows": len(ys),
            "test_rmse_k": round(rmse(predicted, ys), 6),
            "test_mae_k": round(
                statistics.fmean(abs(p - y) for p, y in zip(predicted, ys, strict=True)), 6
            ),
            "r2": round(1.0 - ss_res / sum((y - mean_y) ** 2 for y in ys), 6),
            "train_rmse_k": round(model["train_rmse"], 6),
            "strongest": max(model["weights"], key=lambda c: abs(model["weights"][c])),
            "weights": {c: round(w, 6) for c, w in model["weights"].items()},
        }
        text = json.dumps(summary, sort_keys=True, separators=(",", ":"))
        return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}

    return {"load": load, "clean": clean, "features": features, "train": train, "report": report}


def solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve ``a x = b`` by Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            m[r] = [v - f * p for v, p in zip(m[r], m[col], strict=True)]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def rmse(predicted: list[float], actual: list[float]) -> float:
    return math.sqrt(statistics.fmean((p - y) ** 2 for p, y in zip(predicted, actual, strict=True)))


# --- calling the sync runner from async code ----------------------------------------


async def from_async_code(db: Path, crash_at: str | None) -> str:
    """What an async application (a web handler, a notebook cell) may do with the runner."""
    loop = asyncio.get_running_loop()  # raises unless a loop runs on this thread
    say(f"{LOOP_BANNER} ({type(loop).__name__})")
    # A plain call: no await, no thread, no second loop. The manager never needs a
    # loop, so it is fine on a thread that runs one (this blocks the loop while the
    # pipeline runs; an application would usually `await asyncio.to_thread(...)`).
    return pipeline_digest(db, crash_at)


# --- the story: crash, resume, compare ----------------------------------------------


def clean_digest() -> str:
    """The reference: one uninterrupted run in this process with checkpoints off."""
    with SyncCheckpointManager() as off:  # disabled (the default): hooks do nothing, no file
        outputs = run_pipeline(GRAPH, build_stages(log=lambda message: None), off)
    digest: str = outputs["report"]["sha256"]
    return digest


def story(db: Path, crash_at: str, inside_loop: bool) -> int:
    """Crash a child process, resume in another, compare with a clean run; 0 on PASS."""
    fresh(db)
    extra = ["--inside-loop"] if inside_loop else []
    where = " from inside a running event loop" if inside_loop else ""
    n = STAGES.index(crash_at) + 1
    say(f"== 1/3 a run{where} that dies inside {crash_at!r} (stage {n} of {len(STAGES)})")
    crashed = child(__file__, db, "--crash-at", crash_at, *extra)
    say("== 2/3 the same command without --crash-at: resumes from the SQLite file")
    resumed = child(__file__, db, *extra)
    say("== 3/3 a clean run in this process, checkpoints off")
    want = clean_digest()
    say(f"  {DIGEST_PREFIX}{want}")
    done = STAGES[: STAGES.index(crash_at)]
    skipped = [s for s in STAGES if f"{s}: skipped (restored" in resumed.stdout]
    ran = [s for s in STAGES if f"{s}: executing" in resumed.stdout]
    got = digest_in(resumed.stdout)
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as reader:
        run = reader.run_info()  # the run's row: status, checkpoints (reading writes nothing)
    status = run.status.value if run is not None else "missing"
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "crashing run printed no report": digest_in(crashed.stdout) is None,
        f"resume skipped {', '.join(skipped) or 'nothing'}": skipped == list(done),
        f"resume ran {', '.join(ran) or 'nothing'}": ran == list(STAGES[len(done) :]),
        "resumed run exited 0": resumed.returncode == 0,
        f"resumed digest == clean digest ({got})": got == want,
        f"run marked {status}, so the next run starts fresh": (
            status == "succeeded" and run is not None and not run.can_resume
        ),
    }
    if inside_loop:
        checks["both processes ran it inside a running event loop"] = (
            LOOP_BANNER in crashed.stdout and LOOP_BANNER in resumed.stdout
        )
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    parser = story_parser(__doc__, DEFAULT_DB, STAGES)
    parser.add_argument("--inside-loop", action="store_true", help="call it from asyncio.run()")
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db, args.crash_at or "features", args.inside_loop)
    logging.basicConfig(level=logging.INFO, format="  [%(name)s] %(message)s", stream=sys.stdout)
    say(f"pipeline {RUN_ID!r}, checkpoints in {args.db}")
    if args.inside_loop:
        digest = asyncio.run(from_async_code(args.db, args.crash_at))
    else:
        digest = pipeline_digest(args.db, args.crash_at)
    say(f"{DIGEST_PREFIX}{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

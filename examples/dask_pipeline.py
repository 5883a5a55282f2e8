"""A Dask pipeline on the local threaded scheduler: die in stage 3, resume, same result.

Weekly demand forecasts for four sales regions, built with ``dask.delayed``:

    extract[region] -> clean[region] -> combine -> forecast[region] -> report
         4 tasks          4 tasks        1 task       4 tasks          1 task

Outputs are pandas DataFrames (saved exactly by pitstop's default codec, no
pickle). ``DaskCheckpoint`` records every task of the listed layers as it
finishes and saves after each one into a SQLite file. A second process resumes
from that file: the finished tasks are replaced by their saved outputs before
the scheduler starts, so they never run again.

    python examples/dask_pipeline.py --story             # crash, resume, compare: PASS/FAIL
    python examples/dask_pipeline.py --crash-at combine  # dies inside 'combine' (os._exit(3))
    python examples/dask_pipeline.py                     # resumes if it can; prints the digest

Task keys come from ``dask.delayed(..., pure=True)``: a hash of the function and
its arguments, the same in every process (an impure delayed call gets a random
key that no later process could find). The crash switch is an environment
variable, not an argument or a global, so it changes no key.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import sys
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _story import DIGEST_PREFIX, child, digest_in, fresh, say, story_parser, verdict
from dask.delayed import Delayed, delayed
from dask.utils import key_split

from pitstop import CheckpointPolicy, SyncCheckpointManager
from pitstop.adapters.dask import DaskCheckpoint

DEFAULT_DB = "pitstop-dask-demo.db"
RUN_ID = "regional-demand"
REGIONS = ("north", "south", "east", "west")
STAGES = ("extract", "clean", "combine", "forecast", "report")
CRASH_EXIT = 3
CRASH_ENV = "PITSTOP_DASK_DEMO_CRASH_AT"
"""Names the stage that kills the process; read inside the tasks (keys stay the same)."""
PRODUCTS = 40
HORIZON = 4  # weeks forecast


def log(message: str) -> None:
    """``say`` for tasks: they run on several threads, so each line goes out in one write
    (``print`` writes the text and the newline separately, and lines could interleave)."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def maybe_crash(stage: str) -> None:
    if os.environ.get(CRASH_ENV) == stage:
        log(f"{stage}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
        os._exit(CRASH_EXIT)


# --- the stages (plain functions of pandas frames) ------------------------------------


def extract(region: str) -> pd.DataFrame:
    """A year of order lines from the region's shop system (made up here, seeded)."""
    log(f"extract[{region}]: executing")
    rng = np.random.default_rng(zlib.crc32(region.encode()))
    n = 30_000
    frame = pd.DataFrame({
        "day": pd.Timestamp("2026-01-05") + pd.to_timedelta(rng.integers(0, 364, n), unit="D"),
        "product": rng.integers(0, PRODUCTS, n).astype(np.int64),
        "qty": rng.poisson(3.0, n).astype(np.int64) * np.where(rng.random(n) < 0.02, -1, 1),
        "price": np.where(rng.random(n) < 0.01, np.nan, rng.gamma(4.0, 5.0, n).round(2)),
        "region": region,
    })  # fmt: skip
    maybe_crash("extract")
    return pd.concat([frame, frame.sample(frac=0.01, random_state=1)], ignore_index=True)


def clean(orders: pd.DataFrame) -> pd.DataFrame:
    """Drop duplicates and returns; fill missing prices with the product's median."""
    log(f"clean[{orders['region'].iloc[0]}]: executing")
    out = orders.drop_duplicates().loc[lambda f: f["qty"] > 0].copy()
    median = out.groupby("product")["price"].transform("median")
    out["price"] = out["price"].fillna(median)
    out["revenue"] = (out["qty"] * out["price"]).round(2)
    maybe_crash("clean")
    return out.reset_index(drop=True)


def combine(*regions: pd.DataFrame) -> pd.DataFrame:
    """Weekly units and revenue per region and product (stage 3)."""
    log("combine: executing")
    orders = pd.concat(regions, ignore_index=True)
    orders["week"] = orders["day"].dt.to_period("W").dt.start_time
    maybe_crash("combine")  # midway: the orders are combined, nothing is aggregated yet
    weekly = orders.groupby(["region", "product", "week"], as_index=False)[["qty", "revenue"]]
    return weekly.sum().sort_values(["region", "product", "week"], ignore_index=True)


def forecast(weekly: pd.DataFrame, region: str) -> pd.DataFrame:
    """A linear trend per product over the last 12 weeks, projected HORIZON weeks ahead."""
    log(f"forecast[{region}]: executing")
    maybe_crash("forecast")
    rows = []
    for product, hist in weekly[weekly["region"] == region].groupby("product"):
        units = hist["qty"].to_numpy(dtype=np.float64)[-12:]
        slope, intercept = np.polyfit(np.arange(units.size), units, 1)
        ahead = intercept + slope * np.arange(units.size, units.size + HORIZON)
        weeks = {f"week+{i + 1}": round(max(v, 0.0), 4) for i, v in enumerate(ahead)}
        rows.append({"region": region, "product": int(product), "trend": round(slope, 6), **weeks})
    return pd.DataFrame(rows)


def report(weekly: pd.DataFrame, *forecasts: pd.DataFrame) -> dict[str, Any]:
    log("report: executing")
    maybe_crash("report")
    ahead = pd.concat(forecasts, ignore_index=True)
    units = ahead[[f"week+{i + 1}" for i in range(HORIZON)]].sum(axis=1)
    top = ahead.assign(units=units).nlargest(5, "units")
    summary = {
        "weeks": int(weekly["week"].nunique()),
        "revenue_by_region": {
            str(k): round(float(v), 2) for k, v in weekly.groupby("region")["revenue"].sum().items()
        },
        "forecast_units_by_region": {
            str(k): round(float(v), 4) for k, v in units.groupby(ahead["region"]).sum().items()
        },
        "top_products": [f"{r.region}/{r.product}" for r in top.itertuples()],
        "growing": int((ahead["trend"] > 0).sum()),
    }
    text = json.dumps(summary, sort_keys=True)
    return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def pure(fn: Any) -> Any:
    """``dask.delayed(fn, pure=True)``: each call's key is a hash of what it computes."""
    return delayed(fn, pure=True)


def build() -> Delayed:
    """The pipeline as a dask graph (nothing runs yet)."""
    cleaned = [pure(clean)(pure(extract)(region)) for region in REGIONS]
    weekly = pure(combine)(*cleaned)
    result: Delayed = pure(report)(weekly, *[pure(forecast)(weekly, r) for r in REGIONS])
    return result


# --- running it with checkpoints ------------------------------------------------------


def run(db: Path) -> dict[str, Any]:
    """Run (or resume) the pipeline on the threaded scheduler, checkpoints in ``db``."""
    policy = CheckpointPolicy(every_n_nodes=1)  # a checkpoint after every finished task
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True, policy=policy) as mgr:
        with DaskCheckpoint(mgr, layers=STAGES) as ckpt:  # these layers' tasks are checkpointed
            # (mypy --strict flags calls of dask's unannotated functions, hence the ignore)
            result: dict[str, Any] = build().compute(scheduler="threads")  # type: ignore[no-untyped-call]
        report_ = ckpt.report
    if report_ is not None and report_.restored_seq is not None:
        layers = collections.Counter(key_split(n) for n in report_.skipped)
        shown = ", ".join(f"{name} x{n}" for name, n in sorted(layers.items()))
        say(f"resumed from checkpoint seq {report_.restored_seq}: skipped {shown or 'nothing'}")
    return result


def clean_digest() -> str:
    """The reference: one uninterrupted run in this process, no pitstop at all."""
    with contextlib.redirect_stdout(io.StringIO()):  # the tasks' progress lines
        result = build().compute(scheduler="threads")  # type: ignore[no-untyped-call]
    digest: str = result["sha256"]
    return digest


# --- the story ---------------------------------------------------------------------------


def executed(output: str) -> collections.Counter[str]:
    """How many tasks of each stage printed ``<stage>...: executing``."""
    return collections.Counter(
        line.split(":")[0].split("[")[0].strip()
        for line in output.splitlines()
        if line.endswith(": executing")
    )


def story(db: Path) -> int:
    fresh(db)
    say("== 1/3 a run that dies inside 'combine' (stage 3 of 5)")
    crashed = child(__file__, db, "--crash-at", "combine")
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as reader:
        left = reader.load_checkpoint(outputs=False)  # statuses only, nothing decoded
    saved = collections.Counter(key_split(n) for n in left.completed)
    say(f"  the SQLite file holds seq {left.seq}: completed {dict(sorted(saved.items()))}")
    say("== 2/3 the same command without --crash-at: resumes from the SQLite file")
    resumed = child(__file__, db)
    say("== 3/3 a clean run in this process, checkpoints off")
    want = clean_digest()
    say(f"  {DIGEST_PREFIX}{want}")
    got = digest_in(resumed.stdout)
    ran = executed(resumed.stdout)
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as reader:
        run_ = reader.run_info()
    status = run_.status.value if run_ is not None else "missing"
    n = len(REGIONS)
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "crashing run printed no report": digest_in(crashed.stdout) is None,
        f"checkpoint after the crash: extract x{n}, clean x{n} completed": saved
        == {"extract": n, "clean": n},
        f"resume skipped extract x{n}, clean x{n}": f"skipped clean x{n}, extract x{n}"
        in resumed.stdout,
        "resume ran no extract or clean task": ran["extract"] == ran["clean"] == 0,
        f"resume ran combine, forecast x{n}, report": ran
        == {"combine": 1, "forecast": n, "report": 1},
        "resumed run exited 0": resumed.returncode == 0,
        f"resumed digest == clean digest ({got})": got == want,
        f"run marked {status}, so the next run starts fresh": status == "succeeded",
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    parser = story_parser(__doc__, DEFAULT_DB, STAGES)
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db)
    if args.crash_at:
        os.environ[CRASH_ENV] = args.crash_at
    say(f"pipeline {RUN_ID!r} on dask {version('dask')} (threads), checkpoints in {args.db}")
    say(f"{DIGEST_PREFIX}{run(args.db)['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

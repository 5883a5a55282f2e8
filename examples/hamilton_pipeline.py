"""An Apache Hamilton pandas pipeline with checkpoints: die in stage 3, resume, same result.

Seven Hamilton functions (a function's parameters name the nodes or run inputs
it takes): ``raw_orders`` and ``customers`` make data from a seed,
``enriched_orders`` joins them and prices each order (stage 3),
``daily_revenue``, ``segment_stats`` and ``hourly_profile`` aggregate it
(a Series, a DataFrame, a numpy matrix) and ``report`` digests all three.
Hamilton's driver runs them; ``pitstop.adapters.hamilton`` saves a checkpoint
after every node into a SQLite file, with the default typed codec (DataFrames
and arrays exactly, no pickle). A second process resumes from that file: the
adapter passes the finished nodes' outputs to Hamilton as ``overrides=``, so
Hamilton never executes them again.

    python examples/hamilton_pipeline.py --story     # crash, resume, compare: PASS/FAIL
    python examples/hamilton_pipeline.py --crash-at enriched_orders
    python examples/hamilton_pipeline.py             # resumes if it can; prints the digest

The lines marked ``# pitstop`` are all it takes: two imports, the policy and
the manager, the adapter, ``*ckpt.adapters()`` in the driver's
``with_adapters`` and ``ckpt.execute`` in place of ``dr.execute``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from _story import DIGEST_PREFIX, child, digest_in, fresh, say, story_parser, verdict
from hamilton import ad_hoc_utils, driver

from pitstop import CheckpointPolicy, SyncCheckpointManager  # pitstop
from pitstop.adapters.hamilton import PitstopHamilton  # pitstop

DEFAULT_DB = "pitstop-hamilton-demo.db"
RUN_ID = "order-analytics"
CRASH_EXIT = 3
"""Exit code of a process killed by ``--crash-at`` (a Python error would exit with 1)."""
INPUTS: dict[str, Any] = {"seed": 2026, "n_orders": 30_000, "vat_rate": 0.2}
FINAL_VARS = ["report"]
CRASH_AT: str | None = None

Matrix = npt.NDArray[np.int64]


def crash_here(stage: str) -> None:
    say(f"{stage}: executing")
    if stage == CRASH_AT:
        say(f"{stage}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
        os._exit(CRASH_EXIT)


# --- the Hamilton functions (parameter names = the nodes and inputs they take) ---------


def raw_orders(seed: int, n_orders: int) -> pd.DataFrame:
    """Orders as an order system exports them."""
    crash_here("raw_orders")
    rng = np.random.default_rng(seed)
    placed = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 60 * 86_400, n_orders), unit="s"
    )
    return pd.DataFrame({
        "order_id": np.arange(n_orders, dtype=np.int64),
        "customer": rng.integers(0, 1_000, n_orders).astype(np.int32),
        "placed_at": placed,
        "net": rng.gamma(2.0, 35.0, n_orders).round(2),
        "channel": pd.Categorical(rng.choice(["web", "app", "store"], n_orders)),
        "returned": rng.random(n_orders) < 0.06,
    })  # fmt: skip


def customers(seed: int) -> pd.DataFrame:
    """The customer table, indexed by customer id."""
    crash_here("customers")
    rng = np.random.default_rng(seed + 1)
    ids = np.arange(1_000, dtype=np.int32)
    return pd.DataFrame({
        "customer": ids,
        "region": pd.array(rng.choice(["north", "south", "east", "west"], ids.size),
                           dtype="string"),
        "tier": pd.Series(rng.integers(1, 4, ids.size), dtype="Int64").mask(
            rng.random(ids.size) < 0.25),  # no tier yet: <NA>
    }).set_index("customer")  # fmt: skip


def enriched_orders(
    raw_orders: pd.DataFrame, customers: pd.DataFrame, vat_rate: float
) -> pd.DataFrame:
    """Orders with their customer's region and tier, gross price and tier discount."""
    crash_here("enriched_orders")  # stage 3
    out = raw_orders.join(customers, on="customer")
    discount = out["tier"].fillna(0).astype("float64") * 0.02
    out["gross"] = (out["net"] * (1 + vat_rate) * (1 - discount)).round(2)
    return out[~out["returned"]].reset_index(drop=True)


def daily_revenue(enriched_orders: pd.DataFrame) -> pd.Series:
    """Gross revenue per UTC day."""
    crash_here("daily_revenue")
    day = enriched_orders["placed_at"].dt.floor("D")
    return enriched_orders["gross"].groupby(day).sum().round(2).rename("revenue")


def segment_stats(enriched_orders: pd.DataFrame) -> pd.DataFrame:
    """Orders, revenue and mean basket per region and channel."""
    crash_here("segment_stats")
    grouped = enriched_orders.groupby(["region", "channel"], observed=True)["gross"]
    return grouped.agg(["count", "sum", "mean"]).round(2)


def hourly_profile(enriched_orders: pd.DataFrame) -> Matrix:
    """Orders per weekday (rows) and hour of day (columns): a 7 x 24 matrix."""
    crash_here("hourly_profile")
    placed = enriched_orders["placed_at"]
    profile = np.zeros((7, 24), dtype=np.int64)
    np.add.at(profile, (placed.dt.day_of_week.to_numpy(), placed.dt.hour.to_numpy()), 1)
    return profile


def report(
    daily_revenue: pd.Series, segment_stats: pd.DataFrame, hourly_profile: Matrix
) -> dict[str, Any]:
    """The numbers a dashboard shows, and a digest of them."""
    crash_here("report")
    best = segment_stats["sum"].idxmax()
    summary = {
        "days": len(daily_revenue),
        "revenue": round(float(daily_revenue.sum()), 2),
        "best_day": daily_revenue.idxmax().isoformat(),
        "best_segment": [str(part) for part in best],
        "segments": {f"{r}/{c}": [int(n), float(s)] for (r, c), (n, s, _m)
                     in segment_stats.iterrows()},
        "busiest_hour": [int(v) for v in np.unravel_index(hourly_profile.argmax(), (7, 24))],
        "profile_sum": int(hourly_profile.sum()),
    }  # fmt: skip
    text = json.dumps(summary, sort_keys=True)
    return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}


STAGES = ("raw_orders", "customers", "enriched_orders", "daily_revenue", "segment_stats",
          "hourly_profile", "report")  # fmt: skip
# Hamilton builds its graph from a module's functions: this one holds the stages only
# (not main, story, ... of this file).
NODES = ad_hoc_utils.create_temporary_module(
    raw_orders, customers, enriched_orders, daily_revenue, segment_stats, hourly_profile, report
)


# --- the run: the lines marked "# pitstop" --------------------------------------------


def run(db: Path | None) -> dict[str, Any]:
    """Run the pipeline (checkpoints in ``db``; None: off); resume if the run can."""
    on = db is not None
    policy = CheckpointPolicy(every_n_nodes=1)  # pitstop: a checkpoint after every node
    with SyncCheckpointManager(RUN_ID, store=db, enabled=on, policy=policy) as mgr:  # pitstop
        ckpt = PitstopHamilton(mgr)  # pitstop
        dr = driver.Builder().with_modules(NODES).with_adapters(*ckpt.adapters()).build()  # pitstop
        result: dict[str, Any] = ckpt.execute(dr, FINAL_VARS, inputs=INPUTS)  # pitstop
        if ckpt.resumed is not None:  # what the resume restored instead of executing
            outputs = ckpt.resumed.completed
            for name in sorted(ckpt.skipped, key=STAGES.index):
                say(f"{name}: skipped (restored {type(outputs[name]).__name__} "
                    f"from checkpoint seq {ckpt.resumed.seq})")  # fmt: skip
    return result


def digest(db: Path | None) -> str:
    out: str = run(db)["report"]["sha256"]
    return out


# --- the story --------------------------------------------------------------------------


def story(db: Path) -> int:
    fresh(db)
    say("== 1/3 a run that dies inside 'enriched_orders' (stage 3 of 7)")
    crashed = child(__file__, db, "--crash-at", "enriched_orders")
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as mgr:
        left = mgr.load_checkpoint(outputs=False) if mgr.can_resume() else None
    if left is not None:
        say(f"  left behind: checkpoint seq {left.seq} ({left.info.serializer} codec), "
            f"completed {sorted(left.completed)}, to run {sorted(left.to_run)}")  # fmt: skip
    say("== 2/3 the same command without --crash-at: resumes")
    resumed = child(__file__, db)
    say("== 3/3 a clean run in this process, checkpoints off")
    want = digest(None)
    say(f"  {DIGEST_PREFIX}{want}")
    got = digest_in(resumed.stdout)
    with SyncCheckpointManager(RUN_ID, store=db, enabled=True) as mgr:
        info = mgr.run_info()
    done = ("raw_orders", "customers")
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "the crash left 2 completed nodes, saved with the typed codec (no pickle)": left is not None
        and sorted(left.completed) == sorted(done)
        and left.info.serializer == "typed",
        "resume skipped raw_orders and customers (Hamilton did not execute them)": all(
            f"{s}: skipped (restored DataFrame" in resumed.stdout
            and f"{s}: executing" not in resumed.stdout
            for s in done
        ),
        "resume ran the other 5 stages": all(
            f"{s}: executing" in resumed.stdout for s in STAGES if s not in done
        ),
        f"resumed digest == clean digest ({got})": got == want,
        "run marked succeeded": info is not None and info.status.value == "succeeded",
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    global CRASH_AT
    parser = story_parser(__doc__, DEFAULT_DB, STAGES)
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db)
    CRASH_AT = args.crash_at
    say(f"{DIGEST_PREFIX}{digest(args.db)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

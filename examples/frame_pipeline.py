"""A Hamilton-style pandas pipeline: DataFrame outputs saved with the default codec (no pickle).

Each stage is a function whose parameter names are the stages it needs (the
way Apache Hamilton builds its graph); ``run`` derives the graph from the
signatures and runs it in order. Outputs are pandas DataFrames and Series
(datetimes, categories, nullable ints, strings), numpy scalars and a dict:
``TypedSerializer``, the default, saves them exactly, and loading runs no code.

    python examples/frame_pipeline.py --story     # crash in stage 3, resume, compare, inspect
    python examples/frame_pipeline.py --crash-at enriched
    python examples/frame_pipeline.py             # resumes if it can; prints the digest

The story also runs ``pitstop show`` (node statuses, no decoding) and
``pitstop export`` (outputs as JSON) on the store the crash left behind.
"""

from __future__ import annotations

import graphlib
import hashlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _story import DIGEST_PREFIX, child, digest_in, fresh, pitstop_cli, say, story_parser, verdict

from pitstop import CheckpointPolicy, SyncCheckpointManager

DEFAULT_DB = "pitstop-frames-demo.db"
RUN_ID = "orders"
CRASH_EXIT = 3
STAGES = ("raw_orders", "customers", "enriched", "daily_revenue", "report")


# --- the stages (parameter names = the stages they take) ----------------------------


def raw_orders() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 20_000
    coupon = pd.Series(rng.integers(1, 50, n)).where(rng.random(n) < 0.2).astype("Int64")
    crash_here("raw_orders")
    return pd.DataFrame({
        "order_id": np.arange(n, dtype=np.int64),
        "customer": rng.integers(0, 500, n).astype(np.int32),
        "placed_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
            rng.integers(0, 90 * 86_400, n), unit="s"),
        "amount": rng.gamma(2.0, 40.0, n).round(2),
        "channel": pd.Categorical(rng.choice(["web", "app", "store"], n)),
        "coupon": coupon.to_numpy(dtype="float64"),  # NaN: no coupon
    }).astype({"coupon": "Int64"})  # fmt: skip


def customers() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    ids = np.arange(500)
    crash_here("customers")
    return pd.DataFrame({
        "customer": ids.astype(np.int32),
        "region": pd.array(rng.choice(["north", "south", "east", "west"], 500), dtype="string"),
        "since": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 2000, 500), "D"),
    }).set_index("customer")  # fmt: skip


def enriched(raw_orders: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    crash_here("enriched")  # stage 3
    out = raw_orders.join(customers, on="customer")
    out["discount"] = (out["coupon"].fillna(0) / 100 * out["amount"]).round(2)
    return out


def daily_revenue(enriched: pd.DataFrame) -> pd.Series:
    crash_here("daily_revenue")
    net = enriched["amount"] - enriched["discount"]
    return net.groupby(enriched["placed_at"].dt.floor("D")).sum().round(2).rename("revenue")


def report(enriched: pd.DataFrame, daily_revenue: pd.Series) -> dict[str, Any]:
    crash_here("report")
    by_region = enriched.groupby("region", observed=True)["amount"].sum().round(2)
    summary = {
        "orders": len(enriched),
        "revenue": float(daily_revenue.sum().round(2)),
        "best_day": daily_revenue.idxmax().isoformat(),
        "by_region": {str(k): float(v) for k, v in by_region.items()},
        "mean_amount": np.float64(enriched["amount"].mean()).round(4),
    }
    text = json.dumps(summary, sort_keys=True, default=float)
    return {"summary": summary, "sha256": hashlib.sha256(text.encode()).hexdigest()}


FUNCTIONS: dict[str, Callable[..., Any]] = {f.__name__: f for f in
    (raw_orders, customers, enriched, daily_revenue, report)}  # fmt: skip
CRASH_AT: str | None = None


def crash_here(stage: str) -> None:
    if stage == CRASH_AT:
        say(f"{stage}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
        os._exit(CRASH_EXIT)


# --- the runner: graph from signatures, the pitstop lines marked ---------------------


def run(mgr: SyncCheckpointManager) -> dict[str, Any]:
    graph = {name: list(inspect.signature(f).parameters) for name, f in FUNCTIONS.items()}
    outputs = dict(mgr.restore_checkpoint().completed) if mgr.can_resume() else {}  # pitstop
    mgr.on_run_start(graph=graph)  # pitstop
    for name in graphlib.TopologicalSorter(graph).static_order():
        if name in outputs:
            say(f"{name}: skipped (restored {type(outputs[name]).__name__})")
            continue
        say(f"{name}: executing")
        mgr.on_node_start(node_id=name)  # pitstop
        outputs[name] = FUNCTIONS[name](**{dep: outputs[dep] for dep in graph[name]})
        mgr.on_node_finish(node_id=name, output=outputs[name])  # pitstop
    mgr.on_run_end(success=True)  # pitstop
    return outputs


def digest(db: Path | None) -> str:
    policy = CheckpointPolicy(every_n_nodes=1)
    with SyncCheckpointManager(RUN_ID, store=db, enabled=db is not None, policy=policy) as mgr:
        result: str = run(mgr)["report"]["sha256"]
    return result


# --- the story -----------------------------------------------------------------------


def story(db: Path) -> int:
    fresh(db)
    say("== 1/4 a run that dies inside 'enriched' (stage 3 of 5)")
    crashed = child(__file__, db, "--crash-at", "enriched")
    say("== 2/4 what the crash left: statuses need no decoding, outputs export as JSON")
    shown = pitstop_cli(db, "show", RUN_ID)
    export = db.with_suffix(".export.json")
    exported = pitstop_cli(db, "export", RUN_ID, "-o", str(export))
    doc = json.loads(export.read_text()) if exported.returncode == 0 else {"nodes": {}}
    raw = doc["nodes"].get("raw_orders", {}).get("output") or {}
    say("== 3/4 the same command without --crash-at: resumes")
    resumed = child(__file__, db)
    say("== 4/4 a clean run in this process, checkpoints off")
    want = digest(None)
    say(f"  {DIGEST_PREFIX}{want}")
    got = digest_in(resumed.stdout)
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "pitstop show lists 2 completed, 3 pending": shown.returncode == 0
        and "5 total, 2 completed, 0 interrupted, 0 failed, 3 pending" in shown.stdout,
        "pitstop export wrote the DataFrame (20,000 rows)": len(raw.get("data", [])) == 20_000,
        "resume skipped raw_orders and customers": "raw_orders: skipped (restored DataFrame)"
        in resumed.stdout
        and "customers: skipped (restored DataFrame)" in resumed.stdout,
        "resume ran enriched, daily_revenue, report": all(
            f"{s}: executing" in resumed.stdout for s in STAGES[2:]
        ),
        f"resumed digest == clean digest ({got})": got == want,
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

"""Queries of the SQL store that are more than one line."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from ._models import CHECKPOINTS as CP
from ._models import NODES
from .base import unneeded_rows


async def fetch_latest_seq(conn: AsyncConnection, run_id: str) -> int | None:
    """Seq of the run's newest checkpoint, None when it has none."""
    return (await conn.execute(latest_query(run_id))).scalar_one_or_none()


def latest_query(run_id: str) -> Select[int]:
    """The run's newest seq; ORDER BY ... LIMIT 1 reads one primary key entry on both backends."""
    return select(CP.c.seq).where(CP.c.run_id == run_id).order_by(CP.c.seq.desc()).limit(1)


def newest_rows(run_id: str, seq: int, sqlite: bool) -> Select[Any]:
    """Each node's newest row with seq <= ``seq``: one query, walking the primary key."""
    upto = select(NODES).where(NODES.c.run_id == run_id, NODES.c.seq <= seq)
    if not sqlite:
        # With the join below PostgreSQL's planner, short of statistics on a fresh
        # table, picks a nested loop that reads the run once per node.
        return upto.order_by(NODES.c.node_id, NODES.c.seq.desc()).ext(distinct_on(NODES.c.node_id))
    newest = (
        select(NODES.c.node_id, func.max(NODES.c.seq).label("seq"))
        .where(NODES.c.run_id == run_id, NODES.c.seq <= seq)
        .group_by(NODES.c.node_id)
        .subquery()
    )
    on = (NODES.c.node_id == newest.c.node_id) & (NODES.c.seq == newest.c.seq)
    return select(NODES).join(newest, on).where(NODES.c.run_id == run_id)


async def collect(conn: AsyncConnection, run_id: str) -> None:
    """Delete the run's node rows that no remaining checkpoint reads."""
    kept = list((await conn.execute(select(CP.c.seq).where(CP.c.run_id == run_id))).scalars())
    if not kept:
        await conn.execute(delete(NODES).where(NODES.c.run_id == run_id))
        return
    pairs = await conn.execute(select(NODES.c.node_id, NODES.c.seq).where(NODES.c.run_id == run_id))
    drop = unneeded_rows(((n, s) for n, s in pairs), kept)
    if drop:
        query = delete(NODES).where(
            NODES.c.run_id == run_id,
            NODES.c.node_id == bindparam("b_node"),
            NODES.c.seq == bindparam("b_seq"),
        )
        await conn.execute(query, [{"b_node": n, "b_seq": s} for n, s in drop])

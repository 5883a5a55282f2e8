"""SQL tables of the SQL store, the database schema version and its migrations.

The tables live on a private registry so an application's ``SQLModel.metadata``
(its ``create_all`` or Alembic autogenerate) never sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    LargeBinary,
    MetaData,
    Row,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from .._errors import SchemaVersionError
from .base import CheckpointRecord, NodeRow

SCHEMA_VERSION = 1
"""Version of the tables below; bump it and append to ``MIGRATIONS`` on every change."""

Migration = Callable[[Connection], None]

MIGRATIONS: list[tuple[int, Migration]] = []
"""``(version, upgrade)`` pairs in order; ``upgrade`` brings the tables from version-1."""


class _Base(SQLModel, registry=registry()):
    """Root of pitstop's tables: its own registry, hence its own MetaData."""


class CheckpointRow(_Base, table=True):
    """One checkpoint: its header and the user state blob."""

    __tablename__ = "pitstop_checkpoints"

    run_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    parent_seq: int | None = None
    created_at: float
    trigger: str
    label: str | None = None
    node: str | None = None
    schema_version: int
    serializer: str
    checksum: str
    size: int = Field(sa_type=BigInteger)
    nodes_written: int
    # "metadata" is reserved on declarative classes, so the attribute is renamed.
    meta: bytes = Field(sa_column=Column("metadata", LargeBinary, nullable=False))
    state: bytes | None = Field(default=None, sa_column=Column("state", LargeBinary))


class NodeStateRow(_Base, table=True):
    """One node's state, written by the checkpoint ``seq`` where it changed."""

    __tablename__ = "pitstop_node_states"
    # The primary key (run_id, node_id, seq) answers "newest row per node with
    # seq <= S"; this one serves deleting and collecting by checkpoint.
    __table_args__ = (Index("ix_pitstop_node_states_run_seq", "run_id", "seq"),)

    run_id: str = Field(primary_key=True)
    node_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    status: str
    attempt: int
    error: str | None = Field(default=None, sa_type=Text)
    started_at: float | None = None
    finished_at: float | None = None
    deps: str = Field(sa_type=Text)
    """JSON list of node ids."""
    serializer: str
    output: bytes | None = Field(default=None, sa_column=Column("output", LargeBinary))
    checksum: str


class SchemaRow(_Base, table=True):
    """The single row holding the database schema version."""

    __tablename__ = "pitstop_schema"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int


METADATA: MetaData = _Base.metadata
CHECKPOINTS: Table = METADATA.tables[CheckpointRow.__tablename__]
NODES: Table = METADATA.tables[NodeStateRow.__tablename__]
SCHEMA: Table = METADATA.tables[SchemaRow.__tablename__]


def ensure_schema(conn: Connection) -> None:
    """Create missing tables and migrate old ones, inside the caller's transaction.

    Raises:
        SchemaVersionError: the database was written by a newer pitstop.
    """
    SCHEMA.create(conn, checkfirst=True)
    found = conn.execute(select(SCHEMA.c.version).where(SCHEMA.c.id == 1)).scalar_one_or_none()
    if found is None:
        METADATA.create_all(conn)
        conn.execute(insert(SCHEMA).values(id=1, version=SCHEMA_VERSION))
        return
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(found, SCHEMA_VERSION)
    if found < SCHEMA_VERSION:
        for version, upgrade in MIGRATIONS:
            if found < version <= SCHEMA_VERSION:
                upgrade(conn)
        conn.execute(update(SCHEMA).where(SCHEMA.c.id == 1).values(version=SCHEMA_VERSION))
    # Tables added by a newer version without a migration of their own.
    METADATA.create_all(conn)


def checkpoint_values(record: CheckpointRecord, seq: int) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "seq": seq,
        "parent_seq": record.parent_seq,
        "created_at": record.created_at,
        "trigger": record.trigger,
        "label": record.label,
        "node": record.node,
        "schema_version": record.schema_version,
        "serializer": record.serializer,
        "checksum": record.checksum,
        "size": record.size,
        "nodes_written": record.nodes_written,
        "metadata": record.metadata,
        "state": record.state,
    }


def node_values(run_id: str, seq: int, row: NodeRow) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "node_id": row.node_id,
        "seq": seq,
        "status": row.status,
        "attempt": row.attempt,
        "error": row.error,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "deps": json.dumps(list(row.deps)),
        "serializer": row.serializer,
        "output": row.output,
        "checksum": row.checksum,
    }


def record_from_row(row: Row[Any], state: bytes | None) -> CheckpointRecord:
    return CheckpointRecord(
        run_id=row.run_id,
        seq=row.seq,
        parent_seq=row.parent_seq,
        created_at=row.created_at,
        trigger=row.trigger,
        label=row.label,
        node=row.node,
        schema_version=row.schema_version,
        serializer=row.serializer,
        metadata=bytes(row.metadata),
        state=None if state is None else bytes(state),
        checksum=row.checksum,
        size=row.size,
        nodes_written=row.nodes_written,
    )


def _deps(node_id: str, text: str) -> tuple[str, ...]:
    """Decode a deps column; ValueError (caught by the loader) when it is damaged."""
    try:
        deps = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"node {node_id!r} has unreadable deps: {exc}") from exc
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValueError(f"node {node_id!r} has deps that are not a list of node ids")
    return tuple(deps)


def node_from_row(row: Row[Any]) -> NodeRow:
    """A node row; ValueError when its deps column is damaged."""
    return NodeRow(
        node_id=row.node_id,
        status=row.status,
        attempt=row.attempt,
        error=row.error,
        started_at=row.started_at,
        finished_at=row.finished_at,
        deps=_deps(row.node_id, row.deps),
        serializer=row.serializer,
        output=None if row.output is None else bytes(row.output),
        checksum=row.checksum,
        seq=row.seq,
    )

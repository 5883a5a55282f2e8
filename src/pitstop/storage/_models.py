"""SQL tables of the SQL store (SQLModel, on a private registry) and their DDL.

The tables live on a private registry so an application's ``SQLModel.metadata``
(its ``create_all`` or Alembic autogenerate) never sees them. This module is
imported only to create or migrate tables: opening an up-to-date database,
saving and restoring never import SQLAlchemy.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, Table, Text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.orm import registry
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Field, SQLModel


class _Base(SQLModel, registry=registry()):
    """Root of pitstop's tables: its own registry, hence its own MetaData."""


class RunRow(_Base, table=True):
    """One run: its status and the highest seq it ever used (seqs are never reused,
    unless a crash loses commits under ``durability="normal"``)."""

    __tablename__ = "pitstop_runs"

    run_id: str = Field(primary_key=True)
    status: str
    attempt: int
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = Field(default=None, sa_type=Text)
    graph_fingerprint: str | None = None
    last_seq: int
    updated_at: float


class CheckpointRow(_Base, table=True):
    """One checkpoint: its header, lineage, manifest and the user state blob."""

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
    root_seq: int = 0
    node_count: int = 0
    manifest: str = ""
    payload_hash: str = ""
    retired: int = 0
    """1: deleted or pruned; kept only while a live checkpoint's chain reads its rows."""
    snapshot: bytes | None = Field(default=None, sa_column=Column("snapshot", LargeBinary))
    """A snapshot's node rows (msgpack) when the blob is small (``SNAPSHOT_IN_ROW``,
    schema 4); a bigger one is in ``pitstop_snapshots``."""


class SnapshotRow(_Base, table=True):
    """A snapshot checkpoint's node rows, in one blob (msgpack), when the blob is
    too big for the checkpoint's own row (``_queries.SNAPSHOT_IN_ROW``).

    A table of its own: retiring a checkpoint updates its row, and SQLite
    rewrites a whole row (overflow pages included) on any update.
    """

    __tablename__ = "pitstop_snapshots"

    run_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    nodes: bytes = Field(sa_column=Column("nodes", LargeBinary, nullable=False))


class NodeStateRow(_Base, table=True):
    """One node's state, written by the delta checkpoint ``seq`` where it changed."""

    __tablename__ = "pitstop_node_states"

    # Primary key (run_id, seq, node_id): restores read and collection deletes
    # ranges of seqs, so one B-tree serves both (no second index to write per row).
    run_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    node_id: str = Field(primary_key=True)
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
    fingerprint: str | None = None
    """What a completed node's output was computed from (schema 3)."""


class BlobRow(_Base, table=True):
    """A large payload, stored once per content digest (node rows refer to it)."""

    __tablename__ = "pitstop_blobs"

    digest: str = Field(primary_key=True)
    """sha256 (hex) of the encoded payload; an HMAC under the key when encrypted."""
    recipe: str
    """How ``data`` was stored from the encoded payload: '', 'zstd', 'zstd+aes.<key id>', ..."""
    data: bytes = Field(sa_column=Column("data", LargeBinary, nullable=False))
    size: int = Field(sa_type=BigInteger)
    """Bytes of ``data``."""


class BlobRefRow(_Base, table=True):
    """Checkpoint ``seq`` of run ``run_id`` reads blob ``digest``.

    Collected with the checkpoint's rows; a blob goes when its last reference
    goes. The foreign key makes the database refuse a reference to a blob that
    a concurrent collection removed (PostgreSQL), instead of leaving it dangling.
    """

    __tablename__ = "pitstop_blob_refs"

    run_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    digest: str = Field(
        primary_key=True, foreign_key="pitstop_blobs.digest", ondelete="CASCADE", index=True
    )


class SchemaRow(_Base, table=True):
    """The single row holding the database schema version."""

    __tablename__ = "pitstop_schema"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int


METADATA: MetaData = _Base.metadata
TABLES: dict[str, Table] = dict(METADATA.tables)


def ddl(dialect: Literal["sqlite", "postgresql"], *names: str) -> list[str]:
    """CREATE TABLE / CREATE INDEX statements for the named tables (all when none)."""
    d = SQLiteDialect_pysqlite() if dialect == "sqlite" else PGDialect_psycopg()  # type: ignore[no-untyped-call]
    out = []
    for table in METADATA.sorted_tables:
        if names and table.name not in names:
            continue
        out.append(str(CreateTable(table).compile(dialect=d)).strip())
        out.extend(str(CreateIndex(ix).compile(dialect=d)).strip() for ix in table.indexes)
    return out

"""The database schema version, creating tables, and migrations.

Opening an up-to-date database only reads its version. Creating tables or
migrating old ones happens once, in a write transaction, on a read-write open;
a read-only open of an old database raises instead of writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from .._errors import SchemaVersionError, StoreError
from ._queries import placeholders as _param

SCHEMA_VERSION = 4
"""Version of the tables; bump it and append to ``MIGRATIONS`` on every change."""

Cursor = Any  # a DB-API cursor of sqlite3 or psycopg
Dialect = Literal["sqlite", "postgresql"]
Migration = Callable[[Cursor, Dialect], None]


def read_version(cur: Cursor, dialect: Dialect) -> int | None:
    """The schema version, or None when the database has no pitstop tables."""
    if dialect == "sqlite":
        cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'pitstop_schema'"
        )
    else:
        # Not to_regclass(): it answers from this backend's catalog cache, which can
        # still say "missing" after a concurrent first open created the tables.
        cur.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relname = 'pitstop_schema' "
            "AND n.nspname = current_schema()"
        )
    found = cur.fetchone()
    if not found or found[0] is None:
        return None
    cur.execute("SELECT version FROM pitstop_schema WHERE id = 1")
    row = cur.fetchone()
    return None if row is None else int(row[0])


def needs_write(version: int | None) -> bool:
    """Whether opening must create or migrate tables. Raises SchemaVersionError if too new."""
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(version, SCHEMA_VERSION)
    return version != SCHEMA_VERSION


def refuse_readonly(version: int | None, where: str) -> StoreError:
    if version is None:
        return StoreError(f"{where} holds no pitstop tables (opened read-only: nothing created)")
    return StoreError(
        f"{where} has pitstop schema {version}, older than {SCHEMA_VERSION}; open it once "
        "read-write (e.g. with a manager) to migrate it"
    )


def create_or_migrate(cur: Cursor, dialect: Dialect) -> None:
    """Inside the caller's write transaction: create missing tables or migrate old ones."""
    from . import _models

    version = read_version(cur, dialect)
    if not needs_write(version):
        return  # another process did it first
    if version is None:
        for stmt in _models.ddl(dialect):
            cur.execute(stmt)
        cur.execute(_param(dialect, "INSERT INTO pitstop_schema (id, version) VALUES (1, ?)"),
                    (SCHEMA_VERSION,))  # fmt: skip
        return
    for target, upgrade in MIGRATIONS:
        if version < target <= SCHEMA_VERSION:
            upgrade(cur, dialect)
    cur.execute(_param(dialect, "UPDATE pitstop_schema SET version = ? WHERE id = 1"),
                (SCHEMA_VERSION,))  # fmt: skip


def _v1_to_v2(cur: Cursor, dialect: Dialect) -> None:
    from . import _models
    from ._migrate_v1 import convert_run

    zero, empty = "INTEGER NOT NULL DEFAULT 0", "VARCHAR NOT NULL DEFAULT ''"
    columns = (("root_seq", zero), ("node_count", zero), ("manifest", empty), ("retired", zero),
               ("payload_hash", empty))  # fmt: skip
    for col, sql_type in columns:
        cur.execute(f"ALTER TABLE pitstop_checkpoints ADD COLUMN {col} {sql_type}")
    for stmt in _models.ddl(dialect, "pitstop_runs", "pitstop_snapshots"):
        cur.execute(stmt)
    cur.execute("SELECT DISTINCT run_id FROM pitstop_checkpoints")
    for (run_id,) in cur.fetchall():
        convert_run(cur, dialect, run_id, time.time())
    # Schema 2 keys node rows by (run_id, seq, node_id) and has no second index.
    cols = ("run_id, seq, node_id, status, attempt, error, started_at, finished_at, deps, "
            "serializer, output, checksum")  # fmt: skip
    cur.execute("ALTER TABLE pitstop_node_states RENAME TO pitstop_node_states_v1")
    if dialect == "postgresql":  # index names are per schema there, not per table
        cur.execute("DROP INDEX IF EXISTS ix_pitstop_node_states_run_seq")
    for stmt in _models.ddl(dialect, "pitstop_node_states"):
        cur.execute(stmt)
    cur.execute(f"INSERT INTO pitstop_node_states ({cols}) SELECT {cols} "
                "FROM pitstop_node_states_v1")  # fmt: skip
    cur.execute("DROP TABLE pitstop_node_states_v1")


def _v2_to_v3(cur: Cursor, dialect: Dialect) -> None:
    """Schema 3 adds the content-addressed blob table and its references, and node
    fingerprints."""
    from . import _models

    if not _has_column(cur, dialect, "pitstop_node_states", "fingerprint"):  # v1 made it new
        cur.execute("ALTER TABLE pitstop_node_states ADD COLUMN fingerprint VARCHAR")
    for stmt in _models.ddl(dialect, "pitstop_blobs", "pitstop_blob_refs"):
        cur.execute(stmt)


def _v3_to_v4(cur: Cursor, dialect: Dialect) -> None:
    """Schema 4 stores a small snapshot blob in its checkpoint's row; the blobs
    already in ``pitstop_snapshots`` stay there (a restore reads either)."""
    if not _has_column(cur, dialect, "pitstop_checkpoints", "snapshot"):
        blob = "BYTEA" if dialect == "postgresql" else "BLOB"
        cur.execute(f"ALTER TABLE pitstop_checkpoints ADD COLUMN snapshot {blob}")


def _has_column(cur: Cursor, dialect: Dialect, table: str, column: str) -> bool:
    if dialect == "sqlite":
        cur.execute(f"PRAGMA table_info({table})")
        return any(row[1] == column for row in cur.fetchall())
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name = %s",
        (table, column),
    )
    return cur.fetchone() is not None


MIGRATIONS: list[tuple[int, Migration]] = [(2, _v1_to_v2), (3, _v2_to_v3), (4, _v3_to_v4)]
"""``(version, upgrade)`` pairs in order; ``upgrade`` brings the tables from version-1."""

"""Checkpoint stores: SQLite and PostgreSQL (``SqlStore``) and ``MemoryStore``."""

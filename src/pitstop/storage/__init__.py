"""Checkpoint stores: the Store protocol, memory, and SQL (SQLite / PostgreSQL)."""

"""In-memory store for tests and short-lived runs (kept for the import path)."""

from .sql import MemoryStore

__all__ = ["MemoryStore"]

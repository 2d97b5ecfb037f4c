"""Durable Raft state: the LogStore interface (base), an in-memory store for tests, the SQLite
store used by servers, and StoreWorker, which runs a store off the event loop with group commit."""

from raft.storage.base import (
    CompactionError,
    GroupWrite,
    LoadedState,
    LogStore,
    StorageError,
)
from raft.storage.memory import MemoryLogStore
from raft.storage.sqlite import SqliteLogStore

__all__ = [
    "CompactionError",
    "GroupWrite",
    "LoadedState",
    "LogStore",
    "MemoryLogStore",
    "SqliteLogStore",
    "StorageError",
]

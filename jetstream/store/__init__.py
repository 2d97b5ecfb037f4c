"""Message stores for one stream replica: the `MessageStore` interface, a memory store and a
SQLite store (one database per stream). See base.py for the contract."""

from jetstream.store.base import MessageStore, SnapshotError, StoredMsg, StoreState, msg_size
from jetstream.store.memory import MemoryStore
from jetstream.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "MessageStore", "SnapshotError", "SqliteStore", "StoreState", "StoredMsg", "msg_size"]

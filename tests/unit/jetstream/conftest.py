"""Fixtures for the jetstream unit tests: a fresh store of each kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jetstream.store import MemoryStore, MessageStore, SqliteStore


def make_store(kind: str, tmp_path: Path) -> MessageStore:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(tmp_path / "stream.db")


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MessageStore]:
    s = make_store(request.param, tmp_path)
    yield s
    s.close()

"""The interest stream leader's sweep (jetstream/cluster_interest.py): of the messages stored
since its last look it proposes the removal of those no running consumer needs and no saved
durable state wants; it does not sweep while an assigned durable is not running here or a
consumer is being created."""

from __future__ import annotations

import json
import types
from typing import Any

from jetstream.cluster_interest import _ready, _sweep
from jetstream.stream import RemoveAcked


class FakeStore:
    def __init__(self, subjects: dict[int, str], saved: dict[str, dict[str, Any]]) -> None:
        self.subjects, self.saved = subjects, saved

    def load(self, seq: int) -> Any:
        subject = self.subjects.get(seq)
        return None if subject is None else types.SimpleNamespace(subject=subject)

    def consumer_names(self) -> list[str]:
        return sorted(self.saved)

    def load_consumer(self, name: str) -> bytes:
        return json.dumps({"config": self.saved[name], "created_ns": 1, "state": {}}).encode()


class FakeStream:
    def __init__(self, store: FakeStore, consumers: dict[str, Any]) -> None:
        self.name, self.leading, self.closed = "S", True, False
        self.store, self.consumers = store, consumers
        self.applied: list[Any] = []

    async def read(self, fn: Any) -> Any:
        return fn(self.store)

    async def apply(self, cmd: Any) -> None:
        self.applied.append(cmd)


def consumer(needed: set[int]) -> Any:
    return types.SimpleNamespace(needs=lambda seq, subject: seq in needed)


def js(assigned: dict[str, Any] | None = None, pending: set | None = None) -> Any:
    registry = None if assigned is None else types.SimpleNamespace(assigned=lambda stream: assigned)
    return types.SimpleNamespace(assigned_consumers=types.SimpleNamespace(registry=registry, pending=pending or set()))


async def test_removes_what_nobody_needs_and_keeps_what_a_saved_durable_wants() -> None:
    store = FakeStore({1: "a", 2: "b", 3: "c", 5: "b", 6: "a"},  # 4: already gone
                      {"RUN": {"durable_name": "RUN"}, "SAVED": {"durable_name": "SAVED", "filter_subject": "b"}})
    rt = FakeStream(store, {"RUN": consumer({1})})
    assert await _sweep(js(), rt, 0, 6) == 6
    assert rt.applied == [RemoveAcked((3, 6))]  # 1: RUN needs it; 2, 5: SAVED (not running) wants b


async def test_nothing_to_remove_proposes_nothing() -> None:
    rt = FakeStream(FakeStore({1: "a"}, {}), {"RUN": consumer({1})})
    assert await _sweep(js(), rt, 0, 1) == 1 and rt.applied == []


def test_not_ready_while_an_assigned_durable_is_missing_or_pending() -> None:
    rt = FakeStream(FakeStore({}, {}), {"A": consumer(set())})
    assert _ready(js({"A": ({}, 1)}), rt)
    assert not _ready(js({"A": ({}, 1), "B": ({}, 2)}), rt)
    assert not _ready(js(None, {("S", "X")}), rt)
    assert _ready(js(None, {("OTHER", "X")}), rt)

"""A led stream runs exactly the durables the meta state assigns (jetstream/cluster_consumers.py):
assigned ones missing start from their replicated state when it belongs to the same assignment
(same creation time), else fresh; durables no longer assigned are dropped; ephemerals and names
being created or deleted by a request are left alone; a create or delete the meta group refuses
changes nothing locally."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
import trio
import trio.testing

from jetstream.cluster_consumers import IN_FLIGHT, AssignedConsumers, Committed
from jetstream.consumer_config import ConsumerConfig
from jetstream.errors import ApiError, JsApiException

DURABLE = {"durable_name": "D", "ack_policy": "explicit"}


class FakeRegistry:
    """Commits at once; this server's meta state applies up to `applied` (tests move it)."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, tuple[dict[str, Any], int]]] = {}
        self.refuse: ApiError | None = None
        self.calls: list[tuple] = []
        self.index = self.applied = 0
        self.local: dict[str, dict[str, tuple[dict[str, Any], int]]] | None = None  # a lagging view

    def assigned(self, stream: str) -> dict[str, tuple[dict[str, Any], int]]:
        view = self.table if self.local is None else self.local
        return dict(view.get(stream, {}))

    def applied_index(self) -> int:
        return self.applied if self.local is not None else self.index

    async def assign(self, stream: str, name: str, config: dict[str, Any], created_ns: int) -> Committed | ApiError:
        self.calls.append(("assign", stream, name))
        if self.refuse is not None:
            return self.refuse
        old = self.table.setdefault(stream, {}).get(name)
        self.table[stream][name] = (config, created_ns if old is None else old[1])
        self.index += 1
        return Committed(self.index, self.table[stream][name][1])

    async def unassign(self, stream: str, name: str) -> Committed | ApiError:
        self.calls.append(("unassign", stream, name))
        if self.refuse is not None:
            return self.refuse
        self.table.get(stream, {}).pop(name, None)
        self.index += 1
        return Committed(self.index)


class FakeConsumer:
    def __init__(self, name: str, config: ConsumerConfig, created_ns: int) -> None:
        self.name, self.config, self.created_ns = name, config, created_ns
        self.state = types.SimpleNamespace(restored=None, restore=self._restore)
        self.fresh = False
        self.paused_until_ns = 0

    def _restore(self, state: Any, now: int) -> None:
        self.state.restored = state

    @property
    def durable(self) -> bool:
        return bool(self.config.durable_name)

    def start_position(self, store: Any) -> None:
        self.fresh = True


class FakeStream:
    def __init__(self, saved: dict[str, bytes]) -> None:
        self.name, self.leading, self.closed = "S", True, False
        self.consumers: dict[str, Any] = {}
        self.store = types.SimpleNamespace()
        self.saved = saved

    async def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class FakeJs:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.saved: list[str] = []
        self.dropped: list[str] = []

    def clock_ns(self) -> int:
        return 777

    def _new_consumer(self, rt: Any, name: str, config: ConsumerConfig, created_ns: int) -> FakeConsumer:
        return FakeConsumer(name, config, created_ns)

    async def _save_consumer_now(self, rt: Any, consumer: Any) -> bool:
        self.saved.append(consumer.name)
        return True

    def _start_consumer(self, consumer: Any) -> None:
        self.started.append(consumer.name)

    async def _drop_consumer(self, rt: Any, consumer: Any) -> None:
        self.dropped.append(consumer.name)
        rt.consumers.pop(consumer.name, None)

    async def _read_consumers(self, rt: Any) -> list[tuple[str, bytes | None]]:
        return list(rt.saved.items())


def blob(created_ns: int, state: str = "st") -> bytes:
    return json.dumps({"config": DURABLE, "created_ns": created_ns, "state": state}).encode()


def setup(saved: dict[str, bytes] | None = None) -> tuple[AssignedConsumers, FakeRegistry, FakeJs, FakeStream]:
    js, registry = FakeJs(), FakeRegistry()
    ac = AssignedConsumers(js)
    ac.registry = registry
    return ac, registry, js, FakeStream(saved or {})


async def test_reconcile_starts_assigned_drops_unassigned_keeps_ephemerals() -> None:
    ac, registry, js, rt = setup({"A": blob(10, "a-state"), "B": blob(99, "old"), "X": blob(5)})
    registry.table["S"] = {"A": (dict(DURABLE, durable_name="A"), 10), "B": (dict(DURABLE, durable_name="B"), 20),
                           "C": (dict(DURABLE, durable_name="C"), 30)}
    gone = FakeConsumer("G", ConsumerConfig.from_json(dict(DURABLE, durable_name="G")), 1)
    eph = FakeConsumer("E", ConsumerConfig.from_json({"name": "E", "ack_policy": "explicit"}), 1)
    rt.consumers.update(G=gone, E=eph)
    await ac.reconcile(rt)
    assert sorted(rt.consumers) == ["A", "B", "C", "E"]
    assert js.dropped == ["G"]  # deleted through the meta group; X (never assigned) is not started
    assert rt.consumers["A"].state.restored == "a-state" and not rt.consumers["A"].fresh
    assert rt.consumers["B"].fresh and rt.consumers["C"].fresh  # a stale state (other creation) is not reused
    assert sorted(js.saved) == ["B", "C"] and sorted(js.started) == ["A", "B", "C"]
    await ac.reconcile(rt)  # converged: nothing more happens
    assert js.dropped == ["G"] and sorted(js.started) == ["A", "B", "C"]


async def test_reconcile_leaves_pending_names_and_followers_alone() -> None:
    ac, registry, js, rt = setup()
    registry.table["S"] = {"P": (dict(DURABLE, durable_name="P"), 1)}
    ac.pending[("S", "P")] = IN_FLIGHT
    await ac.reconcile(rt)
    assert rt.consumers == {}
    ac.pending.clear()
    rt.leading = False
    await ac.reconcile(rt)
    assert rt.consumers == {}


def test_saved_states_to_start_take_the_assigned_config() -> None:
    ac, registry, js, rt = setup()
    changed = dict(DURABLE, description="new")
    registry.table["S"] = {"D": (changed, 10)}
    out = ac.saved_to_start(rt, [("D", blob(10)), ("OLD", blob(10)), ("D2", None)])
    assert [n for n, _ in out] == ["D"] and json.loads(out[0][1])["config"] == changed
    assert ac.saved_to_start(rt, [("D", blob(11))]) == []
    ac.registry = None
    assert ac.saved_to_start(rt, [("D", blob(11))]) == [("D", blob(11))]


async def test_create_and_delete_go_through_the_registry_first() -> None:
    ac, registry, js, rt = setup()
    config = ConsumerConfig.from_json(DURABLE)
    consumer = await ac.create(rt, "D", config)
    assert rt.consumers["D"] is consumer and consumer.created_ns == 777 and consumer.fresh
    assert registry.calls == [("assign", "S", "D")] and not ac.pending
    registry.refuse = ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable")
    with pytest.raises(JsApiException):
        await ac.delete(rt, consumer)
    assert "D" in rt.consumers and js.dropped == []  # refused: nothing changed here
    with pytest.raises(JsApiException):
        await ac.create(rt, "E", ConsumerConfig.from_json(dict(DURABLE, durable_name="E")))
    assert "E" not in rt.consumers and not ac.pending
    registry.refuse = None
    await ac.delete(rt, consumer)
    assert "D" not in rt.consumers and registry.assigned("S") == {}


async def test_a_change_stays_pending_until_this_servers_meta_state_applied_it() -> None:
    ac, registry, js, rt = setup()
    registry.local = {}  # this server's meta state lags: it has applied nothing yet
    consumer = await ac.create(rt, "D", ConsumerConfig.from_json(DURABLE))
    assert ac.pending == {("S", "D"): 1}
    await ac.reconcile(rt)  # not assigned in the lagging view, but pending: kept
    assert rt.consumers == {"D": consumer} and js.dropped == []
    registry.local, registry.applied = {"S": dict(registry.table["S"])}, 1
    await ac.reconcile(rt)
    assert ac.pending == {} and rt.consumers == {"D": consumer}
    await ac.delete(rt, consumer)  # the lagging view still assigns it: pending keeps it stopped
    assert ac.pending == {("S", "D"): 2}
    await ac.reconcile(rt)
    assert rt.consumers == {} and js.started == ["D"]
    registry.local, registry.applied = {}, 2
    await ac.reconcile(rt)
    assert ac.pending == {} and rt.consumers == {}


async def test_a_reconcile_during_a_create_does_not_start_a_second_copy() -> None:
    ac, registry, js, rt = setup()
    gate = trio.Event()
    real_assign = registry.assign

    async def slow_assign(*args: Any) -> Committed | ApiError:
        result = await real_assign(*args)  # committed (and applied here) ...
        await gate.wait()  # ... but the request has not come back yet
        return result
    registry.assign = slow_assign  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ac.create, rt, "D", ConsumerConfig.from_json(DURABLE))
        await trio.testing.wait_all_tasks_blocked()
        await ac.reconcile(rt)  # sees D assigned, but a request is creating it
        assert rt.consumers == {}
        gate.set()
    assert js.started == ["D"]

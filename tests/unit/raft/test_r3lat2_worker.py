"""A save that ran inline on the event loop returns without another scheduler pass: what arrived
during the fsync (a follower's ack) stays unread until the host's round polls for it itself (see
test_r3lat2_poll). Waiters of someone else's flush still wait for it."""

from __future__ import annotations

import trio

from raft.storage import MemoryLogStore
from raft.storage.base import GroupWrite
from raft.types import Entry, HardState


def write(index: int) -> list[GroupWrite]:
    return [GroupWrite("g", HardState(1), (Entry(1, index, data=b"x"),))]


class StepCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_an_inline_save_yields_once_before_the_fsync_and_not_after() -> None:
    from raft.storage.worker import StoreWorker

    worker = StoreWorker(MemoryLogStore(), inline_below_s=60.0)
    await worker.save(write(1))  # speed unknown: the thread; then known to be fast
    counter = StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        counter.steps = 0
        await worker.save(write(2))
        steps = counter.steps
        inline = worker.inline_saves
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert inline == 1
    assert steps == 1  # the one checkpoint before the save (the early sends go first)


async def test_a_waiter_of_another_callers_flush_waits_for_it() -> None:
    from raft.storage.worker import StoreWorker

    store = MemoryLogStore()
    saved: list[int] = []
    save = store.save

    def recording_save(batch: list[GroupWrite], sync: bool) -> None:
        save(batch, sync)
        saved.extend(e.index for w in batch for e in w.entries)

    store.save = recording_save  # type: ignore[method-assign]
    worker = StoreWorker(store, inline_below_s=0.0)  # the thread: the others wait for its flush
    returned: list[tuple[int, list[int]]] = []

    async def caller(i: int) -> None:
        await worker.save(write(i))
        returned.append((i, list(saved)))

    async with trio.open_nursery() as nursery:
        for i in range(1, 4):
            nursery.start_soon(caller, i)
    assert sorted(i for i, _ in returned) == [1, 2, 3]
    assert all(i in seen for i, seen in returned)  # nobody returned before its write was saved


async def test_a_save_told_nothing_must_run_first_does_not_yield_before_the_fsync() -> None:
    from raft.storage.worker import StoreWorker

    worker = StoreWorker(MemoryLogStore(), inline_below_s=60.0)
    await worker.save(write(1))  # speed unknown: the thread; then known to be fast
    counter = StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        counter.steps = 0
        await worker.save(write(2), yield_first=False)
        steps = counter.steps
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert worker.inline_saves == 1
    assert steps == 0  # no checkpoint, no idle test: straight to the store
    slow = StoreWorker(MemoryLogStore(), inline_below_s=0.0)  # a slow store stays in the thread
    await slow.save(write(1))
    await slow.save(write(2), yield_first=False)
    assert slow.inline_saves == 0


async def test_tcp_writers_idle_only_when_everything_was_written() -> None:
    from raft.transport.memory import MemoryNetwork
    from raft.transport.tcp import TcpTransport
    from tests.unit.raft.test_transport_conformance import msg, tcp_cluster

    assert not MemoryNetwork().endpoint("x").writers_idle()  # unknown: False
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(a, TcpTransport)
        got: list[object] = []
        b.set_receiver(got.extend)
        a.send_nowait([msg("a", "b", n=0)])  # no connection yet: queued for the writer
        assert not a.writers_idle()
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.001)
            while not a.writers_idle():  # the writer task drains the queue
                await trio.sleep(0.001)
        a.send_nowait([msg("a", "b", n=1)])  # an idle connection: written at once
        assert a.writers_idle()

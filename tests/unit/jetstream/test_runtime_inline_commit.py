"""A one-at-a-time publish commits on the event loop without a checkpoint when the stream lock
is free (no extra scheduler pass), waits when the lock is held (a worker-thread call is using
the store), and the store's counters, flushed with one UPDATE, survive a reopen."""

from __future__ import annotations

import itertools

import pytest
import trio

from jetstream.config import StreamConfig
from jetstream.runtime import StreamClosed, StreamRuntime
from jetstream.store.sqlite import _META_KEYS, SqliteStore
from jetstream.stream import PubAck, Publish


def _runtime(tmp_path) -> StreamRuntime:  # type: ignore[no-untyped-def]
    config = StreamConfig(name="S", subjects=("s",))
    return StreamRuntime(config, 0, SqliteStore(tmp_path / "m.db"), tmp_path, lambda: 1_000,
                         lambda *a: None)


class _Yields(trio.abc.Instrument):
    """Counts how often a task gives up the CPU (ends a step)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def test_free_lock_commits_without_a_checkpoint(tmp_path) -> None:
    rt = _runtime(tmp_path)
    other = SqliteStore(tmp_path / "m.db")
    yields = _Yields(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(yields)
    try:
        results = await rt.apply_batch([Publish("s", b"x", 5, None, "r")])
    finally:
        trio.lowlevel.remove_instrument(yields)
    assert yields.count == 0  # no scheduler pass inside the commit
    assert results == [PubAck("S", 1)]
    assert other.load(1) is not None  # committed (another connection sees it)
    other.close()
    await rt.close()


async def test_held_lock_makes_the_commit_wait(tmp_path) -> None:
    rt = _runtime(tmp_path)
    held = trio.Event()
    release = trio.Event()
    done: list[object] = []

    async def holder() -> None:
        async with rt.lock:
            held.set()
            await release.wait()

    async def publisher() -> None:
        done.append(await rt.apply_batch([Publish("s", b"x", 5, None, "r")]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await held.wait()
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and rt.store.state().messages == 0
        release.set()
    assert done == [[PubAck("S", 1)]]
    await rt.close()


async def test_closed_stream_refuses_the_inline_commit(tmp_path) -> None:
    rt = _runtime(tmp_path)
    await rt.close()
    with pytest.raises(StreamClosed):
        await rt.apply_batch([Publish("s", b"x", 5, None, "r")])


@pytest.mark.parametrize("size", [1, 2, 5, len(_META_KEYS) - 1])
def test_meta_counters_flushed_in_one_update_survive_reopen(tmp_path, size: int) -> None:
    """An eager commit writes every counter in one UPDATE (counted_seq = last_seq)."""
    keys_all = [k for k in _META_KEYS if k != "counted_seq"]
    for n, keys in enumerate(itertools.combinations(keys_all, size)):
        path = tmp_path / f"m{n}.db"
        store = SqliteStore(path)
        with store.batch():
            store._mark_eager()
            store._put_meta(**{k: 1000 + i for i, k in enumerate(keys)})
        store.close()
        reopened = SqliteStore(path)
        expected = {k: (1000 + keys.index(k) if k in keys else 0) for k in keys_all}
        expected["counted_seq"] = expected["last_seq"]
        assert reopened._meta == expected
        reopened.close()

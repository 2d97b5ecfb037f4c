"""One suite for every LogStore: the write rules of raft.storage.base, reopen, markers, group
commit through StoreWorker, and a differential property test of SQLite against memory."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
from trio.testing import wait_all_tasks_blocked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft.storage import (
    CompactionError,
    GroupWrite,
    LoadedState,
    LogStore,
    MemoryLogStore,
    SqliteLogStore,
)
from raft.storage.worker import StoreWorker
from raft.types import Entry, EntryKind, HardState, Membership, Snapshot, SnapshotMeta


@attrs.define
class Backend:
    """Opens a store, reopens it as after a restart, and wipes a group's state."""

    open: Callable[[], LogStore]
    reopen: Callable[[LogStore], LogStore]
    wipe_group_state: Callable[[LogStore, str], LogStore]


def _memory_backend(tmp_path: pathlib.Path) -> Backend:
    def wipe(store: LogStore, group: str) -> LogStore:
        assert isinstance(store, MemoryLogStore)
        return store.wiped_copy()

    return Backend(MemoryLogStore, lambda s: s, wipe)


def _sqlite_backend(tmp_path: pathlib.Path) -> Backend:
    path = tmp_path / "raft.db"

    def reopen(store: LogStore) -> LogStore:
        store.close()
        return SqliteLogStore(path)

    def wipe(store: LogStore, group: str) -> LogStore:
        store.close()
        with sqlite3.connect(path) as db:
            for table in ("log_entry", "hard_state", "snapshot"):
                db.execute(f"DELETE FROM {table} WHERE grp=?", (group,))  # noqa: S608
        return SqliteLogStore(path)

    return Backend(lambda: SqliteLogStore(path), reopen, wipe)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Backend]:
    yield {"memory": _memory_backend, "sqlite": _sqlite_backend}[request.param](tmp_path)


def ents(first: int, last: int, term: int, tag: bytes = b"") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, EntryKind.NORMAL, tag + b"%d" % i) for i in range(first, last + 1))


def test_empty_store_loads_empty_state(backend: Backend) -> None:
    store = backend.open()
    loaded = store.load("g")
    assert loaded == LoadedState()
    assert not loaded.repair_needed
    assert store.groups() == []


def test_batch_across_groups_round_trips_after_reopen(backend: Backend) -> None:
    store = backend.open()
    store.save(
        [
            GroupWrite("a", HardState(2, "n1", 3), ents(1, 3, 2)),
            GroupWrite("b", HardState(1, None, 0), ents(1, 1, 1, b"b")),
        ]
    )
    store = backend.reopen(store)
    a, b = store.load("a"), store.load("b")
    assert a.hard_state == HardState(2, "n1", 3)
    assert a.entries == ents(1, 3, 2)
    assert b.entries == ents(1, 1, 1, b"b")
    assert b.hard_state == HardState(1, None, 0)
    assert store.groups() == ["a", "b"]
    assert not a.repair_needed and not b.repair_needed


def test_append_overwrites_suffix(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(1), ents(1, 5, 1))])
    store.save([GroupWrite("g", HardState(2), ents(3, 4, 2, b"new"))])
    assert store.load("g").entries == ents(1, 2, 1) + ents(3, 4, 2, b"new")


def test_hard_state_none_leaves_it_unchanged(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(3, "x", 0))])
    store.save([GroupWrite("g", None, ents(1, 1, 3))])
    assert store.load("g").hard_state == HardState(3, "x", 0)


def test_batch_is_atomic_when_one_write_is_malformed(backend: Backend) -> None:
    store = backend.open()
    bad = (Entry(1, 1), Entry(1, 3))
    with pytest.raises(ValueError, match="contiguous"):
        store.save([GroupWrite("ok", HardState(1), ents(1, 2, 1)), GroupWrite("bad", None, bad)])
    assert store.load("ok") == LoadedState()


def test_snapshot_matching_log_keeps_suffix(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(2), ents(1, 6, 2))])
    meta = SnapshotMeta(4, 2, Membership(frozenset({"a", "b"})))
    store.save([GroupWrite("g", snapshot_meta=meta, snapshot_data=b"state@4")])
    store = backend.reopen(store)
    loaded = store.load("g")
    assert loaded.snapshot == Snapshot(meta, b"state@4")
    assert loaded.entries == ents(5, 6, 2)
    assert loaded.last_index == 6


def test_snapshot_not_matching_log_drops_it(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(1), ents(1, 6, 1))])
    meta = SnapshotMeta(10, 3, Membership(frozenset({"a"}), frozenset({"l"}), frozenset({"z"})))
    store.save(
        [GroupWrite("g", HardState(3, "a", 10), ents(11, 12, 3), meta, snapshot_data=b"s")]
    )
    loaded = backend.reopen(store).load("g")
    assert loaded.snapshot == Snapshot(meta, b"s")
    assert loaded.entries == ents(11, 12, 3)
    assert not loaded.repair_needed


def test_compact_needs_a_covering_snapshot(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(1), ents(1, 8, 1))])
    with pytest.raises(CompactionError):
        store.compact("g", 3)
    store.save_snapshot("g", Snapshot(SnapshotMeta(5, 1), b"five"))
    store.compact("g", 5)
    store = backend.reopen(store)
    assert store.load("g").entries == ents(6, 8, 1)
    assert store.load_snapshot("g") == Snapshot(SnapshotMeta(5, 1), b"five")
    assert store.load_snapshot("other") is None


def test_wiped_member_is_repair_needed(backend: Backend) -> None:
    store = backend.open()
    store.mark_member("g")
    store.save([GroupWrite("g", HardState(2, "a", 2), ents(1, 2, 2))])
    store.save([GroupWrite("h", HardState(1), ents(1, 1, 1))])
    assert not store.load("g").repair_needed
    store = backend.wipe_group_state(store, "g")
    loaded = store.load("g")
    assert loaded.is_empty and loaded.was_member
    assert loaded.repair_needed
    assert "g" in store.groups()


def test_never_member_empty_group_is_not_repair_needed(backend: Backend) -> None:
    store = backend.open()
    store.mark_member("other")
    assert not store.load("fresh").repair_needed


def test_forget_group_removes_everything(backend: Backend) -> None:
    store = backend.open()
    store.mark_member("g")
    store.save([GroupWrite("g", HardState(1), ents(1, 3, 1))])
    store.forget_group("g")
    assert store.load("g") == LoadedState()
    assert store.groups() == []


async def test_worker_group_commits_concurrent_saves(backend: Backend) -> None:
    store = backend.open()
    worker = StoreWorker(store)
    writers = 40

    async def write(i: int) -> None:
        await worker.save([GroupWrite(f"g{i}", HardState(1), ents(1, 2, 1))])

    async with trio.open_nursery() as nursery:
        for i in range(writers):
            nursery.start_soon(write, i)
    assert worker.flush_count < writers / 2
    loaded = await worker.run(store.load, "g39")
    assert loaded.entries == ents(1, 2, 1)


async def test_worker_reports_errors_to_every_waiter_of_the_batch(backend: Backend) -> None:
    worker = StoreWorker(backend.open())
    with pytest.raises(ValueError):
        await worker.save([GroupWrite("g", None, (Entry(1, 2), Entry(1, 4)))])
    await worker.save([GroupWrite("g", None, ents(1, 1, 1))])
    assert (await worker.run(worker.store.load, "g")).entries == ents(1, 1, 1)


# ---- differential property test: SQLite behaves exactly like the memory model ----------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 12), st.integers(0, 5), st.integers(1, 4)),
        st.tuples(st.just("hard"), st.integers(0, 5), st.sampled_from([None, "a", "b"])),
        st.tuples(st.just("snap"), st.integers(1, 12), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("compact"), st.integers(0, 12)),
    ),
    max_size=12,
)


def _run_ops(store: LogStore, ops: list[tuple]) -> None:  # type: ignore
    term = 1
    for op in ops:
        if op[0] == "append":
            _, first, count, bump = op
            term += bump % 2
            loaded = store.load("g")  # keep the log valid: no gap, nothing behind the snapshot
            covered = loaded.snapshot.meta.index if loaded.snapshot else 0
            first = max(min(first, loaded.last_index + 1), covered + 1)
            store.save([GroupWrite("g", None, ents(first, first + count - 1, term))])
        elif op[0] == "hard":
            store.save([GroupWrite("g", HardState(op[1], op[2], 0))])
        elif op[0] == "snap":
            _, idx, snap_term, with_data = op
            meta = SnapshotMeta(idx, snap_term)
            data = b"d" if with_data else None
            store.save([GroupWrite("g", snapshot_meta=meta, snapshot_data=data)])
        else:
            try:
                store.compact("g", op[1])
            except CompactionError:
                pass


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_sqlite_matches_memory_model(tmp_path: pathlib.Path, ops: list) -> None:  # type: ignore
    memory = MemoryLogStore()
    path = tmp_path / "diff.db"
    path.unlink(missing_ok=True)
    sqlite_store = SqliteLogStore(path)
    try:
        _run_ops(memory, ops)
        _run_ops(sqlite_store, ops)
        got, want = sqlite_store.load("g"), memory.load("g")
        assert (got.hard_state, got.snapshot, got.entries) == (
            want.hard_state,
            want.snapshot,
            want.entries,
        )
    finally:
        sqlite_store.close()
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(str(path) + suffix).unlink(missing_ok=True)


def test_repair_note_survives_reopen_until_cleared(backend: Backend) -> None:
    store = backend.open()
    store.save([GroupWrite("g", HardState(2, "a", 1), ents(1, 1, 2))])
    store.set_repair_pending("g", "entry 2 fails its checksum")
    store = backend.reopen(store)
    loaded = store.load("g")
    assert loaded.repair_pending == "entry 2 fails its checksum"
    assert loaded.repair_needed and not loaded.verify_errors
    assert not store.load("other").repair_needed
    store.set_repair_pending("g", None)
    store = backend.reopen(store)
    assert store.load("g").repair_pending is None
    assert not store.load("g").repair_needed


async def test_worker_saves_inline_only_when_fast_and_the_store_is_free(backend: Backend) -> None:
    """A save runs on the event loop once saves are known to be fast; the first (speed unknown),
    a slow store and another store call running in the thread keep it in the thread."""
    worker = StoreWorker(backend.open(), inline_below_s=60.0)
    await worker.save([GroupWrite("g", HardState(1), ents(1, 1, 1))])
    assert worker.inline_saves == 0  # speed unknown yet: the thread
    await worker.save([GroupWrite("g", HardState(1), ents(2, 2, 1))])
    assert worker.inline_saves == 1

    release = threading.Event()
    entered = threading.Event()

    def busy() -> None:
        entered.set()
        release.wait(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, busy)
        await trio.to_thread.run_sync(entered.wait, 10)

        async def save() -> None:
            await worker.save([GroupWrite("g", HardState(1), ents(3, 3, 1))])

        nursery.start_soon(save)
        await wait_all_tasks_blocked()
        assert worker.inline_saves == 1  # the store is busy in the thread: wait for it there
        release.set()
    worker.inline_below_s = 0.0
    await worker.save([GroupWrite("g", HardState(2), ents(4, 4, 2))])
    assert worker.inline_saves == 1  # too slow for the threshold: the thread
    loaded = await worker.run(worker.store.load, "g")
    assert loaded.entries == ents(1, 3, 1) + ents(4, 4, 2)
    assert loaded.hard_state == HardState(2)

"""RaftHost latency paths (issue 5, R3 one-at-a-time publish): a hard state that only moves the
commit index stays out of the entries' fsync batch and is flushed within
`commit_flush_interval_s`; `propose_nowait` appends without a checkpoint, in call order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from raft.driver import NotLeader
from raft.storage import LogStore, MemoryLogStore
from raft.storage.base import GroupWrite
from tests.unit.raft.test_driver import NODES, cluster_of, elected, wait_until


class RecordingStore(MemoryLogStore):
    """A memory store that remembers every batch it saved."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[GroupWrite]] = []

    def save(self, batch: Sequence[GroupWrite], sync: bool = True) -> None:
        self.batches.append(list(batch))
        super().save(batch, sync)


def recording_stores() -> dict[str, LogStore]:
    return {n: RecordingStore() for n in NODES}


def writes(store: LogStore, start: int) -> list[GroupWrite]:
    assert isinstance(store, RecordingStore)
    return [w for batch in store.batches[start:] for w in batch]


async def test_commit_only_hard_state_skips_the_entry_batches_and_is_flushed_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stores = recording_stores()
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        await host.propose("g", b"warm-up")
        await trio.sleep(2 * host.commit_flush_interval_s)  # settle: the election's states flushed
        marks = {n: len(s.batches) for n, s in stores.items()}  # type: ignore[attr-defined]
        started = trio.current_time()
        last = 0
        for i in range(20):  # one at a time: each commit moves every node's commit index
            last = await host.propose("g", b"p%d" % i)
        assert trio.current_time() - started < host.commit_flush_interval_s
        for node, store in stores.items():
            saved = writes(store, marks[node])
            with_entries = [w for w in saved if w.entries]
            assert len(with_entries) >= 20 if node == leader else len(with_entries) >= 19
            # at most one batch is the periodic flush (which also takes a Ready's own state)
            assert sum(w.hard_state is not None for w in saved) <= 1, (node, saved)
        # The newest commit index reaches every store within the flush interval (a heartbeat
        # or the next proposal carries it), never beyond what the store holds.
        await trio.sleep(3 * host.commit_flush_interval_s)
        await host.propose("g", b"after")
        await trio.sleep(2 * host.commit_flush_interval_s)
        for node, store in stores.items():
            loaded = store.load("g")
            assert last <= loaded.hard_state.commit <= loaded.entries[-1].index, node
            assert not loaded.verify_errors


async def test_a_new_term_is_written_with_its_entries(autojump_clock: trio.testing.MockClock) -> None:
    """Term and vote changes are never deferred: the leader's first entry of its term is saved
    with the hard state naming that term (the core needs it durable before it sends)."""
    stores = recording_stores()
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        await host.propose("g", b"x")
        term = host.node("g").term
        saved = writes(stores[leader], 0)
        first_of_term = next(i for i, w in enumerate(saved) if w.entries and w.entries[0].term == term)
        assert any(w.hard_state is not None and w.hard_state.term == term for w in saved[: first_of_term + 1])


async def test_propose_nowait_appends_in_call_order(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster_of({n: MemoryLogStore() for n in NODES}, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        await host.propose("g", b"warm-up")
        pending = [host.propose_nowait("g", b"n%d" % i) for i in range(5)]
        indexes = [p.index for p in pending]
        assert indexes == list(range(indexes[0], indexes[0] + 5))
        results = [await host.proposal_result(p) for p in pending]
        assert results == [(index, b"applied:n%d" % i) for i, index in enumerate(indexes)]
        for m in cluster.members.values():
            await wait_until(lambda m=m: m.applied.data("g")[1:] == [b"n%d" % i for i in range(5)])


async def test_propose_nowait_on_a_follower_raises_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster_of({n: MemoryLogStore() for n in NODES}, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        follower = next(n for n in NODES if n != leader)
        await wait_until(lambda: cluster.members[follower].host.node("g").leader_id == leader)
        with pytest.raises(NotLeader) as info:
            cluster.members[follower].host.propose_nowait("g", b"x")
        assert info.value.leader_hint == leader


async def test_settle_after_propose_nowait_saves_and_sends_in_the_callers_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stores = recording_stores()
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        await host.propose("g", b"warm-up")
        await trio.sleep(1)  # the ready loop is parked again
        rounds, sent = host.stats.direct_rounds, host.stats.messages_sent
        pending = host.propose_nowait("g", b"now", settle=True)
        assert not host._wake.is_set()  # settle=True: the ready loop is not woken
        await host.settle()
        assert host.stats.direct_rounds == rounds + 1
        assert host.stats.messages_sent >= sent + 2  # the APPENDs left in this round
        saved = writes(stores[leader], 0)
        assert any(e.index == pending.index and e.data == b"now" for w in saved for e in w.entries)
        assert await host.proposal_result(pending) == (pending.index, b"applied:now")


async def test_followers_apply_late_in_batches_and_everything_before_leading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """set_batch_apply: a follower keeps committed entries back for the delay, then applies them
    in order with one call; the leader applies at once; a follower that becomes leader has
    applied everything before its own first entry; a read on it sees everything."""
    batches: dict[str, list[list[bytes]]] = {n: [] for n in NODES}
    delay_s = 0.5
    async with cluster_of({n: MemoryLogStore() for n in NODES}, ["g"]) as cluster:
        for node, member in cluster.members.items():
            def apply_entries(entries: list, node: str = node, member: object = member) -> None:
                batches[node].append([e.data for e in entries])
                for entry in entries:  # the same record the per-entry callback keeps
                    member.applied.callback("g")(entry)  # type: ignore[attr-defined]
            member.host.set_batch_apply("g", apply_entries, delay_s)
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        want = [b"e%d" % i for i in range(10)]
        for data in want:
            await host.propose("g", data)
        assert batches[leader] == []  # the leader applies one by one, at once
        assert cluster.members[leader].applied.data("g") == want
        followers = [n for n in NODES if n != leader]
        await trio.sleep(2 * delay_s + 0.2)
        for n in followers:
            assert cluster.members[n].applied.data("g") == want
            assert len(batches[n]) < len(want)  # entries went together
            assert [d for batch in batches[n] for d in batch] == want
        # More entries, then leadership moves before the delay is up.
        for data in (b"x1", b"x2"):
            await host.propose("g", data)
        reader = cluster.members[followers[1]]
        with trio.fail_after(delay_s / 2):  # a read point: applied first, without the delay
            await reader.host.read_index("g")
        assert reader.applied.data("g") == want + [b"x1", b"x2"]
        new = followers[0]
        host.transfer_leadership("g", new)
        await wait_until(lambda: cluster.leader("g") == new)
        new_host = cluster.members[new].host
        index = await new_host.propose("g", b"after")
        assert cluster.members[new].applied.data("g") == want + [b"x1", b"x2", b"after"]
        assert cluster.members[new].applied.entries["g"][-1].index == index
        point = await cluster.members[new].host.read_index("g")
        assert point >= index


async def test_a_follower_applies_at_once_when_a_megabyte_waits(autojump_clock: trio.testing.MockClock) -> None:
    """Late applies are bounded in data too: one store transaction stays about one entry's size."""
    from raft.driver import BATCH_APPLY_BYTES_MAX

    batches: dict[str, list[int]] = {n: [] for n in NODES}
    async with cluster_of({n: MemoryLogStore() for n in NODES}, ["g"]) as cluster:
        for node, member in cluster.members.items():
            def apply_entries(entries: list, node: str = node) -> None:
                batches[node].append(sum(len(e.data) for e in entries))
            member.host.set_batch_apply("g", apply_entries, 3600.0)  # the delay never runs out
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        chunk = b"x" * (BATCH_APPLY_BYTES_MAX // 4)
        for _ in range(8):
            await host.propose("g", chunk)
        await trio.sleep(1)
        for n in NODES:
            if n != leader:
                assert sum(batches[n]) >= 4 * len(chunk)  # applied without waiting for the delay
                assert all(size <= BATCH_APPLY_BYTES_MAX + len(chunk) for size in batches[n])

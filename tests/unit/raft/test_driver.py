"""RaftHost end to end: three hosts in one process over the memory transport under trio's
MockClock (autojump), stores run inline so virtual time is deterministic. Elect, propose,
commit, refuse on followers, group-commit, many groups, and restart a host from SQLite."""

from __future__ import annotations

import contextlib
import pathlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import trio

from raft.config import NodeConfig, RefuseReason, Role
from raft.driver import NotLeader, ProposalRefused, RaftHost
from raft.storage import LogStore, MemoryLogStore, SqliteLogStore
from raft.testing.simnet import SimNet
from raft.transport import MemoryNetwork
from raft.transport.simulated import SimulatedNetwork
from raft.types import ConfigChange, ConfigChangeType, Entry, Event, Membership, Snapshot

NODES = ("n1", "n2", "n3")
MEMBERS = Membership(frozenset(NODES))
TICK_S = 0.05


@attrs.define
class Applied:
    """A state machine that records what it applied, per group."""

    entries: dict[str, list[Entry]] = attrs.Factory(dict)
    restored: dict[str, list[Snapshot]] = attrs.Factory(dict)

    def restore_callback(self, group: str) -> Callable[[Snapshot], object]:
        def restore(snapshot: Snapshot) -> None:
            self.restored.setdefault(group, []).append(snapshot)
            self.entries[group] = []  # the snapshot replaces the state machine

        return restore

    def callback(self, group: str) -> Callable[[Entry], object]:
        def apply(entry: Entry) -> object:
            log = self.entries.setdefault(group, [])
            assert not log or entry.index > log[-1].index, "applied out of order"
            log.append(entry)
            return b"applied:" + entry.data

        return apply

    def data(self, group: str) -> list[bytes]:
        return [e.data for e in self.entries.get(group, [])]


@attrs.define
class Member:
    host: RaftHost
    applied: Applied
    scope: trio.CancelScope


@attrs.define
class Cluster:
    network: MemoryNetwork | SimulatedNetwork
    nursery: trio.Nursery
    members: dict[str, Member] = attrs.Factory(dict)
    events: list[tuple[str, str, str]] = attrs.Factory(list)  # (node, group, event name)

    async def start(self, node: str, store: LogStore, groups: list[str]) -> Member:
        transport = self.network.endpoint(node)

        def on_event(group: str, event: Event) -> None:
            self.events.append((node, group, event.name))

        host = RaftHost(
            node, store, transport, tick_interval_s=TICK_S, store_offload=False, on_event=on_event
        )
        applied = Applied()
        for group in groups:
            config = NodeConfig(node, group, election_ticks=10, heartbeat_ticks=2)
            await host.add_group(
                group, config, MEMBERS, applied.callback(group), applied.restore_callback(group)
            )
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await host.run()

        self.nursery.start_soon(run)
        member = self.members[node] = Member(host, applied, scope)
        return member

    async def stop(self, node: str) -> None:
        member = self.members.pop(node)
        member.scope.cancel()
        await member.host.transport.aclose()
        member.host.store.close()

    def leader(self, group: str) -> str | None:
        leaders = [
            n for n, m in self.members.items() if m.host.node(group).role is Role.LEADER
        ]
        return leaders[0] if len(leaders) == 1 else None


@contextlib.asynccontextmanager
async def cluster_of(stores: dict[str, LogStore], groups: list[str]) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(MemoryNetwork(), nursery)
        for node, store in stores.items():
            await cluster.start(node, store, groups)
        yield cluster
        for node in list(cluster.members):
            await cluster.stop(node)


async def wait_until(cond: Callable[[], object], timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not cond():
            await trio.sleep(TICK_S)


async def elected(cluster: Cluster, group: str) -> str:
    await wait_until(lambda: cluster.leader(group))
    leader = cluster.leader(group)
    assert leader is not None
    return leader


def memory_stores() -> dict[str, LogStore]:
    return {n: MemoryLogStore() for n in NODES}


async def test_elects_one_leader_and_commits_on_all(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        index, result = await host.propose_result("g", b"hello")
        assert result == b"applied:hello"
        assert host.node("g").commit_index >= index
        for member in cluster.members.values():
            await wait_until(lambda m=member: m.applied.data("g") == [b"hello"])
            assert member.applied.entries["g"][0].index == index
            assert member.host.node("g").leader_id == leader
        assert (leader, "g", "raft.became_leader") in cluster.events


async def test_follower_refuses_with_leader_hint(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        follower = next(n for n in NODES if n != leader)
        await wait_until(lambda: cluster.members[follower].host.node("g").leader_id == leader)
        with pytest.raises(NotLeader) as info:
            await cluster.members[follower].host.propose("g", b"x")
        assert info.value.leader_hint == leader


async def test_concurrent_proposals_share_persist_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        await host.propose("g", b"warm-up")
        batches_before = host.stats.persist_batches
        indexes: list[int] = []

        async def one(i: int) -> None:
            indexes.append(await host.propose("g", b"p%d" % i))

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        assert len(set(indexes)) == 100
        assert host.stats.persist_batches - batches_before < 20
        want = [b"warm-up"] + sorted((b"p%d" % i for i in range(100)), key=lambda d: d)
        for m in cluster.members.values():
            await wait_until(lambda m=m: len(m.applied.data("g")) == 101)
            assert sorted(m.applied.data("g")) == sorted(want)


async def test_many_groups_in_one_host(autojump_clock: trio.testing.MockClock) -> None:
    groups = [f"G{i}" for i in range(12)]
    async with cluster_of(memory_stores(), groups) as cluster:
        for group in groups:
            leader = await elected(cluster, group)
            await cluster.members[leader].host.propose(group, group.encode())
        for m in cluster.members.values():
            for group in groups:
                await wait_until(lambda m=m, g=group: m.applied.data(g) == [g.encode()])


async def test_restarted_host_recovers_from_sqlite_and_catches_up(
    autojump_clock: trio.testing.MockClock, tmp_path: pathlib.Path
) -> None:
    stores: dict[str, LogStore] = {n: SqliteLogStore(tmp_path / f"{n}.db") for n in NODES}
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        victim = next(n for n in NODES if n != leader)
        for i in range(5):
            await cluster.members[leader].host.propose("g", b"before-%d" % i)
        await wait_until(lambda: len(cluster.members[victim].applied.data("g")) == 5)
        await cluster.stop(victim)
        for i in range(5):
            await cluster.members[leader].host.propose("g", b"during-%d" % i)
        member = await cluster.start(victim, SqliteLogStore(tmp_path / f"{victim}.db"), ["g"])
        node = member.host.node("g")
        assert node.last_index >= 6 and not node.repair_needed  # the log survived the restart
        want = [b"before-%d" % i for i in range(5)] + [b"during-%d" % i for i in range(5)]
        await wait_until(lambda: member.applied.data("g") == want)
        leader = await elected(cluster, "g")
        index = await cluster.members[leader].host.propose("g", b"after")
        await wait_until(lambda: member.applied.data("g") == [*want, b"after"])
        assert member.applied.entries["g"][-1].index == index


async def test_corrupt_log_restarts_repair_needed_and_repairs(
    autojump_clock: trio.testing.MockClock, tmp_path: pathlib.Path
) -> None:
    stores: dict[str, LogStore] = {n: SqliteLogStore(tmp_path / f"{n}.db") for n in NODES}
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        victim = next(n for n in NODES if n != leader)
        for i in range(3):
            await cluster.members[leader].host.propose("g", b"v%d" % i)
        await wait_until(lambda: len(cluster.members[victim].applied.data("g")) == 3)
        await cluster.stop(victim)
        path = tmp_path / f"{victim}.db"
        raw = bytearray(path.read_bytes())
        at = raw.find(b"v2")
        assert at >= 0
        raw[at + 1] ^= 0xFF  # flip the last entry's data on disk
        path.write_bytes(bytes(raw))
        # The leader still believes the victim holds entry 4; it must notice and re-send.
        member = await cluster.start(victim, SqliteLogStore(path), ["g"])
        node = member.host.node("g")
        assert node.repair_needed
        assert node.last_index < 4  # only the verified prefix, never served as complete
        await cluster.members[leader].host.propose("g", b"v3")
        assert member.host.store.load("g").repair_pending  # noted durably on start
        await wait_until(lambda: not node.repair_needed)
        assert (victim, "g", "raft.repair_done") in cluster.events
        await wait_until(lambda: member.host.store.load("g").repair_pending is None)
        want = [b"v0", b"v1", b"v2", b"v3"]
        await wait_until(lambda: member.applied.data("g") == want)


async def test_compacted_log_reaches_a_lagging_host_as_a_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stores = memory_stores()
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        victim = next(n for n in NODES if n != leader)
        await cluster.stop(victim)
        for i in range(6):
            await cluster.members[leader].host.propose("g", b"e%d" % i)
        for node, member in cluster.members.items():
            host = member.host
            await wait_until(lambda h=host: h.node("g").applied_index >= 7)
            await host.compact("g", 7, b"state-at-7")
            await host.compact("g", 99, b"ahead")  # capped at what is applied: a no-op here
            loaded = stores[node].load("g")
            assert loaded.snapshot == Snapshot(host.node("g").snapshot_meta, b"state-at-7")
            assert loaded.entries == ()
        member = await cluster.start(victim, stores[victim], ["g"])
        await wait_until(lambda: member.applied.restored.get("g"))
        assert member.applied.restored["g"][-1].data == b"state-at-7"
        await cluster.members[leader].host.propose("g", b"after")
        await wait_until(lambda: member.applied.data("g") == [b"after"])
        assert stores[victim].load("g").snapshot.meta.index == 7  # type: ignore[union-attr]


async def test_hosts_agree_over_a_lossy_simulated_network(
    autojump_clock: trio.testing.MockClock,
) -> None:
    simnet = SimNet(random.Random(11), drop_rate=0.1, duplicate_rate=0.1, delay_ticks=(0, 4))
    async with SimulatedNetwork(simnet, tick_s=0.01) as network, trio.open_nursery() as nursery:
        cluster = Cluster(network, nursery)
        for node in NODES:
            await cluster.start(node, MemoryLogStore(), ["g"])
        acked: dict[int, bytes] = {}
        for i in range(20):
            data = b"lossy-%d" % i
            for _attempt in range(50):
                leader = await elected(cluster, "g")
                with trio.move_on_after(2):
                    with contextlib.suppress(NotLeader):
                        acked[await cluster.members[leader].host.propose("g", data)] = data
                        break
        assert len(acked) == 20
        logs = {}
        for node, member in cluster.members.items():
            await wait_until(lambda m=member: len(m.applied.data("g")) >= 20)
            logs[node] = {e.index: e.data for e in member.applied.entries["g"]}
            assert all(logs[node].get(i) == d for i, d in acked.items())
        assert simnet.stats.dropped > 0 and simnet.stats.duplicated > 0
        for node in list(cluster.members):
            await cluster.stop(node)
        nursery.cancel_scope.cancel()


async def test_read_index_returns_an_applied_linearizable_point(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        index = await cluster.members[leader].host.propose("g", b"w")
        for node, member in cluster.members.items():
            await wait_until(lambda m=member: m.host.node("g").leader_id == leader)
            with trio.fail_after(10):
                point = await member.host.read_index("g")
            assert point >= index, node
            assert member.host.node("g").applied_index >= point
            assert member.applied.data("g") == [b"w"]


async def test_a_fourth_host_joins_as_learner_then_voter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        lead = cluster.members[leader].host
        await lead.propose("g", b"before-join")
        joiner = await cluster.start("n4", MemoryLogStore(), ["g"])  # knows only n1..n3
        assert joiner.host.node("g").role is Role.LEARNER
        await lead.propose_config_change("g", ConfigChange(ConfigChangeType.ADD_LEARNER, "n4"))
        await wait_until(lambda: joiner.applied.data("g") == [b"before-join"])
        await wait_until(lambda: lead.node("g").role is Role.LEADER)
        change = ConfigChange(ConfigChangeType.PROMOTE_LEARNER, "n4")
        for _attempt in range(100):  # refused while the previous change is uncommitted
            try:
                await lead.propose_config_change("g", change)
                break
            except ProposalRefused as refused:
                assert refused.reason is RefuseReason.CONFIG_PENDING
                await trio.sleep(TICK_S)
        await wait_until(lambda: "n4" in joiner.host.node("g").membership.voters)
        assert joiner.host.node("g").role is Role.FOLLOWER
        await lead.propose("g", b"after-join")
        for member in cluster.members.values():
            want = [b"before-join", b"after-join"]
            await wait_until(lambda m=member, w=want: m.applied.data("g") == w)


async def test_removed_group_leaves_nothing_to_resurrect_after_forget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stores = memory_stores()
    async with cluster_of(stores, ["g", "h"]) as cluster:
        leader = await elected(cluster, "g")
        await cluster.members[leader].host.propose("g", b"x")
        for node, member in cluster.members.items():
            await wait_until(lambda m=member: m.applied.data("g") == [b"x"])
            member.host.remove_group("g")
            stores[node].forget_group("g")
        for member in cluster.members.values():  # deferred commit writes must not come back
            await elected(cluster, "h")
            await trio.sleep(3 * member.host.commit_flush_interval_s)
        for node in NODES:
            assert stores[node].groups() == ["h"]
            assert stores[node].load("g").is_empty


async def test_wiped_member_comes_back_repair_needed_and_catches_up(
    autojump_clock: trio.testing.MockClock, tmp_path: pathlib.Path
) -> None:
    stores: dict[str, LogStore] = {n: SqliteLogStore(tmp_path / f"{n}.db") for n in NODES}
    async with cluster_of(stores, ["g"]) as cluster:
        leader = await elected(cluster, "g")
        victim = next(n for n in NODES if n != leader)
        for i in range(3):
            await cluster.members[leader].host.propose("g", b"w%d" % i)
        await wait_until(lambda: len(cluster.members[victim].applied.data("g")) == 3)
        await cluster.stop(victim)
        with sqlite3.connect(tmp_path / f"{victim}.db") as db:  # lose the group, keep the marker
            for table in ("log_entry", "hard_state", "snapshot"):
                db.execute(f"DELETE FROM {table} WHERE grp='g'")  # noqa: S608
        db.close()
        member = await cluster.start(victim, SqliteLogStore(tmp_path / f"{victim}.db"), ["g"])
        node = member.host.node("g")
        assert node.repair_needed and node.last_index == 0
        await wait_until(lambda: not node.repair_needed)
        await wait_until(lambda: member.applied.data("g") == [b"w0", b"w1", b"w2"])
        assert member.host.store.load("g").repair_pending is None


async def test_groups_apply_concurrently_but_each_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each group's async apply waits (briefly) for the other group's apply to start: a driver
    that applied groups one after the other would never see both in progress at once. (Waiting
    forever would deadlock whenever the two groups' entries commit in different Readies, which
    scheduling may cause; so each round only records whether they overlapped.)"""
    network = MemoryNetwork()
    started = {"a": trio.Event(), "b": trio.Event()}
    order: dict[str, list[int]] = {"a": [], "b": []}
    overlaps = []
    running: set[str] = set()

    def callback(group: str, other: str) -> Callable[[Entry], object]:
        async def apply(entry: Entry) -> None:
            running.add(group)
            started[group].set()
            with trio.move_on_after(10 * TICK_S):
                await started[other].wait()
                if other in running:
                    overlaps.append(entry.index)
            order[group].append(entry.index)
            running.discard(group)

        return apply

    async with network.endpoint("solo") as transport, trio.open_nursery() as nursery:
        host = RaftHost("solo", MemoryLogStore(), transport, tick_interval_s=TICK_S)
        solo = Membership(frozenset({"solo"}))
        for group, other in (("a", "b"), ("b", "a")):
            await host.add_group(group, NodeConfig("solo", group), solo, callback(group, other))
        await nursery.start(host.run)
        await wait_until(lambda: all(host.node(g).role is Role.LEADER for g in "ab"))
        for round_ in range(5):
            started = {"a": trio.Event(), "b": trio.Event()}
            async with trio.open_nursery() as proposers:
                for group in "ab":
                    proposers.start_soon(host.propose, group, b"%d" % round_)
        assert all(order[g] == sorted(order[g]) and len(order[g]) == 5 for g in "ab")
        assert overlaps, "the two groups never applied at the same time"
        nursery.cancel_scope.cancel()


async def test_leader_commits_on_followers_while_its_own_write_is_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The leader's APPENDs leave before its own write: with that write held back, both followers
    persist and acknowledge, and the entry commits (a quorum without the leader); it is applied
    and answered only after the leader's write finishes."""
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        gate, blocked = trio.Event(), trio.Event()
        real_save = host.worker.save

        async def gated_save(writes: list, sync: bool = True) -> None:
            if any(w.entries for w in writes) and not gate.is_set():
                blocked.set()
                await gate.wait()
            await real_save(writes, sync=sync)

        host.worker.save = gated_save  # type: ignore[method-assign]
        early_before = host.stats.early_sends
        async with trio.open_nursery() as proposer:
            proposer.start_soon(host.propose, "g", b"parallel")
            await blocked.wait()
            index = host.node("g").last_index
            await wait_until(lambda: host.node("g").commit_index >= index, timeout_s=0.5)
            assert host.stats.early_sends > early_before
            assert cluster.members[leader].applied.data("g") == []  # not before its own write
            gate.set()
        assert cluster.members[leader].applied.data("g") == [b"parallel"]

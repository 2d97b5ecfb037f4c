"""RaftHost.add_group(membership_index=...): a wiped member handed an old peer list leaves repair.

Four hosts over the memory transport under trio's MockClock (autojump). The group starts with
four voters; the leader removes one, which then shuts down for good. Another member loses its
disk (its store keeps only the member marker, so it restarts repair-needed) and is added again
with the group's first config, which still names the removed member. Term discovery counts
majority(4) = 3 answers of that config's other voters, one of them gone: only a newer committed
config named in a probe answer (three voters) can replace it, and the driver passes the index
that lets it (raft/repair.py, "Which voters count"). Without an index the node stays in repair.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from raft.config import NodeConfig, Role
from raft.driver import RaftHost
from raft.storage import LogStore, MemoryLogStore
from raft.transport import MemoryNetwork
from raft.types import ConfigChange, ConfigChangeType, Entry, Event, Membership

NODES = ("n1", "n2", "n3", "n4")
FIRST = Membership(frozenset(NODES))  # the group's first config: log index 0
TICK_S = 0.05
GROUP = "g"


@attrs.define
class Member:
    host: RaftHost
    applied: list[bytes]
    scope: trio.CancelScope


@attrs.define
class Hosts:
    network: MemoryNetwork
    nursery: trio.Nursery
    members: dict[str, Member] = attrs.Factory(dict)
    events: list[tuple[str, str]] = attrs.Factory(list)  # (node, event name)

    async def start(self, node: str, store: LogStore, membership_index: int | None) -> Member:
        def on_event(group: str, event: Event) -> None:
            self.events.append((node, event.name))

        host = RaftHost(node, store, self.network.endpoint(node), tick_interval_s=TICK_S,
                        store_offload=False, on_event=on_event)
        applied: list[bytes] = []

        def apply(entry: Entry) -> bytes:
            applied.append(entry.data)
            return b""

        config = NodeConfig(node, GROUP, election_ticks=10, heartbeat_ticks=2)
        await host.add_group(GROUP, config, FIRST, apply, membership_index=membership_index)
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

    def leader(self) -> str | None:
        leaders = [n for n, m in self.members.items() if m.host.node(GROUP).role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None


@contextlib.asynccontextmanager
async def hosts() -> AsyncIterator[Hosts]:
    async with trio.open_nursery() as nursery:
        h = Hosts(MemoryNetwork(), nursery)
        for node in NODES:
            await h.start(node, MemoryLogStore(), 0)
        yield h
        for node in list(h.members):
            await h.stop(node)


async def wait_until(cond: Callable[[], object], timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not cond():
            await trio.sleep(TICK_S)


async def remove_one_then_wipe_another(h: Hosts, membership_index: int | None) -> tuple[Member, str, str]:
    """Remove a non-leader voter (committed everywhere, then it shuts down), wipe another
    non-leader and add it again with FIRST at `membership_index`. Returns (the wiped member, its
    id, the removed id)."""
    await wait_until(h.leader)
    leader = h.leader()
    assert leader is not None
    removed, victim = [n for n in NODES if n != leader][:2]
    lead = h.members[leader].host
    for i in range(3):
        await lead.propose(GROUP, b"w%d" % i)
    await lead.propose_config_change(GROUP, ConfigChange(ConfigChangeType.REMOVE, removed))
    await lead.propose(GROUP, b"after")
    three = frozenset(NODES) - {removed}
    await wait_until(lambda: all(h.members[n].host.node(GROUP).membership.voters == three
                                 and h.members[n].applied[-1:] == [b"after"] for n in three))
    await h.stop(removed)  # a removed member shut down: it never answers again
    await h.stop(victim)
    wiped = MemoryLogStore()
    wiped.mark_member(GROUP)  # the disk lost the group's state; the marker says it was a member
    member = await h.start(victim, wiped, membership_index)
    node = member.host.node(GROUP)
    assert node.repair_needed and node.last_index == 0
    return member, victim, removed


async def test_stale_config_index_is_replaced_by_a_newer_committed_config(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts() as h:
        member, victim, removed = await remove_one_then_wipe_another(h, 0)
        node = member.host.node(GROUP)
        await wait_until(lambda: not node.repair_needed)
        assert (victim, "raft.repair_term_known") in h.events
        assert (victim, "raft.repair_done") in h.events
        assert node.membership.voters == frozenset(NODES) - {removed}  # learned from the log
        await wait_until(lambda: member.applied == [b"w0", b"w1", b"w2", b"after"])
        # and it is a full voter again: the group commits with it
        leader = h.leader()
        assert leader is not None
        await h.members[leader].host.propose(GROUP, b"later")
        await wait_until(lambda: member.applied[-1:] == [b"later"])


async def test_without_an_index_the_old_config_keeps_it_in_repair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What production callers got before they passed an index: the given config is counted as
    it is, 3 answers of {the others}, one of them gone for good."""
    async with hosts() as h:
        member, victim, _ = await remove_one_then_wipe_another(h, None)
        node = member.host.node(GROUP)
        for _ in range(40):  # 40 election timeouts of virtual time, probes every one
            await trio.sleep(10 * TICK_S)
            assert node.repair_needed
        assert (victim, "raft.repair_term_known") not in h.events
        assert member.applied == []

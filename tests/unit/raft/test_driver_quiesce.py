"""RaftHost with quiescing groups (NodeConfig.quiesce) under trio's MockClock over the memory
transport: idle groups leave the tick loop and send nothing but host heartbeats; a stopped
leader host is noticed through peer liveness and its groups elect new leaders as fast as
without quiescence; proposals on a quiet group commit at once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import trio
import trio.testing

from raft.config import NodeConfig, Role
from raft.driver import RaftHost
from raft.storage import MemoryLogStore
from raft.transport import MemoryNetwork
from raft.types import Entry, Membership

NODES = ("n1", "n2", "n3")
MEMBERS = Membership(frozenset(NODES))
TICK_S = 0.1
ELECTION_TICKS = 12
HEARTBEAT_TICKS = 4
GROUPS = [f"g{i}" for i in range(30)]


@attrs.define
class Hosts:
    network: MemoryNetwork
    hosts: dict[str, RaftHost] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)

    def leader(self, group: str) -> str | None:
        leaders = [n for n, h in self.hosts.items() if h.node(group).role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def all_quiet(self) -> bool:
        return all(h.node(g).quiesced for h in self.hosts.values() for g in GROUPS)

    async def stop(self, node: str) -> None:
        self.scopes.pop(node).cancel()
        host = self.hosts.pop(node)
        await host.transport.aclose()


def _apply(entry: Entry) -> object:
    return entry.data


@contextlib.asynccontextmanager
async def hosts_of(quiesce: bool = True) -> AsyncIterator[Hosts]:
    async with trio.open_nursery() as nursery:
        net = Hosts(MemoryNetwork())
        for node in NODES:
            host = RaftHost(node, MemoryLogStore(), net.network.endpoint(node),
                            tick_interval_s=TICK_S, store_offload=False)
            for group in GROUPS:
                config = NodeConfig(node, group, election_ticks=ELECTION_TICKS,
                                    heartbeat_ticks=HEARTBEAT_TICKS, quiesce=quiesce)
                await host.add_group(group, config, MEMBERS, _apply)
            scope = trio.CancelScope()

            async def run(host: RaftHost = host, scope: trio.CancelScope = scope) -> None:
                with scope:
                    await host.run()

            nursery.start_soon(run)
            net.hosts[node], net.scopes[node] = host, scope
        yield net
        for node in list(net.hosts):
            await net.stop(node)


async def wait_until(cond: Callable[[], object], timeout_s: float) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout_s):
        while not cond():
            await trio.sleep(TICK_S / 2)
    return trio.current_time() - start


async def test_idle_groups_go_quiet_and_send_only_host_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts_of() as net:
        await wait_until(lambda: all(net.leader(g) for g in GROUPS), 60)
        await wait_until(net.all_quiet, 30)
        sent = {n: h.stats.messages_sent for n, h in net.hosts.items()}
        pings = {n: h.stats.host_pings for n, h in net.hosts.items()}
        await trio.sleep(60)
        for n, h in net.hosts.items():
            assert h.stats.messages_sent == sent[n]  # not one group message in a minute
            # two peers, one host heartbeat each per heartbeat interval
            assert h.stats.host_pings - pings[n] <= 2 * (60 / (HEARTBEAT_TICKS * TICK_S) + 1)
            assert not h._active  # the tick loop touches no group
            assert h.stats.peers_suspected == 0
        assert net.all_quiet()


async def test_proposal_on_a_quiet_group_commits_and_it_goes_quiet_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts_of() as net:
        await wait_until(lambda: all(net.leader(g) for g in GROUPS), 60)
        await wait_until(net.all_quiet, 30)
        leader = net.leader("g3")
        assert leader is not None
        start = trio.current_time()
        index, result = await net.hosts[leader].propose_result("g3", b"hello")
        assert result == b"hello"
        assert trio.current_time() - start < 2 * HEARTBEAT_TICKS * TICK_S  # no election wait
        await wait_until(lambda: all(h.node("g3").applied_index >= index for h in net.hosts.values()), 10)
        await wait_until(net.all_quiet, 30)


async def test_stopped_leader_host_is_replaced_in_every_quiet_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts_of() as net:
        await wait_until(lambda: all(net.leader(g) for g in GROUPS), 60)
        await wait_until(net.all_quiet, 30)
        victim = "n1"
        led = [g for g in GROUPS if net.leader(g) == victim]
        assert led
        await net.stop(victim)

        def replaced() -> bool:
            return all(net.leader(g) not in (None, victim) for g in led)

        took_s = await wait_until(replaced, 60)
        election_s = ELECTION_TICKS * TICK_S
        # silence noticed after one election timeout, campaign within one more; a split vote
        # costs another (without quiescence this takes the same: up to ~3.9 s here)
        assert took_s <= 4 * election_s, took_s
        survivors = list(net.hosts.values())
        assert all(h.stats.peers_suspected >= 1 for h in survivors)
        for g in led:  # and the new leaders take writes
            leader = net.leader(g)
            assert leader is not None
            await net.hosts[leader].propose(g, b"after")


async def test_groups_go_quiet_again_while_a_host_is_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosts_of() as net:
        await wait_until(lambda: all(net.leader(g) for g in GROUPS), 60)
        await wait_until(net.all_quiet, 30)
        await net.stop("n3")
        await wait_until(lambda: all(net.leader(g) not in (None, "n3") for g in GROUPS), 60)
        await wait_until(net.all_quiet, 30)  # without n3: a quorum holds every log
        sent = {n: h.stats.messages_sent for n, h in net.hosts.items()}
        await trio.sleep(30)
        assert all(h.stats.messages_sent == sent[n] for n, h in net.hosts.items())
        leader = net.leader("g7")
        assert leader is not None
        await net.hosts[leader].propose("g7", b"still writable")

"""The TCP transport's `settle` hook and the RaftHost ready rounds its readers run (issue 5, R3
one-at-a-time latency): a reader awaits `settle` once a read's messages were handed over and
before it reads again; the host then runs the ready round in that reader when its ready loop is
parked (one task switch less per hop), and a failure there still stops the host."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from raft.config import NodeConfig, Role
from raft.driver import RaftHost
from raft.storage import MemoryLogStore, SqliteLogStore
from raft.transport.tcp import TcpTransport
from raft.types import Entry, Membership, Message, MessageType
from tests.unit.raft.test_transport_conformance import msg, tcp_cluster

NODES = ("n1", "n2", "n3")
MEMBERS = Membership(frozenset(NODES))


async def test_settle_runs_after_a_reads_messages_and_before_the_next_read() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(b, TcpTransport)
        got: list[Message] = []
        settled: list[int] = []  # messages received when each settle ran
        release = trio.Event()
        first_settle = trio.Event()

        async def settle() -> None:
            settled.append(len(got))
            first_settle.set()
            await release.wait()  # the reader reads nothing more meanwhile

        assert b.set_receiver(got.extend, settle)
        a.send_nowait([msg("a", "b", n=i) for i in range(20)])
        with trio.fail_after(5):
            await first_settle.wait()
        held = len(got)
        assert held >= 1 and settled == [held]
        a.send_nowait([msg("a", "b", n=100 + i) for i in range(5)])
        await trio.sleep(0.05)  # (no condition to wait on: nothing may arrive while held)
        assert len(got) == held
        release.set()
        with trio.fail_after(5):
            while len(got) < 25:
                await trio.sleep(0.001)
        assert [m.index for m in got] == list(range(20)) + [100 + i for i in range(5)]
        assert settled[-1] == 25


@contextlib.asynccontextmanager
async def tcp_hosts(stores: dict[str, object], apply: Callable[[str], Callable[[Entry], object]],
                    ) -> AsyncIterator[dict[str, RaftHost]]:
    async with tcp_cluster_of(NODES) as transports, trio.open_nursery() as nursery:
        hosts = {}
        for n in NODES:
            host = hosts[n] = RaftHost(n, stores[n], transports[n], tick_interval_s=0.01)  # type: ignore[arg-type]
            await host.add_group("g", NodeConfig(n, "g", election_ticks=10, heartbeat_ticks=2), MEMBERS,
                                 apply(n))
            await nursery.start(host.run)
        yield hosts
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def tcp_cluster_of(nodes: tuple[str, ...]) -> AsyncIterator[dict[str, TcpTransport]]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = {n: await stack.enter_async_context(TcpTransport(n)) for n in nodes}
        for n, t in cluster.items():
            for peer, other in cluster.items():
                if peer != n:
                    t.set_peer(peer, other.address)
        yield cluster


async def leader_of(hosts: dict[str, RaftHost]) -> RaftHost:
    with trio.fail_after(20):
        while True:
            leaders = [h for h in hosts.values() if h.node("g").role is Role.LEADER]
            if len(leaders) == 1:
                return leaders[0]
            await trio.sleep(0.01)


async def test_hosts_over_tcp_commit_one_at_a_time_with_direct_rounds(tmp_path: object) -> None:
    applied: dict[str, list[bytes]] = {n: [] for n in NODES}

    def apply(node: str) -> Callable[[Entry], object]:
        def cb(entry: Entry) -> object:
            applied[node].append(entry.data)
            return entry.index
        return cb

    stores = {n: SqliteLogStore(f"{tmp_path}/{n}.db") for n in NODES}
    async with tcp_hosts(stores, apply) as hosts:  # type: ignore[arg-type]
        leader = await leader_of(hosts)
        want = [b"m%d" % i for i in range(60)]
        for data in want:  # one at a time: every hop is a read followed by a round
            index, result = await leader.propose_result("g", data)
            assert result == index
        with trio.fail_after(10):
            while any(applied[n] != want for n in NODES):
                await trio.sleep(0.01)
        assert sum(h.stats.direct_rounds for h in hosts.values()) >= 60
    for store in stores.values():
        store.close()


async def test_an_apply_failure_in_a_reader_round_stops_the_host() -> None:
    class Boom(Exception):
        pass

    failing: set[str] = set()

    def apply(node: str) -> Callable[[Entry], object]:
        def cb(entry: Entry) -> object:
            if node in failing and entry.data == b"boom":
                raise Boom(node)
            return None
        return cb

    stores = {n: MemoryLogStore() for n in NODES}
    followers: list[RaftHost] = []
    with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 - builtin on 3.11
        async with tcp_hosts(stores, apply) as hosts:  # type: ignore[arg-type]
            leader = await leader_of(hosts)
            followers = [h for h in hosts.values() if h is not leader]
            failing.update(h.node_id for h in followers)
            await leader.propose("g", b"boom")  # committed by the followers' answers
            with trio.fail_after(10):
                await trio.sleep_forever()  # a follower's host fails when it applies; that ends all
    assert info.group_contains(Boom)
    assert sum(h.stats.direct_rounds for h in followers) > 0

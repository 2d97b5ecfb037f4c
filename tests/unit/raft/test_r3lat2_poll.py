"""poll_nowait (issue 5, R3 one-at-a-time latency): after an fsync that ran inline on the event
loop, the host reads what arrived meanwhile (a follower's ack) and handles it in the same round,
instead of after a scheduler pass. The TCP reader and poll_nowait share the socket and its frame
buffer, so every message arrives once and in order."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import trio

from raft.storage import SqliteLogStore
from raft.transport.memory import MemoryNetwork
from raft.transport.tcp import TcpTransport
from raft.config import NodeConfig, Role
from raft.driver import RaftHost
from raft.types import Entry, Message
from tests.unit.raft.test_r3lat_tcp import MEMBERS
from tests.unit.raft.test_transport_conformance import msg, tcp_cluster


async def test_poll_nowait_delivers_while_the_reader_is_held_in_order_and_once() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(b, TcpTransport)
        got: list[Message] = []
        release = trio.Event()
        first_settle = trio.Event()

        async def settle() -> None:
            first_settle.set()
            await release.wait()  # the reader reads nothing meanwhile: only poll_nowait does

        assert not b.poll_nowait()  # no receiver yet: nothing read
        assert b.set_receiver(got.extend, settle)
        a.send_nowait([msg("a", "b", n=i) for i in range(3)])
        with trio.fail_after(5):
            await first_settle.wait()
        held = len(got)
        a.send_nowait([msg("a", "b", n=100 + i) for i in range(40)])
        with trio.fail_after(5):
            while len(got) < held + 40:  # polled, as a host does after its inline fsync
                b.poll_nowait()
                await trio.sleep(0.001)
        assert not b.poll_nowait()  # nothing left
        release.set()
        a.send_nowait([msg("a", "b", n=200 + i) for i in range(5)])  # the reader again
        with trio.fail_after(5):
            while len(got) < held + 45:
                await trio.sleep(0.001)
        await trio.sleep(0.02)  # (nothing more may arrive: no condition to wait on)
        want = list(range(3)) + [100 + i for i in range(40)] + [200 + i for i in range(5)]
        assert [m.index for m in got] == want


async def test_other_transports_poll_nothing() -> None:
    net = MemoryNetwork()
    assert not net.endpoint("x").poll_nowait()


def _followers(tmp: str, out: queue.Queue[object], leader_at: queue.Queue[object], stop: threading.Event) -> None:
    """n2 and n3 on their own event loop (a thread: they answer while the leader's loop is
    blocked in its fsync, as separate processes do); they never start an election."""
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            ts = {n: await stack.enter_async_context(TcpTransport(n)) for n in ("n2", "n3")}
            out.put({n: t.address for n, t in ts.items()})
            n1 = await trio.to_thread.run_sync(leader_at.get)
            for n, t in ts.items():
                t.set_peer("n1", n1)  # type: ignore[arg-type]
                for peer, other in ts.items():
                    if peer != n:
                        t.set_peer(peer, other.address)
            stores = [SqliteLogStore(f"{tmp}/{n}.db") for n in ts]
            async with trio.open_nursery() as nursery:
                for (n, t), store in zip(ts.items(), stores, strict=True):
                    host = RaftHost(n, store, t, tick_interval_s=0.01)
                    await host.add_group("g", NodeConfig(n, "g", election_ticks=1000, heartbeat_ticks=2),
                                         MEMBERS, lambda e: None)
                    await nursery.start(host.run)
                await trio.to_thread.run_sync(stop.wait)
                nursery.cancel_scope.cancel()
            for store in stores:
                store.close()
    trio.run(main)


async def test_a_leader_saving_inline_handles_the_acks_in_the_same_round(tmp_path: object) -> None:
    applied: list[bytes] = []

    def apply(entry: Entry) -> object:
        applied.append(entry.data)
        return entry.index

    addresses: queue.Queue[object] = queue.Queue()
    leader_at: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=_followers, args=(str(tmp_path), addresses, leader_at, stop))
    thread.start()
    store = SqliteLogStore(f"{tmp_path}/n1.db")
    save = store.save

    def slow_save(*args: object) -> None:  # a slow disk: the acks come during the fsync
        save(*args)  # type: ignore[arg-type]
        time.sleep(0.005)

    store.save = slow_save  # type: ignore[method-assign]
    try:
        async with TcpTransport("n1") as t, trio.open_nursery() as nursery:
            with trio.fail_after(10):
                for peer, address in (await trio.to_thread.run_sync(addresses.get)).items():  # type: ignore[union-attr]
                    t.set_peer(peer, address)
            leader_at.put(t.address)
            host = RaftHost("n1", store, t, tick_interval_s=0.01)
            host.worker.inline_below_s = 10.0  # every save inline, however slow
            await host.add_group("g", NodeConfig("n1", "g", election_ticks=10, heartbeat_ticks=2), MEMBERS, apply)
            await nursery.start(host.run)
            with trio.fail_after(20):
                while host.node("g").role is not Role.LEADER:
                    await trio.sleep(0.01)
            want = [b"m%d" % i for i in range(40)]
            for data in want:
                index, result = await host.propose_result("g", data)
                assert result == index
            assert applied == want
            assert host.worker.inline_saves >= 30
            assert host.stats.poll_passes >= 20  # the acks came during the leader's own fsync
            nursery.cancel_scope.cancel()
    finally:
        stop.set()
        thread.join()
        store.close()

"""One suite for every Transport (memory, TCP on loopback, SimNet adapter), then TCP specifics:
heartbeat coalescing, reconnect after a peer restarts, bounded queues, wrong-peer handshakes."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from raft.testing.simnet import SimNet
from raft.transport import MemoryNetwork, TcpTransport, Transport
from raft.transport.codec import decode_frame
from raft.transport.simulated import SimulatedNetwork
from raft.transport.tcp import pack_frames
from raft.types import Entry, EntryKind, Membership, Message, MessageType, Snapshot, SnapshotMeta

NODES = ("a", "b", "c")
Cluster = dict[str, Transport]


@contextlib.asynccontextmanager
async def memory_cluster() -> AsyncIterator[Cluster]:
    net = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        yield {n: await stack.enter_async_context(net.endpoint(n)) for n in NODES}


@contextlib.asynccontextmanager
async def tcp_cluster() -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = {n: await stack.enter_async_context(TcpTransport(n)) for n in NODES}
        for n, t in cluster.items():
            for peer, other in cluster.items():
                if peer != n:
                    t.set_peer(peer, other.address)  # type: ignore[attr-defined]
        yield cluster


@contextlib.asynccontextmanager
async def sim_cluster() -> AsyncIterator[Cluster]:
    simnet = SimNet(random.Random(7), delay_ticks=(0, 3))
    async with SimulatedNetwork(simnet, tick_s=0.002) as net:
        async with contextlib.AsyncExitStack() as stack:
            yield {n: await stack.enter_async_context(net.endpoint(n)) for n in NODES}


CLUSTERS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Cluster]]] = {
    "memory": memory_cluster,
    "tcp": tcp_cluster,
    "sim": sim_cluster,
}
ORDERED = {"memory", "tcp"}  # SimNet reorders within its delay window on purpose


@pytest.fixture(params=sorted(CLUSTERS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def msg(src: str, dst: str, group: str = "g", n: int = 0, **fields: object) -> Message:
    return Message(MessageType.APPEND, group, src, dst, term=1, index=n, **fields)  # type: ignore


async def receive(t: Transport, count: int, timeout_s: float = 5.0) -> list[Message]:
    got: list[Message] = []
    with trio.fail_after(timeout_s):
        while len(got) < count:
            got.append(await t.incoming.receive())
    return got


async def test_delivers_every_field_to_the_destination_only(kind: str) -> None:
    rich = msg(
        "a",
        "b",
        "S-ORDERS",
        7,
        log_term=3,
        entries=(Entry(3, 8, EntryKind.CONFIG, b"\x00cfg"), Entry(3, 9, data=b"x" * 5000)),
        commit=6,
        snapshot=Snapshot(SnapshotMeta(5, 2, Membership(frozenset({"a", "b"}))), b"snap"),
        chunk_last=True,
        chunk_checksum=0xDEADBEEF,
        context=b"ctx",
    )
    async with CLUSTERS[kind]() as cluster:
        await cluster["a"].send([rich])
        assert await receive(cluster["b"], 1) == [rich]
        with trio.move_on_after(0.05):
            extra = await cluster["c"].incoming.receive()
            pytest.fail(f"c received {extra}")


async def test_many_groups_share_the_transport(kind: str) -> None:
    sent = [msg(src, "b", f"G{i % 50}", i) for src in ("a", "c") for i in range(200)]
    async with CLUSTERS[kind]() as cluster:
        cluster["a"].send_nowait([m for m in sent if m.src == "a"])
        await cluster["c"].send([m for m in sent if m.src == "c"])
        got = await receive(cluster["b"], len(sent))
    assert Counter(got) == Counter(sent)
    if kind in ORDERED:
        assert [m for m in got if m.src == "a"] == [m for m in sent if m.src == "a"]


async def test_unknown_destination_neither_raises_nor_blocks(kind: str) -> None:
    async with CLUSTERS[kind]() as cluster:
        with trio.fail_after(1):
            await cluster["a"].send([msg("a", "nobody"), msg("a", "c", n=1)])
        assert await receive(cluster["c"], 1) == [msg("a", "c", n=1)]


async def test_send_after_close_is_harmless(kind: str) -> None:
    async with CLUSTERS[kind]() as cluster:
        await cluster["b"].aclose()
        cluster["a"].send_nowait([msg("a", "b")])
        await cluster["a"].send([msg("a", "c", n=2)])
        assert await receive(cluster["c"], 1) == [msg("a", "c", n=2)]


# ---- TCP specifics --------------------------------------------------------------------------


def heartbeat(src: str, dst: str, group: str, commit: int) -> Message:
    return Message(MessageType.HEARTBEAT, group, src, dst, term=2, commit=commit)


async def _connected(t: TcpTransport, peer: str, timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while peer not in t.connected_peers():
            await trio.sleep(0.005)


async def test_tcp_coalesces_heartbeats_of_many_groups_into_one_frame() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(a, TcpTransport)
        await _connected(a, "b")
        before = a.stats.frames_sent
        beats = [heartbeat("a", "b", f"S-{i}", 1) for i in range(1000)]
        newer = [heartbeat("a", "b", f"S-{i}", 2) for i in range(1000)]
        a.send_nowait(beats + newer)  # one tick's worth, twice: only the newer survive
        got = await receive(b, 1000)
        assert sorted(got, key=lambda m: m.group) == sorted(newer, key=lambda m: m.group)
        assert a.stats.frames_sent - before == 1


async def test_tcp_reconnects_after_the_peer_restarts() -> None:
    async with TcpTransport("a") as a:
        b = TcpTransport("b")
        async with b:
            a.set_peer("b", b.address)
            b.set_peer("a", a.address)
            a.send_nowait([msg("a", "b", n=1)])
            assert await receive(b, 1) == [msg("a", "b", n=1)]
        port = b.port
        async with TcpTransport("b", port=port) as b2:
            b2.set_peer("a", a.address)
            await _connected(a, "b")
            a.send_nowait([msg("a", "b", n=2)])
            b2.send_nowait([msg("b", "a", n=3)])  # the accepted connection works both ways
            assert await receive(b2, 1) == [msg("a", "b", n=2)]
            assert await receive(a, 1) == [msg("b", "a", n=3)]
        assert a.stats.connects >= 2


async def test_tcp_queue_to_an_unreachable_peer_is_bounded() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # bound, never listening: connects are refused
        async with TcpTransport("a", queue_max=100, peers={"z": ("127.0.0.1", dead_port)}) as a:
            a.send_nowait([msg("a", "z", n=i) for i in range(1000)])
            assert len(a._links["z"].queue) == 100
            assert a.stats.dropped == 900
            assert a.connected_peers() == []


async def test_tcp_dialer_rejects_a_server_with_another_id() -> None:
    async with TcpTransport("x") as impostor, TcpTransport("a") as a:
        a.set_peer("b", impostor.address)  # a expects "b" there
        with trio.move_on_after(0.3):
            await _connected(a, "b")
        assert a.connected_peers() == []


async def test_tcp_survives_garbage_and_keeps_serving_peers() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(b, TcpTransport)
        for junk in (b"\x00\x00\x00\x06\x09hello", b"\xff" * 64, b"\x00\x00\x00\x02\x02\x00"):
            stream = await trio.open_tcp_stream(*b.address)
            await stream.send_all(junk)
            with trio.fail_after(5):  # the transport hangs up on it
                while await stream.receive_some(1024):
                    pass
            await stream.aclose()
        a.send_nowait([msg("a", "b", n=9)])
        assert await receive(b, 1) == [msg("a", "b", n=9)]


def test_large_batches_split_into_bounded_frames() -> None:
    blob = bytes(600_000)
    big = [msg("a", "b", f"G{i}", i, entries=(Entry(1, i + 1, data=blob),)) for i in range(4)]
    frames = pack_frames("a", "b", big)
    assert len(frames) >= 3
    assert all(len(f) < 2 * 600_000 + 1024 for f in frames)
    decoded = [m for f in frames for m in decode_frame(f[4:]).messages]  # type: ignore[union-attr]
    assert decoded == big


async def test_tcp_carries_messages_larger_than_one_frame_target() -> None:
    async with tcp_cluster() as cluster:
        data = [b"%d" % i * 400_000 for i in range(5)]
        big = [msg("a", "b", "G", i, entries=(Entry(1, i + 1, data=data[i]),)) for i in range(5)]
        cluster["a"].send_nowait(big)
        assert await receive(cluster["b"], 5, timeout_s=20) == big


async def test_tcp_keeps_order_and_recovers_when_connections_break() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(a, TcpTransport) and isinstance(b, TcpTransport)
        await _connected(a, "b")
        got: list[int] = []
        for round_no in range(4):
            first = round_no * 1000
            a.send_nowait([msg("a", "b", n=first + i) for i in range(200)])
            with trio.fail_after(10):
                while not got or got[-1] < first + 199:
                    got.append((await b.incoming.receive()).index)
            link = b._links["a"]  # break it from the accepting side; the dialer reconnects
            assert link.connection is not None
            connects = a.stats.connects
            link.connection.cancel()
            with trio.fail_after(10):  # messages sent into a dying connection may be lost
                while a.stats.connects == connects or "b" not in a.connected_peers():
                    await trio.sleep(0.005)
        assert got == sorted(got)  # per-pair FIFO, across reconnects
        assert a.stats.connects >= 4


async def test_tcp_writes_to_an_idle_connection_directly() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(a, TcpTransport)
        await _connected(a, "b")
        before = a.stats.direct_writes
        a.send_nowait([msg("a", "b", n=1), heartbeat("a", "b", "g", 1), heartbeat("a", "b", "g", 2)])
        assert a.stats.direct_writes == before + 1  # written in the call, no writer task step
        assert not a._links["b"].queue
        assert await receive(b, 2) == [msg("a", "b", n=1), heartbeat("a", "b", "g", 2)]


async def test_tcp_keeps_order_when_a_direct_write_is_partial() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(a, TcpTransport)
        await _connected(a, "b")
        blob = bytes(4_000_000)  # more than the socket buffers take at once
        a.send_nowait([msg("a", "b", "G", 0, entries=(Entry(1, 1, data=blob),))])
        link = a._links["b"]
        assert link.conn is not None and link.conn.pending  # the tail waits for the writer
        for i in range(1, 300):  # later calls queue behind it, in order
            a.send_nowait([msg("a", "b", n=i)])
        assert len(link.queue) == 299
        got = await receive(b, 300, timeout_s=20)
        assert [m.index for m in got] == list(range(300))
        assert got[0].entries[0].data == blob


async def test_tcp_hands_received_messages_to_a_receiver_when_set() -> None:
    async with tcp_cluster() as cluster:
        a, b = cluster["a"], cluster["b"]
        assert isinstance(b, TcpTransport)
        got: list[Message] = []
        arrived = trio.Event()

        def receiver(msgs: object) -> None:
            got.extend(msgs)  # type: ignore[arg-type]
            if len(got) >= 50:
                arrived.set()

        assert b.set_receiver(receiver)
        a.send_nowait([msg("a", "b", n=i) for i in range(50)])
        with trio.fail_after(5):
            await arrived.wait()
        assert got == [msg("a", "b", n=i) for i in range(50)]
        with pytest.raises(trio.WouldBlock):
            b.incoming.receive_nowait()  # nothing went through the channel
        b.set_receiver(None)
        a.send_nowait([msg("a", "b", n=99)])
        assert await receive(b, 1) == [msg("a", "b", n=99)]
        assert len(got) == 50


async def test_other_transports_keep_the_incoming_channel(kind: str) -> None:
    async with CLUSTERS[kind]() as cluster:
        assert cluster["a"].set_receiver(lambda msgs: None) is (kind == "tcp")

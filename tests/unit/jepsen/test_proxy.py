"""The fault-injecting link proxy, against an echo server on loopback (asyncio, run per test)."""

from __future__ import annotations

import asyncio
import time

import pytest

from jepsen.proxy import LOOPBACK, ClusterNet, LinkProxy

WAIT_S = 5.0
SILENCE_S = 0.3  # how long "nothing arrives" is watched for


async def _echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, LOOPBACK, 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(reader, writer, payload: bytes, timeout_s: float = WAIT_S) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)


async def _is_closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(10), WAIT_S) == b""
    except ConnectionError:
        return True


def run(coro_fn):
    return asyncio.run(asyncio.wait_for(coro_fn(), 20))


def test_passes_bytes_both_ways_then_stalls_a_blocked_direction() -> None:
    async def scenario() -> None:
        server, port = await _echo_server()
        link = LinkProxy(0, 1, port)
        await link.start()
        reader, writer = await asyncio.open_connection(LOOPBACK, link.listen_port)
        assert await _roundtrip(reader, writer, b"hello") == b"hello"
        link.down.block()
        with pytest.raises(asyncio.TimeoutError):
            await _roundtrip(reader, writer, b"stalled", SILENCE_S)
        link.down.unblock()  # held bytes are delivered, none dropped
        assert await asyncio.wait_for(reader.readexactly(len(b"stalled")), WAIT_S) == b"stalled"
        writer.close()
        await link.close()
        server.close()

    run(scenario)


def test_delay_adds_latency() -> None:
    async def scenario() -> None:
        server, port = await _echo_server()
        link = LinkProxy(0, 1, port)
        await link.start()
        reader, writer = await asyncio.open_connection(LOOPBACK, link.listen_port)
        link.up.delay_ms = 150
        started = time.monotonic()
        assert await _roundtrip(reader, writer, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.15
        writer.close()
        await link.close()
        server.close()

    run(scenario)


def test_cut_resets_connections_and_refuses_until_healed() -> None:
    async def scenario() -> None:
        server, port = await _echo_server()
        net = ClusterNet({(0, 1): LinkProxy(0, 1, port), (1, 0): LinkProxy(1, 0, port)})
        for link in net.links.values():
            await link.start()
        link = net.links[(0, 1)]
        reader, writer = await asyncio.open_connection(LOOPBACK, link.listen_port)
        assert await _roundtrip(reader, writer, b"x") == b"x"
        net.partition([[0], [1]])
        assert await _is_closed(reader)  # reset
        r2, w2 = await asyncio.open_connection(LOOPBACK, link.listen_port)
        assert await _is_closed(r2)  # refused
        net.heal()
        r3, w3 = await asyncio.open_connection(LOOPBACK, link.listen_port)
        assert await _roundtrip(r3, w3, b"back") == b"back"
        for w in (writer, w2, w3):
            w.close()
        await net.close()
        server.close()

    run(scenario)


def test_one_way_block_maps_to_both_proxies_of_the_pair() -> None:
    async def scenario() -> None:
        net = await ClusterNet.start([1, 2, 3])  # ports are never dialed here
        net.block(0, 2)
        assert net.links[(0, 2)].up.blocked and not net.links[(0, 2)].down.blocked
        assert net.links[(2, 0)].down.blocked and not net.links[(2, 0)].up.blocked
        assert not any(link.up.blocked or link.down.blocked for key, link in net.links.items() if 1 in key)
        assert len(net.route_urls(1)) == 2
        net.heal()
        assert not any(link.up.blocked or link.down.blocked for link in net.links.values())
        await net.close()

    run(scenario)


def test_raft_plane_gets_the_same_faults_as_the_routes() -> None:
    async def scenario() -> None:
        net = await ClusterNet.start([1, 2, 3], [4, 5, 6])  # ports are never dialed here
        assert set(net.raft_ports(0)) == {1, 2} and len(set(net.raft_ports(0).values())) == 2
        net.block(0, 2)
        for plane in (net.links, net.raft_links):
            assert plane[(0, 2)].up.blocked and plane[(2, 0)].down.blocked and not plane[(2, 0)].up.blocked
        net.partition([[1], [0, 2]])
        assert all(plane[key].refusing for plane in (net.links, net.raft_links) for key in [(0, 1), (1, 2), (2, 1)])
        net.set_delay_ms(7)
        assert {link.up.delay_ms for link in net.raft_links.values()} == {7}
        assert "raft:0->1" in net.open_connections()
        net.heal()
        assert not any(link.refusing or link.up.blocked or link.down.blocked for link in net.raft_links.values())
        await net.close()

    run(scenario)


def test_cut_ends_a_connection_whose_direction_is_blocked() -> None:
    """A cut connection is no longer counted as open even though its directions stay blocked."""
    async def scenario() -> None:
        server, port = await _echo_server()
        net = ClusterNet({(0, 1): LinkProxy(0, 1, port), (1, 0): LinkProxy(1, 0, port)})
        for link in net.links.values():
            await link.start()
        reader, writer = await asyncio.open_connection(LOOPBACK, net.links[(0, 1)].listen_port)
        assert await _roundtrip(reader, writer, b"x") == b"x"
        assert net.open_connections()["0->1"] == 1
        net.cut(0, 1)
        assert await _is_closed(reader)
        deadline = time.monotonic() + WAIT_S
        while net.open_connections()["0->1"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling, bounded by the deadline
        assert net.open_connections()["0->1"] == 0
        writer.close()
        await net.close()
        server.close()

    run(scenario)

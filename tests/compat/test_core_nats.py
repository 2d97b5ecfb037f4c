"""Core NATS behaviour seen through the real nats-py client, against JetRaft and nats-server.

Every test runs against both servers (the `server` fixture is parametrized): the reference
nats-server proves the test asserts real NATS behaviour, JetRaft must match it. nats-py is
asyncio-based, so tests are plain functions that drive a coroutine with asyncio.run (pytest's
trio mode only applies to `async def` tests).

Synchronisation is by end-to-end barriers, never sleeps. nats-py's `flush()` is NOT one: it
writes its PING straight to the socket, ahead of PUB/SUB frames still in its pending buffer. So
every connection made by `connect()` answers requests on a private sync subject, and
`sync(sender, *receivers)` sends one request from `sender` to each receiver: when the reply is
back, the server has processed everything `sender` wrote before it, and each receiver has parsed
every message routed to it before the sync request (the server keeps per-publisher order).
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from tests.compat import js_support
from tests.compat.servers import LOOPBACK, ServerProcess, raw_exchange, running_server

SCENARIO_TIMEOUT_S = 30.0


def run(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return js_support.run(scenario, *args, timeout_s=SCENARIO_TIMEOUT_S)


async def connect(url: str, **options: Any) -> Client:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def answer_sync(msg: Any) -> None:
        await msg.respond(b"")

    options.setdefault("allow_reconnect", False)
    nc = await nats.connect(url, error_cb=on_error, connect_timeout=5, **options)
    js_support.close_after_scenario(nc)
    nc._test_errors = errors  # type: ignore[attr-defined]
    nc._test_sync_subject = nc.new_inbox().replace("_INBOX.", "sync.")  # type: ignore[attr-defined]
    await nc.subscribe(nc._test_sync_subject, cb=answer_sync)  # type: ignore[attr-defined]
    await server_processed(nc)  # others may sync to this connection as soon as it is returned
    return nc


async def server_processed(nc: Client) -> None:
    """Barrier: the server has processed everything `nc` sent so far. nats-py's own flush() writes
    its PING ahead of buffered frames, so first push those out (private API, no public one)."""
    await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=10)


async def drain_pending(sub: Subscription) -> list[Any]:
    """Every message already parsed into `sub`'s queue (call after `sync`)."""
    return [await sub.next_msg(timeout=1) for _ in range(sub.pending_msgs)]


async def sync(sender: Client, *receivers: Client) -> None:
    """End-to-end barrier from `sender` to each receiver (default: itself; see module docstring)."""
    for receiver in receivers or (sender,):
        await sender.request(receiver._test_sync_subject, b"", timeout=10)  # type: ignore[attr-defined]


# --- connect, pub/sub, wildcards -------------------------------------------------------------------


def test_connect_and_info(server: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(server.url)
        assert nc.is_connected
        info = nc._server_info
        assert info["headers"] is True
        assert info["max_payload"] == nc.max_payload == 1024 * 1024
        assert info["proto"] == 1
        await nc.flush(timeout=5)
        await nc.close()
        assert nc.is_closed

    run(scenario)


def test_pub_sub_round_trip(server: ServerProcess) -> None:
    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        sub = await sub_nc.subscribe("greet.one")
        await sync(sub_nc)
        await pub_nc.publish("greet.one", b"hello")
        await pub_nc.publish("greet.other", b"not for you")
        await pub_nc.publish("greet.one", b"", reply="reply.here")
        await sync(pub_nc, sub_nc)
        got = await drain_pending(sub)
        assert [(m.subject, m.data, m.reply) for m in got] == [
            ("greet.one", b"hello", ""),
            ("greet.one", b"", "reply.here"),
        ]
        assert sub_nc._test_errors == [] and pub_nc._test_errors == []
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


WILDCARD_SUBS = ["wc.*", "wc.>", "wc.*.c", "*.b", "wc.b", ">"]
WILDCARD_PUBS = ["wc.b", "wc.b.c", "wc.x.c.d", "zz.b", "wc", "other"]


def model_match(pattern: str, subject: str) -> bool:
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def test_wildcards_star_and_gt(server: ServerProcess) -> None:
    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        subs = {pattern: await sub_nc.subscribe(pattern) for pattern in WILDCARD_SUBS}
        await sync(sub_nc)
        for subject in WILDCARD_PUBS:
            await pub_nc.publish(subject, subject.encode())
        await sync(pub_nc, sub_nc)
        for pattern, sub in subs.items():
            got = [m.subject for m in await drain_pending(sub) if not m.subject.startswith(("sync.", "_INBOX."))]
            assert got == [s for s in WILDCARD_PUBS if model_match(pattern, s)], pattern
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


# --- queue groups, auto-unsubscribe ----------------------------------------------------------------


def test_queue_group_delivers_each_message_to_exactly_one_member(server: ServerProcess) -> None:
    total = 300

    async def scenario() -> None:
        members = [await connect(server.url) for _ in range(3)]
        member_subs = [await nc.subscribe("jobs", queue="workers") for nc in members]
        plain_nc = await connect(server.url)
        plain = await plain_nc.subscribe("jobs")
        pub_nc = await connect(server.url)
        for nc in [*members, plain_nc]:
            await sync(nc)
        for i in range(total):
            await pub_nc.publish("jobs", str(i).encode())
        await sync(pub_nc, *members, plain_nc)
        per_member = [[int(m.data) for m in await drain_pending(sub)] for sub in member_subs]
        delivered = sorted(i for got in per_member for i in got)
        assert delivered == list(range(total)), "each message to exactly one member"
        assert all(len(got) > total // 10 for got in per_member), [len(g) for g in per_member]
        assert len(await drain_pending(plain)) == total
        for nc in [*members, plain_nc, pub_nc]:
            await nc.close()

    run(scenario)


def test_unsubscribe_with_max(server: ServerProcess) -> None:
    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        sub = await sub_nc.subscribe("limited")
        await sub.unsubscribe(limit=3)
        await sync(sub_nc)
        for i in range(10):
            await pub_nc.publish("limited", str(i).encode())
        await sync(pub_nc, sub_nc)
        assert [m.data for m in await drain_pending(sub)] == [b"0", b"1", b"2"]
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


def test_server_enforces_unsub_max_on_raw_connection(server: ServerProcess) -> None:
    frames = b"CONNECT {}\r\nSUB cap 7\r\nUNSUB 7 2\r\n" + b"PUB cap 1\r\nx\r\n" * 5 + b"PING\r\n"
    received, closed = raw_exchange(server.port, frames)
    assert not closed
    assert received.count(b"MSG cap 7 1\r\nx\r\n") == 2


# --- request/reply, headers ------------------------------------------------------------------------


def test_request_reply(server: ServerProcess) -> None:
    async def scenario() -> None:
        svc_nc, client_nc = await connect(server.url), await connect(server.url)

        async def respond(msg: Any) -> None:
            await msg.respond(b"echo:" + msg.data)

        await svc_nc.subscribe("svc.echo", cb=respond)
        await sync(svc_nc)
        for i in range(20):
            reply = await client_nc.request("svc.echo", str(i).encode(), timeout=5)
            assert reply.data == f"echo:{i}".encode()
        await svc_nc.close()
        await client_nc.close()

    run(scenario)


def test_no_responders_error(server: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(server.url)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("nobody.home", b"anyone?", timeout=5)
        assert nc.is_connected
        await nc.close()

    run(scenario)


def test_headers_round_trip(server: ServerProcess) -> None:
    headers = {"Foo": "bar", "X-Trace-Id": "abc-123", "lower-case": "Keep Case"}

    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        sub = await sub_nc.subscribe("hdr")
        await sync(sub_nc)
        await pub_nc.publish("hdr", b"body", headers=headers)
        await pub_nc.publish("hdr", b"", headers={"Only": "headers"})
        await sync(pub_nc, sub_nc)
        first, second = await drain_pending(sub)
        assert (first.data, first.headers) == (b"body", headers)
        assert (second.data, second.headers) == (b"", {"Only": "headers"})
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


# --- limits ----------------------------------------------------------------------------------------

SMALL_MAX_PAYLOAD = 512


@pytest.fixture(scope="module", params=["jetraft", "nats-server"])
def small_payload_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp_dir = tmp_path_factory.mktemp(f"small-{request.param}")
    with running_server(request.param, tmp_dir, {"max_payload": SMALL_MAX_PAYLOAD}) as proc:
        yield proc


def test_payload_exactly_at_max_payload_is_delivered(small_payload_server: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(small_payload_server.url)
        assert nc.max_payload == SMALL_MAX_PAYLOAD
        sub = await nc.subscribe("big")
        await nc.publish("big", b"m" * SMALL_MAX_PAYLOAD)
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.publish("big", b"m" * (SMALL_MAX_PAYLOAD + 1))
        await sync(nc)
        assert [len(m.data) for m in await drain_pending(sub)] == [SMALL_MAX_PAYLOAD]
        await nc.close()

    run(scenario)


def test_server_rejects_payload_one_byte_over(small_payload_server: ServerProcess) -> None:
    over = SMALL_MAX_PAYLOAD + 1
    frames = b"CONNECT {}\r\nPUB big %d\r\n" % over + b"m" * over + b"\r\nPING\r\n"
    received, closed = raw_exchange(small_payload_server.port, frames)
    assert b"-ERR 'Maximum Payload Violation'\r\n" in received
    assert closed


# --- flush, many subscriptions, ordering, no loss ---------------------------------------------------


def test_flush_round_trips_with_messages_in_flight(server: ServerProcess) -> None:
    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        sub = await sub_nc.subscribe("flushed")
        await sync(sub_nc)
        for round_no in range(5):
            for i in range(200):
                await pub_nc.publish("flushed", b"%d" % i)
            await pub_nc.flush(timeout=10)  # raises on timeout: the server must answer the PING
            await sync(pub_nc, sub_nc)
            assert sub.pending_msgs == 200, round_no
            await drain_pending(sub)
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


def test_ten_thousand_subscriptions_route_correctly(server: ServerProcess) -> None:
    count = 10_000

    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        subs = [await sub_nc.subscribe(f"many.{i}") for i in range(count)]
        catch_all = await sub_nc.subscribe("many.*")
        await sync(sub_nc)
        for i in reversed(range(count)):
            await pub_nc.publish(f"many.{i}", b"%d" % i)
        await sync(pub_nc, sub_nc)
        for i, sub in enumerate(subs):
            got = await drain_pending(sub)
            assert [(m.subject, m.data) for m in got] == [(f"many.{i}", b"%d" % i)]
        assert catch_all.pending_msgs == count
        await sub_nc.close()
        await pub_nc.close()

    run(scenario)


def test_two_publishers_ten_thousand_each_none_lost_order_kept(server: ServerProcess) -> None:
    per_publisher = 10_000

    async def publish_all(nc: Client, name: str) -> None:
        for i in range(per_publisher):
            await nc.publish(f"flow.{name}", b"%d" % i)

    async def scenario() -> None:
        sub_nc = await connect(server.url)
        sub = await sub_nc.subscribe("flow.*")
        await sync(sub_nc)
        pubs = [await connect(server.url), await connect(server.url)]
        await asyncio.gather(publish_all(pubs[0], "a"), publish_all(pubs[1], "b"))
        await sync(pubs[0], sub_nc)
        await sync(pubs[1], sub_nc)
        got = await drain_pending(sub)
        for name in ("a", "b"):
            seq = [int(m.data) for m in got if m.subject == f"flow.{name}"]
            assert seq == list(range(per_publisher)), f"publisher {name}: lost or reordered"
        assert len(got) == 2 * per_publisher
        assert sub_nc._test_errors == []
        for nc in [sub_nc, *pubs]:
            await nc.close()

    run(scenario)


# --- reconnect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_reconnect_after_server_restart_on_same_port(kind: str, crash: bool, tmp_path: pathlib.Path) -> None:
    with running_server(kind, tmp_path) as proc:
        run(reconnect_scenario, proc, crash)


async def reconnect_scenario(proc: ServerProcess, crash: bool) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await connect(
        proc.url, allow_reconnect=True, reconnect_time_wait=0.05, max_reconnect_attempts=1000,
        reconnected_cb=on_reconnect,
    )
    sub = await nc.subscribe("after.restart")
    await sync(nc)
    await asyncio.to_thread(proc.restart, 15.0, crash)
    await asyncio.wait_for(reconnected.wait(), 25)  # a loaded machine may start slowly
    await nc.publish("after.restart", b"still here")
    await sync(nc)
    assert [m.data for m in await drain_pending(sub)] == [b"still here"]
    await nc.close()


# --- more client-visible behaviour -------------------------------------------------------------------


def test_no_echo_suppresses_own_messages_only(server: ServerProcess) -> None:
    async def scenario() -> None:
        quiet, other = await connect(server.url, no_echo=True), await connect(server.url)
        own = await quiet.subscribe("echo.test")
        await sync(quiet, other)  # (a self-sync cannot work: no_echo hides it from quiet itself)
        await quiet.publish("echo.test", b"mine")
        await other.publish("echo.test", b"theirs")
        await sync(quiet, other)
        await sync(other, quiet)
        assert [m.data for m in await drain_pending(own)] == [b"theirs"]

    run(scenario)


def test_each_matching_subscription_gets_its_own_copy(server: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(server.url)
        subs = [await nc.subscribe("copy.me"), await nc.subscribe("copy.me"), await nc.subscribe("copy.*")]
        await nc.publish("copy.me", b"one")
        await sync(nc)
        assert [[m.data for m in await drain_pending(s)] for s in subs] == [[b"one"]] * 3

    run(scenario)


def test_request_with_several_responders_returns_one_reply(server: ServerProcess) -> None:
    async def scenario() -> None:
        responders = [await connect(server.url) for _ in range(3)]
        for i, nc in enumerate(responders):

            async def answer(msg: Any, i: int = i) -> None:
                await msg.respond(b"r%d" % i)

            await nc.subscribe("multi.svc", cb=answer)
            await sync(nc)
        client = await connect(server.url)
        reply = await client.request("multi.svc", b"?", timeout=5)
        assert reply.data in {b"r0", b"r1", b"r2"}

    run(scenario)


def test_drain_delivers_everything_already_sent_then_closes(server: ServerProcess) -> None:
    async def scenario() -> None:
        got: list[bytes] = []
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)

        async def collect(msg: Any) -> None:
            got.append(msg.data)

        await sub_nc.subscribe("drain.me", cb=collect)
        await sync(sub_nc)
        for i in range(500):
            await pub_nc.publish("drain.me", b"%d" % i)
        await sync(pub_nc, sub_nc)
        await sub_nc.drain()
        assert sub_nc.is_closed
        assert got == [b"%d" % i for i in range(500)]

    run(scenario)


# --- configured limits (config file with nats-server key names) -------------------------------------


def test_max_connections_refuses_the_next_client(kind: str, tmp_path: pathlib.Path) -> None:
    with running_server(kind, tmp_path, {"max_connections": 2}) as proc:
        holders = hold_connections(proc.port, 2)
        try:
            received, closed = raw_exchange(proc.port, b"CONNECT {}\r\nPING\r\n", timeout_s=5)
            assert b"-ERR 'maximum connections exceeded'\r\n" in received
            assert closed
        finally:
            for sock in holders:
                sock.close()


def hold_connections(port: int, count: int, attempts: int = 50) -> list[socket.socket]:
    """Open `count` accepted connections (handshake done). A closed connection (e.g. the launcher's
    readiness probe) may still occupy a slot for a moment, so a refused attempt is retried."""
    held: list[socket.socket] = []
    for _ in range(attempts):
        if len(held) == count:
            return held
        sock = socket.create_connection((LOOPBACK, port), timeout=5)
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        if b"PONG\r\n" in read_until(sock, b"PONG\r\n", deadline_s=5):  # refused: -ERR and close
            held.append(sock)
        else:
            sock.close()
    raise AssertionError(f"could not hold {count} connections in {attempts} attempts")


def test_unanswered_server_pings_end_in_stale_connection(kind: str, tmp_path: pathlib.Path) -> None:
    with running_server(kind, tmp_path, {"ping_interval": "200ms", "ping_max": 2}) as proc:
        run(stale_scenario, proc)


async def stale_scenario(proc: ServerProcess) -> None:
    """A raw client that never answers is dropped; nats-py, which answers PINGs, stays."""
    polite = await connect(proc.url)
    received, closed = await asyncio.to_thread(
        raw_exchange, proc.port, b'CONNECT {"verbose":false}\r\n', 10.0, 0
    )
    assert closed
    assert received.count(b"PING\r\n") >= 2
    assert received.endswith(b"-ERR 'Stale Connection'\r\n")
    assert polite.is_connected and polite._test_errors == []  # type: ignore[attr-defined]
    await sync(polite)


def test_slow_consumer_is_disconnected_and_publisher_is_not(kind: str, tmp_path: pathlib.Path) -> None:
    chunk = b"PUB slow 32768\r\n" + b"s" * 32768 + b"\r\n"
    limits = {"max_pending": 262144, "max_payload": 65536}  # nats-server wants max_payload <= max_pending
    with running_server(kind, tmp_path, limits) as proc:
        with socket.create_connection((LOOPBACK, proc.port), timeout=10) as lazy:
            lazy.sendall(b'CONNECT {"verbose":false}\r\nSUB slow 1\r\nPING\r\n')
            assert b"PONG" in read_until(lazy, b"PONG\r\n", deadline_s=10)
            # 32 MiB to a subscriber that does not read: far beyond kernel buffers + max_pending.
            received, closed = raw_exchange(proc.port, b'CONNECT {"verbose":false}\r\n' + chunk * 1024 + b"PING\r\n", 30)
            assert not closed and received.endswith(b"PONG\r\n"), "the publisher must stay connected"
            drained = read_until(lazy, None, deadline_s=20)
            assert len(drained) < len(chunk) * 1024, "the slow consumer should have lost its connection"


def read_until(sock: socket.socket, marker: bytes | None, deadline_s: float) -> bytes:
    """Read until `marker` is seen, or until the peer closes when marker is None (with a deadline)."""
    import time

    deadline = time.monotonic() + deadline_s
    data = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
        if marker is not None and marker in data:
            return bytes(data)
    raise TimeoutError(f"deadline passed after {len(data)} bytes")


# --- sizes and concurrency -------------------------------------------------------------------------


def test_payloads_of_awkward_sizes_round_trip_byte_exact(server: ServerProcess) -> None:
    import random

    rng = random.Random(11)
    sizes = [0, 1, 2, 4095, 4096, 4097, 65535, 65537, 300_000, 1024 * 1024]

    async def scenario() -> None:
        sub_nc, pub_nc = await connect(server.url), await connect(server.url)
        sub = await sub_nc.subscribe("sizes")
        await sync(sub_nc)
        bodies = [rng.randbytes(n) for n in sizes]
        bodies[3] = (b"\r\nPUB x 1\r\n" * 500)[:4095]  # protocol-looking bytes inside a payload
        for i, body in enumerate(bodies):
            with_headers = i % 2 and len(body) < nc_max(pub_nc)  # headers count toward max_payload
            await pub_nc.publish("sizes", body, headers={"I": str(i)} if with_headers else None)
        await sync(pub_nc, sub_nc)
        got = await drain_pending(sub)
        assert [m.data for m in got] == bodies

    run(scenario)


def nc_max(nc: Client) -> int:
    return int(nc.max_payload)


def test_hundred_clients_each_get_their_own_reply(server: ServerProcess) -> None:
    clients = 100

    async def scenario() -> None:
        svc = await connect(server.url)

        async def answer(msg: Any) -> None:
            await msg.respond(b"for:" + msg.data)

        await svc.subscribe("many.clients", cb=answer, queue="svc")
        await sync(svc)
        conns = await asyncio.gather(*(connect(server.url) for _ in range(clients)))
        replies = await asyncio.gather(
            *(nc.request("many.clients", b"%d" % i, timeout=15) for i, nc in enumerate(conns))
        )
        assert [r.data for r in replies] == [b"for:%d" % i for i in range(clients)]

    run(scenario)

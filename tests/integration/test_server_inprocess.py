"""The core server run in-process under trio, driven by raw sockets.

Each test starts a `Server` on an ephemeral loopback port inside the test's nursery and talks
NATS bytes to it; replies are decoded with the client-side protocol parser. Every wait is on a
condition with a deadline (`trio.fail_after`), never a sleep.
"""

from __future__ import annotations

import json

import attrs
import pytest
import trio

from natsd import protocol as p
from natsd.client import CloseReason
from natsd.config import ServerOptions
from natsd.server import Server

HOST = "127.0.0.1"
QUIET = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":true}\r\n'
DEADLINE_S = 5


class Raw:
    """A raw-socket client: send bytes, read decoded server operations."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = p.Parser(server_side=False, max_payload=1 << 30)
        self.pending: list = []
        self.eof = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def op(self):
        with trio.fail_after(DEADLINE_S):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def ops(self, count: int) -> list:
        return [await self.op() for _ in range(count)]

    async def closed_after(self) -> list:
        """Read until the server closes; return the operations seen before that."""
        seen = list(self.pending)
        self.pending.clear()
        with trio.fail_after(DEADLINE_S):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return seen
                if not data:
                    return seen
                seen.extend(self.parser.feed(data))

    async def handshake(self, connect: bytes = QUIET) -> p.Info:
        info = await self.op()
        await self.send(connect + b"PING\r\n")
        assert await self.op() == p.PONG
        if b'"protocol":1' in connect:
            assert (await self.op()).info["connect_info"] is True
        return info

    async def roundtrip(self) -> None:
        """PING and wait for PONG: everything sent before has been processed."""
        await self.send(b"PING\r\n")
        while (op := await self.op()) != p.PONG:
            if not isinstance(op, p.Info):
                self.pending.insert(0, op)
                raise AssertionError(f"unexpected {op!r} before PONG")


@pytest.fixture
async def start(nursery):
    servers: list[Server] = []

    async def _start(**options) -> Server:
        server = Server(ServerOptions(host=HOST, port=0, seed=7, **options))
        await nursery.start(server.serve)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        await server.shutdown(timeout_s=1)


async def connect(server: Server, connect_line: bytes | None = QUIET) -> Raw:
    raw = Raw(await trio.open_tcp_stream(HOST, server.port))
    if connect_line is not None:
        await raw.handshake(connect_line)
    return raw


async def wait_until(predicate, timeout_s: float = DEADLINE_S) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.005)


# -- handshake ---------------------------------------------------------------------------------


async def test_info_first_then_pong_then_connect_info(start) -> None:
    server = await start()
    raw = Raw(await trio.open_tcp_stream(HOST, server.port))
    info = await raw.op()
    assert isinstance(info, p.Info)
    major, minor, _ = (int(x) for x in info.info["version"].split("."))
    assert major == 2 and minor >= 10
    assert info.info["headers"] is True and info.info["proto"] == 1
    assert info.info["max_payload"] == 1024 * 1024 and info.info["client_ip"] == HOST
    assert info.info["server_id"] == server.server_id and "jetstream" not in info.info
    await raw.send(QUIET + b"PING\r\n")
    assert await raw.op() == p.PONG
    second = await raw.op()
    assert isinstance(second, p.Info) and second.info["connect_info"] is True
    await raw.send(b"PING\r\n")
    assert await raw.op() == p.PONG  # the connect_info INFO comes only once


async def test_protocol_zero_client_gets_no_async_info(start) -> None:
    server = await start(jetstream=True)
    raw = Raw(await trio.open_tcp_stream(HOST, server.port))
    assert (await raw.op()).info["jetstream"] is True
    await raw.send(b'CONNECT {"verbose":false}\r\nPING\r\nPING\r\n')
    assert await raw.ops(2) == [p.PONG, p.PONG]


async def test_verbose_defaults_ok_after_each_op(start) -> None:
    server = await start()
    raw = await connect(server, None)
    await raw.op()
    await raw.send(b"CONNECT {}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nUNSUB 1\r\nPING\r\n")
    assert await raw.ops(6) == [p.OK, p.OK, p.OK, p.Msg("foo", "1", None, None, b"hi"), p.OK, p.PONG]


async def test_pedantic_flags_wildcard_publish_but_delivers(start) -> None:
    server = await start()
    raw = await connect(server, b'CONNECT {"verbose":false,"pedantic":true}\r\n')
    await raw.send(b"SUB foo.* 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")
    assert await raw.ops(3) == [
        p.Err("Invalid Publish Subject"),
        p.Msg("foo.*", "1", None, None, b"x"),
        p.PONG,
    ]


# -- errors ------------------------------------------------------------------------------------


async def test_invalid_subject_keeps_connection(start) -> None:
    server = await start()
    raw = await connect(server)
    await raw.send(b"SUB foo.. 1\r\nSUB .foo 2\r\nSUB foo.>.bar 3\r\nPING\r\n")
    assert await raw.ops(4) == [p.Err("Invalid Subject")] * 3 + [p.PONG]
    assert server.sublist.count() == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"FOO\r\n", "Unknown Protocol Operation"),
        (b"PUB foo 99999999\r\n", "Maximum Payload Violation"),
        (b"PUB foo 3\r\nabcd\r\n", "Unknown Protocol Operation"),
        (b"PUB " + b"x" * 5000 + b" 1\r\n", "maximum control line exceeded"),
        (b'CONNECT {"protocol":2}\r\n', "invalid client protocol"),
        (b'CONNECT {"no_responders":true}\r\n', "no responders requires headers support"),
    ],
)
async def test_fatal_errors_send_err_and_close(start, data: bytes, error: str) -> None:
    server = await start()
    raw = await connect(server, None)
    await raw.op()
    await raw.send(b'CONNECT {"verbose":false}\r\n' + data)
    assert await raw.closed_after() == [p.Err(error)]
    await wait_until(lambda: not server.clients)


async def test_hpub_without_headers_support_closes_silently(start) -> None:
    server = await start()
    raw = await connect(server, b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    await raw.send(b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n")
    assert await raw.closed_after() == []


# -- routing -----------------------------------------------------------------------------------


async def test_wildcards_reply_and_overlapping_subs(start) -> None:
    server = await start()
    raw = await connect(server)
    await raw.send(b"SUB a.* 1\r\nSUB a.> 2\r\nSUB a.b 3\r\nSUB b 4\r\nPUB a.b r 1\r\nx\r\nPING\r\n")
    got = await raw.ops(4)
    assert got[-1] == p.PONG
    assert sorted(op.sid for op in got[:3]) == ["1", "2", "3"]
    assert all(op.subject == "a.b" and op.reply == "r" for op in got[:3])


async def test_queue_group_delivers_each_message_once(start) -> None:
    server = await start()
    members = [await connect(server) for _ in range(3)]
    for i, member in enumerate(members):
        await member.send(b"SUB work q %d\r\n" % i)
        await member.roundtrip()
    plain = await connect(server)
    await plain.send(b"SUB work 9\r\n")
    await plain.roundtrip()
    pub = await connect(server)
    count = 60
    await pub.send(b"".join(b"PUB work %d\r\n%d\r\n" % (len(b"%d" % i), i) for i in range(count)))
    await pub.roundtrip()
    received: list[bytes] = []
    per_member = []
    for member in members:
        await member.send(b"PING\r\n")
        mine = []
        while (op := await member.op()) != p.PONG:
            mine.append(op.payload)
        per_member.append(len(mine))
        received.extend(mine)
    assert sorted(received) == sorted(b"%d" % i for i in range(count))
    assert all(n > 0 for n in per_member)  # 60 random picks over 3 members
    assert len(await plain.ops(count)) == count


async def test_echo_false_suppresses_own_messages(start) -> None:
    server = await start()
    raw = await connect(server, b'CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\n')
    other = await connect(server)
    await raw.send(b"SUB foo 1\r\n")
    await raw.roundtrip()
    await raw.send(b"PUB foo 1\r\na\r\n")
    await raw.roundtrip()
    await other.send(b"PUB foo 1\r\nb\r\n")
    await other.roundtrip()
    assert await raw.op() == p.Msg("foo", "1", None, None, b"b")


async def test_unsub_with_max_auto_unsubscribes(start) -> None:
    server = await start()
    raw = await connect(server)
    await raw.send(b"SUB foo 1\r\nUNSUB 1 2\r\n" + b"PUB foo 1\r\nx\r\n" * 3 + b"PING\r\n")
    assert await raw.ops(3) == [p.Msg("foo", "1", None, None, b"x")] * 2 + [p.PONG]
    assert server.sublist.count() == 0
    await raw.send(b"SUB bar 2\r\nPUB bar 1\r\ny\r\nUNSUB 2 1\r\nPUB bar 1\r\nz\r\nPING\r\n")
    assert await raw.ops(2) == [p.Msg("bar", "2", None, None, b"y"), p.PONG]


async def test_headers_passed_to_header_clients_stripped_for_others(start) -> None:
    server = await start()
    with_headers = await connect(server)
    without = await connect(server, b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    for raw in (with_headers, without):
        await raw.send(b"SUB h 1\r\n")
        await raw.roundtrip()
    block = b"NATS/1.0\r\nA: 1\r\n\r\n"
    await with_headers.send(p.encode_hpub("h", "r", block, b"body"))
    assert await with_headers.op() == p.Msg("h", "1", "r", block, b"body")
    assert await without.op() == p.Msg("h", "1", "r", None, b"body")


async def test_no_responders_status_for_requests(start) -> None:
    server = await start()
    opts = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
    raw = await connect(server, opts)
    await raw.send(b"SUB _INBOX.1 5\r\nPUB nobody _INBOX.1 1\r\nx\r\nPING\r\n")
    status = await raw.op()
    assert status == p.Msg("_INBOX.1", "5", None, b"NATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n", b"")
    assert await raw.op() == p.PONG


async def test_big_fanout_run_is_intact(start) -> None:
    server = await start()
    subs = [await connect(server) for _ in range(2)]
    for raw in subs:
        await raw.send(b"SUB run 1\r\n")
        await raw.roundtrip()
    pub = await connect(server)
    frames = [p.encode_pub("run", None, b"%05d" % i) for i in range(2000)]
    await pub.send(b"".join(frames))
    for raw in subs:
        got = [op.payload for op in await raw.ops(2000)]
        assert got == [b"%05d" % i for i in range(2000)]


# -- liveness and limits -----------------------------------------------------------------------


async def test_stale_connection_after_unanswered_pings(start) -> None:
    server = await start(ping_interval_s=0.05, max_pings_out=2)
    raw = await connect(server)
    assert await raw.closed_after() == [p.PING, p.PING, p.Err("Stale Connection")]


async def test_client_answering_pings_stays_connected(start) -> None:
    server = await start(ping_interval_s=0.02, max_pings_out=1)
    raw = await connect(server)
    for _ in range(5):
        assert await raw.op() == p.PING
        await raw.send(b"PONG\r\n")
    assert len(server.clients) == 1


async def test_max_connections_exceeded(start) -> None:
    server = await start(max_connections=1)
    first = await connect(server)
    second = Raw(await trio.open_tcp_stream(HOST, server.port))
    ops = await second.closed_after()
    assert isinstance(ops[0], p.Info)
    assert ops[1:] == [p.Err("maximum connections exceeded")]
    await first.roundtrip()


async def test_slow_consumer_is_closed_and_others_unaffected(start) -> None:
    server = await start(max_pending_bytes=256 * 1024, write_deadline_s=2.0)
    slow = await connect(server)
    await slow.send(b"SUB big 1\r\n")
    await slow.roundtrip()
    good = await connect(server)
    await good.send(b"SUB ok 1\r\n")
    await good.roundtrip()
    (slow_client,) = [c for c in server.clients.values() if "1" in c.subs and c.subs["1"].subject == "big"]
    pub = await connect(server)
    frame = p.encode_pub("big", None, b"x" * 32768)
    with trio.fail_after(20):
        for _ in range(4000):  # bounded: 128 MiB at most
            if slow_client.closing:
                break
            await pub.send(frame * 8)
    assert slow_client.close_reason is CloseReason.SLOW_CONSUMER
    await pub.send(b"PUB ok 2\r\nhi\r\n")
    assert await good.op() == p.Msg("ok", "1", None, None, b"hi")


async def test_misbehaving_client_next_to_good_one(start) -> None:
    server = await start()
    good = await connect(server)
    await good.send(b"SUB news 1\r\n")
    await good.roundtrip()
    for garbage in (b"\x00\xff\xfe\r\n", b"PUB news 5\r\nab\r\nxyz\r\n", b"CONNECT {\r\n", b"SUB\r\n"):
        bad = await connect(server, None)
        await bad.op()
        await bad.send(garbage)
        await bad.closed_after()
    await good.send(b"PUB news 2\r\nok\r\n")
    assert await good.op() == p.Msg("news", "1", None, None, b"ok")
    await wait_until(lambda: len(server.clients) == 1)


# -- internal client API and shutdown ----------------------------------------------------------


async def test_internal_subscribe_and_publish(start) -> None:
    server = await start()
    seen: list[tuple] = []
    handle = server.subscribe_internal("svc.>", None, lambda *msg: seen.append(msg))
    server.subscribe_internal("svc.>", None, lambda *msg: 1 / 0)  # a broken handler is contained
    raw = await connect(server)
    await raw.send(b"SUB reply.1 7\r\n")
    await raw.send(p.encode_hpub("svc.echo", "reply.1", b"NATS/1.0\r\n\r\n", b"ping"))
    await raw.roundtrip()
    assert seen == [("svc.echo", "reply.1", b"NATS/1.0\r\n\r\n", b"ping")]
    server.publish_internal("reply.1", None, None, b"pong")
    assert await raw.op() == p.Msg("reply.1", "7", None, None, b"pong")
    handle.unsubscribe()
    await raw.send(b"PUB svc.x 0\r\n\r\n")
    await raw.roundtrip()
    assert len(seen) == 1
    assert server.has_interest("reply.1") and not server.has_interest("deliver.none")
    assert not server.deliver_to("deliver.none", "orders.1", None, None, b"x")
    assert server.deliver_to("reply.1", "orders.1", "ack.1", b"NATS/1.0\r\n\r\n", b"m")
    assert await raw.op() == p.Msg("orders.1", "7", "ack.1", b"NATS/1.0\r\n\r\n", b"m")


async def test_shutdown_flushes_and_closes_clients(nursery) -> None:
    server = Server(ServerOptions(host=HOST, port=0))
    await nursery.start(server.serve)
    raw = await connect(server)
    server.publish_internal("x", None, None, b"")  # nobody listens: a no-op
    await raw.send(b"SUB last 1\r\n")
    await raw.roundtrip()
    server.publish_internal("last", None, None, b"bye")
    await server.shutdown(timeout_s=2)
    assert await raw.closed_after() == [p.Msg("last", "1", None, None, b"bye")]
    assert not server.clients


def test_options_are_frozen_values() -> None:
    options = ServerOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.port = 1  # type: ignore[misc]
    assert json.loads(p.encode_info({"a": options.port})[5:]) == {"a": 4222}


async def test_cli_server_logs_ready_and_exits_cleanly_on_sigterm() -> None:
    """`jetraft server` as a process: a `server.ready ... port=N` line, then SIGTERM flushes,
    closes clients and exits 0. (The one test here that is not in-process.)"""
    import signal
    import socket
    import subprocess
    import sys

    probe = socket.socket()
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    cmd = [sys.executable, "-m", "cli.main", "server", "-p", str(port), "-a", HOST, "--log_json"]
    proc = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE)
    log = b""
    try:
        with trio.fail_after(20):
            while b'"server.ready"' not in log:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, f"server exited early: {log!r}"
                log += chunk
        assert f'"port": {port}'.encode() in log
        raw = Raw(await trio.open_tcp_stream(HOST, port))
        await raw.handshake()
        proc.send_signal(signal.SIGTERM)
        assert await raw.closed_after() == []
        with trio.fail_after(DEADLINE_S):
            while chunk := await proc.stderr.receive_some(4096):
                log += chunk
            assert await proc.wait() == 0
        assert b'"server.stopped"' in log
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


async def test_queue_member_used_up_mid_run_passes_the_rest_on(start) -> None:
    server = await start()
    limited = await connect(server)
    await limited.send(b"SUB job q 1\r\nUNSUB 1 1\r\n")
    await limited.roundtrip()
    spare = await connect(server)
    await spare.send(b"SUB job q 2\r\n")
    await spare.roundtrip()
    pub = await connect(server)
    await pub.send(b"PUB job 1\r\nx\r\n" * 20)  # one run of 20 identical frames
    await pub.roundtrip()
    await limited.send(b"PING\r\n")
    got_limited = []
    while (op := await limited.op()) != p.PONG:
        got_limited.append(op)
    assert len(got_limited) <= 1
    assert len(await spare.ops(20 - len(got_limited))) == 20 - len(got_limited)

"""Cluster routes in-process: several `Server`s under trio in one test, raw protocol clients.

Cheaper and more precise than the process tests in test_routes.py: the tests look at the route
manager's own state (`cluster.routes`, each route's remote-interest table) to wait for exactly
the condition they need (a condition polled with a deadline, never a sleep). Covered here:
duplicate dials between mutual seeds (both ends keep the same connection), a cut route
re-registering with its interest re-sent, async INFO to protocol-1 clients when a peer joins,
refused handshakes (cluster name, route to self), a seeded model check of routed delivery
(plain subscriptions once each, each queue group exactly once across the cluster), and the exact
frames a node sends to a scripted peer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio

from cli.benchlib.launcher import LOOPBACK, free_port
from natsd import protocol as p
from natsd import route_protocol as rp
from natsd.config import ServerOptions
from natsd.server import Server
from tests.integration.raw_support import RawBase

CLUSTER = "routes-test"
DEADLINE_S = 15.0



QUIET = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":true}\r\n'


class Raw(RawBase):
    """A raw protocol client over a trio stream: send bytes, read decoded server operations."""

    deadline_s = DEADLINE_S
    max_payload = 1 << 24

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.passed: list[p.Msg] = []  # messages read past while waiting for a PONG

    async def msg(self) -> p.Msg:
        if self.passed:
            return self.passed.pop(0)
        while not isinstance(op := await self.op(), p.Msg):
            pass
        return op

    async def roundtrip(self) -> None:
        """PING -> PONG: everything sent before was processed; messages read on the way are
        kept in `passed`."""
        await self.send(b"PING\r\n")
        while (op := await self.op()) != p.PONG:
            if isinstance(op, p.Msg):
                self.passed.append(op)

    def take(self) -> list[p.Msg]:
        out, self.passed = self.passed, []
        return out


async def raw_client(server: Server) -> Raw:
    raw = Raw(await trio.open_tcp_stream(LOOPBACK, server.port))
    assert isinstance(await raw.op(), p.Info)
    await raw.send(QUIET + b"PING\r\n")
    assert await raw.op() == p.PONG
    assert (await raw.op()).info["connect_info"] is True
    return raw


async def wait_until(predicate: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.005)  # polling interval of a condition wait


@pytest.fixture
async def start_node(nursery: trio.Nursery):
    async def _start(**options: Any) -> Server:
        opts = {"cluster_name": CLUSTER, **options}
        server = Server(ServerOptions(host=LOOPBACK, port=0, cluster_host=LOOPBACK, **opts))
        await nursery.start(server.serve)
        return server

    return _start


def route_url_of(server: Server) -> str:
    assert server.cluster is not None
    return f"nats-route://{LOOPBACK}:{server.cluster.port}"


async def test_mutual_seeds_keep_one_route_and_deliver_once(start_node) -> None:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"nats://{LOOPBACK}:{port_a}", f"nats://{LOOPBACK}:{port_b}"
    a = await start_node(cluster_port=port_a, routes=(url_b,), seed=1)
    b = await start_node(cluster_port=port_b, routes=(url_a,), seed=2)
    assert a.cluster is not None and b.cluster is not None
    await wait_until(lambda: a.server_id in b.cluster.routes and b.server_id in a.cluster.routes)
    ab, ba = a.cluster.routes[b.server_id], b.cluster.routes[a.server_id]
    assert ab.solicited != ba.solicited, "both ends kept the same TCP connection"
    dialler = a if ab.solicited else b
    assert dialler.server_id == min(a.server_id, b.server_id)
    sub, pub = await raw_client(b), await raw_client(a)
    await sub.send(b"SUB dup.check 1\r\n")
    await sub.roundtrip()
    await wait_until(lambda: bool(ab.interest("dup.check")[0]))
    await pub.send(b"PUB dup.check 2\r\nhi\r\nPUB dup.check 3\r\nbye\r\n")
    assert [(await sub.msg()).payload for _ in range(2)] == [b"hi", b"bye"]
    await pub.roundtrip()
    await sub.roundtrip()
    assert not sub.take() and not [op for op in sub.pending if isinstance(op, p.Msg)]


async def test_route_drop_reconnects_and_interest_is_resent(start_node) -> None:
    a = await start_node(cluster_port=0)
    b = await start_node(cluster_port=0, routes=(route_url_of(a),))
    assert a.cluster is not None and b.cluster is not None
    assert await b.cluster.wait_routes(1, DEADLINE_S)
    on_a = await raw_client(a)
    await on_a.send(b"SUB keep.* 1\r\nSUB keep.q grp 2\r\n")
    await on_a.roundtrip()
    await wait_until(lambda: b.cluster.remote_matches("keep.q") != [])
    first = b.cluster.routes[a.server_id]
    first.close("test: cut the route")
    await wait_until(lambda: a.server_id in b.cluster.routes
                     and b.cluster.routes[a.server_id] is not first)
    second = b.cluster.routes[a.server_id]
    await wait_until(lambda: second.interest("keep.q") == (True, {"grp": 1}))
    on_b = await raw_client(b)
    await on_b.send(b"PUB keep.q 1\r\nx\r\n")
    got = [await on_a.msg(), await on_a.msg()]
    assert sorted(m.sid for m in got) == ["1", "2"]


async def test_protocol_one_client_learns_new_peer_by_async_info(start_node) -> None:
    a = await start_node(cluster_port=0)
    client = await raw_client(a)
    b = await start_node(cluster_port=0, routes=(route_url_of(a),))
    info = await client.op()
    while isinstance(info, p.Info) and len(info.info.get("connect_urls", [])) < 2:
        info = await client.op()
    assert isinstance(info, p.Info)
    assert f"{LOOPBACK}:{b.port}" in info.info["connect_urls"]
    assert info.info["cluster"] == CLUSTER


async def test_cluster_name_mismatch_and_self_route_are_refused(start_node) -> None:
    a = await start_node(cluster_port=0)
    assert a.cluster is not None
    other = await start_node(cluster_port=0, cluster_name="other", routes=(route_url_of(a),))
    assert other.cluster is not None
    await wait_until(lambda: a.cluster.rejections + other.cluster.rejections >= 1)
    assert not a.cluster.routes and not other.cluster.routes
    port = free_port()
    lonely = await start_node(cluster_port=port, routes=(f"nats://{LOOPBACK}:{port}",))
    assert lonely.cluster is not None
    await wait_until(lambda: lonely.cluster.rejections >= 1)
    assert not lonely.cluster.routes


# -- seeded model check: plain subs get every match once, each queue group exactly once --------

PATTERNS = ["m.a", "m.*", "m.>", "m.a.b", "m.*.b"]
PUBLISHED = ["m.a", "m.a.b", "m.b", "m.c.b"]
QUEUES = [None, None, "q1", "q2"]


def _matches(pattern: str, subject: str) -> bool:
    pt, st = pattern.split("."), subject.split(".")
    for i, token in enumerate(pt):
        if token == ">":
            return len(st) > i
        if i >= len(st) or (token != "*" and token != st[i]):
            return False
    return len(pt) == len(st)


def _interest_settled(nodes: list[Server]) -> bool:
    """Every node's copy of every peer's interest equals that peer's local client interest."""
    for x in nodes:
        assert x.cluster is not None
        for y in nodes:
            if x is y:
                continue
            assert y.cluster is not None
            conn = x.cluster.routes.get(y.server_id)
            if conn is None or set(conn.remote.interest()) != set(y.cluster.local):
                return False
    return True


async def test_seeded_rounds_match_the_delivery_model(start_node) -> None:
    seed = 20261126
    rnd = random.Random(seed)
    a = await start_node(cluster_port=0, seed=11)
    b = await start_node(cluster_port=0, routes=(route_url_of(a),), seed=12)
    c = await start_node(cluster_port=0, routes=(route_url_of(a),), seed=13)
    nodes = [a, b, c]
    await wait_until(lambda: all(len(n.cluster.routes) == 2 for n in nodes if n.cluster))
    raws = [await raw_client(n) for n in nodes]
    for round_no in range(10):
        subs = [(rnd.randrange(3), f"{round_no}x{i}", rnd.choice(PATTERNS), rnd.choice(QUEUES))
                for i in range(rnd.randint(2, 9))]
        spread = rnd.choice(PATTERNS)  # one group with members on every node, every round
        subs += [(i, f"{round_no}s{i}", spread, "qs") for i in range(3)]
        for node_i, sid, pattern, queue in subs:
            q = f" {queue}" if queue else ""
            await raws[node_i].send(f"SUB {pattern}{q} {sid}\r\n".encode())
        for raw in raws:
            await raw.roundtrip()
        await wait_until(lambda: _interest_settled(nodes))
        sent = [(rnd.randrange(3), rnd.choice(PUBLISHED), f"{round_no}-{k}") for k in range(12)]
        for node_i, subject, body in sent:
            await raws[node_i].send(f"PUB {subject} {len(body)}\r\n{body}\r\n".encode())
        expected = 0
        for _, subject, _ in sent:
            matching = [s for s in subs if _matches(s[2], subject)]
            expected += sum(1 for s in matching if s[3] is None)
            expected += len({s[3] for s in matching if s[3] is not None})
        got: list[tuple[str, str]] = []  # (sid, payload)
        with trio.fail_after(DEADLINE_S):
            while len(got) < expected:
                for raw in raws:
                    await raw.roundtrip()
                    got.extend((m.sid, m.payload.decode()) for m in raw.take())
        for raw in raws:  # anything extra (a duplicate) would have arrived by now
            await raw.roundtrip()
            got.extend((m.sid, m.payload.decode()) for m in raw.take())
        by_sid = {s[1]: s for s in subs}
        for _, subject, body in sent:
            receivers = [by_sid[sid] for sid, pl in got if pl == body]
            matching = [s for s in subs if _matches(s[2], subject)]
            plain = sorted(s[1] for s in matching if s[3] is None)
            assert sorted(s[1] for s in receivers if s[3] is None) == plain, (seed, round_no, body)
            groups = sorted(s[3] for s in receivers if s[3] is not None)
            assert groups == sorted({s[3] for s in matching if s[3] is not None}), (seed, body)
            assert all(_matches(s[2], subject) for s in receivers)
        for node_i, sid, _, _ in subs:
            await raws[node_i].send(f"UNSUB {sid}\r\n".encode())
        for raw in raws:
            await raw.roundtrip()
        await wait_until(lambda: _interest_settled(nodes))


# -- wire level: a scripted peer checks the exact route frames a jetraft node sends --------------

class FakePeer:
    """The accepting end of one route, scripted by the test, parsing with RouteParser."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parser = rp.RouteParser()
        self.pending: list = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def op(self) -> Any:
        with trio.fail_after(DEADLINE_S):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                assert data, "route closed"
                self.pending.extend(rp.flatten_route(self.parser.feed(data)))
        return self.pending.pop(0)

    async def ops_until(self, predicate: Callable[[Any], bool]) -> list:
        seen = []
        while not predicate(op := await self.op()):
            seen.append(op)
        return [*seen, op]


async def test_route_frames_on_the_wire(start_node, nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
    fake_port = listeners[0].socket.getsockname()[1]
    accepted: trio.MemorySendChannel
    accepted, incoming = trio.open_memory_channel(1)

    async def accept_one() -> None:
        await accepted.send(await listeners[0].accept())

    nursery.start_soon(accept_one)
    a = await start_node(cluster_port=0, routes=(f"nats-route://{LOOPBACK}:{fake_port}",))
    peer = FakePeer(await incoming.receive())
    client = await raw_client(a)  # subscribes before the route registers (on our INFO)
    await client.send(b"SUB pre.x 1\r\nSUB pre.q grp 2\r\nSUB pre.q grp 3\r\n")
    await client.roundtrip()
    await peer.send(p.encode_info({"server_id": "NFAKEPEER", "server_name": "fake", "cluster": CLUSTER,
                                   "ip": f"nats-route://{LOOPBACK}:{fake_port}/", "headers": True,
                                   "connect_urls": ["127.0.0.1:1"]}))
    connect, info = await peer.op(), await peer.op()
    assert isinstance(connect, p.Connect) and isinstance(info, p.Info)
    assert connect.options["name"] == a.server_id and connect.options["cluster"] == CLUSTER
    assert connect.options["verbose"] is False and connect.options["headers"] is True
    assert "lang" not in connect.options
    assert info.info["server_id"] == a.server_id and info.info["ip"].startswith("nats-route://")
    assert "route_pool_size" not in info.info
    interest = {await peer.op(), await peer.op()}
    assert interest == {rp.RouteSub("$G", "pre.x"), rp.RouteSub("$G", "pre.q", "grp", 2)}
    # the peer's interest, then client publishes routed to it
    await peer.send(b"RS+ $G to.fake\r\nRS+ $G to.q workers 1\r\nPING\r\n")
    assert await peer.op() == p.PONG
    await client.send(b"PUB to.fake 2\r\nhi\r\nPUB to.q _INBOX.r 1\r\nx\r\nHPUB to.fake 12 13\r\nNATS/1.0\r\n\r\ny\r\n")
    assert await peer.op() == rp.RouteMsg("$G", "to.fake", None, (), None, b"hi")
    assert await peer.op() == rp.RouteMsg("$G", "to.q", "_INBOX.r", ("workers",), None, b"x")
    assert await peer.op() == rp.RouteMsg("$G", "to.fake", None, (), b"NATS/1.0\r\n\r\n", b"y")
    # routed messages: plain subs always, a queue group only when named, one member of it
    await peer.send(b"RMSG $G pre.q | grp 3\r\nabc\r\nRMSG $G pre.q 3\r\ndef\r\nRMSG $G pre.x 1\r\nz\r\n")
    first, second = await client.msg(), await client.msg()
    assert (first.subject, first.sid in ("2", "3"), first.payload) == ("pre.q", True, b"abc")
    assert (second.sid, second.payload) == ("1", b"z")
    await client.roundtrip()
    assert not client.take()
    # interest withdrawn: RS- for the last plain sub, a new weight for the queue group
    await client.send(b"UNSUB 1\r\nUNSUB 3\r\n")
    assert await peer.op() == rp.RouteUnsub("$G", "pre.x")
    assert await peer.op() == rp.RouteSub("$G", "pre.q", "grp", 1)
    await peer.send(b"RS- $G to.fake\r\nPING\r\n")
    assert await peer.op() == p.PONG
    await client.send(b"PUB to.fake 1\r\nq\r\nPUB to.q 1\r\nw\r\n")
    assert await peer.op() == rp.RouteMsg("$G", "to.q", None, ("workers",), None, b"w")
    for listener in listeners:
        await listener.aclose()


async def test_route_authorization(start_node) -> None:
    auth = {"cluster_user": "ruser", "cluster_password": "s3cret"}
    a = await start_node(cluster_port=0, **auth)
    assert a.cluster is not None
    port = a.cluster.port
    good = await start_node(cluster_port=0, routes=(f"nats-route://ruser:s3cret@{LOOPBACK}:{port}",))
    assert good.cluster is not None and await good.cluster.wait_routes(1, DEADLINE_S)
    before = a.cluster.rejections
    bad = await start_node(cluster_port=0, routes=(f"nats-route://ruser:wrong@{LOOPBACK}:{port}",))
    assert bad.cluster is not None
    await wait_until(lambda: a.cluster.rejections > before)
    assert bad.server_id not in a.cluster.routes and not bad.cluster.routes
    stream = await trio.open_tcp_stream(LOOPBACK, port)  # the refusal text, on the wire
    peer = FakePeer(stream)
    assert (await peer.op()).info["auth_required"] is True
    await peer.send(p.encode_connect({"name": "NX", "cluster": CLUSTER, "user": "ruser", "pass": "x"}))
    assert await peer.op() == p.Err("Authorization Violation")


async def test_implicit_routes_can_be_turned_off(start_node) -> None:
    a = await start_node(cluster_port=0)
    assert a.cluster is not None
    seed = (route_url_of(a),)
    b = await start_node(cluster_port=0, routes=seed, cluster_implicit_routes=False)
    c = await start_node(cluster_port=0, routes=seed, cluster_implicit_routes=False)
    assert b.cluster is not None and c.cluster is not None
    assert await a.cluster.wait_routes(2, DEADLINE_S)
    await wait_until(lambda: b.cluster.gossip_seen + c.cluster.gossip_seen >= 1)
    assert set(b.cluster.routes) == {a.server_id} and set(c.cluster.routes) == {a.server_id}


async def test_unique_inbox_requests_and_replies_cross_routes_without_filling_caches(start_node) -> None:
    """Requests with a unique `_INBOX.` reply each, and their replies, cross the route both
    ways intact, while no inbox subject is admitted to a route-interest, sublist or route-line
    cache on either node (each would push a repeating subject out)."""
    a = await start_node(cluster_port=0)
    b = await start_node(cluster_port=0, routes=(route_url_of(a),))
    assert a.cluster is not None and b.cluster is not None
    assert await b.cluster.wait_routes(1, DEADLINE_S)
    service, requester = await raw_client(a), await raw_client(b)
    await service.send(b"SUB svc 1\r\n")
    await requester.send(b"SUB _INBOX.t.* 7\r\n")
    await service.roundtrip()
    await requester.roundtrip()
    ab, ba = a.cluster.routes[b.server_id], b.cluster.routes[a.server_id]
    await wait_until(lambda: bool(ba.interest("svc")[0]) and bool(ab.interest("_INBOX.t.0", once=True)[0]))
    n = 40
    await requester.send(b"".join(b"PUB svc _INBOX.t.%d 1\r\n%d\r\n" % (i, i % 10) for i in range(n)))
    requests = [await service.msg() for _ in range(n)]
    assert [(m.subject, m.reply, m.payload) for m in requests] == [
        ("svc", f"_INBOX.t.{i}", b"%d" % (i % 10)) for i in range(n)]
    await service.send(b"".join(b"PUB %s 2\r\nok\r\n" % m.reply.encode() for m in requests))
    replies = [await requester.msg() for _ in range(n)]
    assert [(m.subject, m.sid, m.payload) for m in replies] == [
        (f"_INBOX.t.{i}", "7", b"ok") for i in range(n)]
    for node, route in ((a, ab), (b, ba)):
        assert node.cluster is not None
        assert not [s for s in node.cluster._remote_cache if s.startswith("_INBOX.")]
        assert not [s for s in route.remote._cache if s.startswith("_INBOX.")]
        assert not [line for line in route.parser._cache if b"_INBOX." in line]
    # the replies reached b by route (a client's own publish on a goes through the server's
    # route cache, not this path)
    assert not [s for s in b.sublist._cache if s.startswith("_INBOX.")]


async def test_a_burst_of_large_inbox_requests_and_replies_crosses_routes_in_order(start_node) -> None:
    """A JetStream-like burst (distinct `_INBOX.` replies, 1.5 MB each way: frames split across
    reads, and a direct route write the kernel may take only partly) arrives complete and in
    order both ways: the one-off run parser resumes split frames and the writer task finishes
    whatever a non-blocking write left."""
    a = await start_node(cluster_port=0)
    b = await start_node(cluster_port=0, routes=(route_url_of(a),))
    assert a.cluster is not None and b.cluster is not None
    assert await b.cluster.wait_routes(1, DEADLINE_S)
    service, requester = await raw_client(a), await raw_client(b)
    await service.send(b"SUB js.in 1\r\n")
    await requester.send(b"SUB _INBOX.big.* 7\r\n")
    await service.roundtrip()
    await requester.roundtrip()
    ab, ba = a.cluster.routes[b.server_id], b.cluster.routes[a.server_id]
    await wait_until(lambda: bool(ba.interest("js.in")[0]) and bool(ab.interest("_INBOX.big.0", once=True)[0]))
    n, size = 300, 5000
    body = [bytes([65 + i % 26]) * size for i in range(n)]
    await requester.send(b"".join(b"PUB js.in _INBOX.big.%d %d\r\n%s\r\n" % (i, size, body[i]) for i in range(n)))
    requests = [await service.msg() for _ in range(n)]
    assert [(m.subject, m.reply, m.payload) for m in requests] == [
        ("js.in", f"_INBOX.big.{i}", body[i]) for i in range(n)]
    await service.send(b"".join(b"PUB %s %d\r\n%s\r\n" % (m.reply.encode(), size, m.payload[::-1])
                                for m in requests))
    replies = [await requester.msg() for _ in range(n)]
    assert [(m.subject, m.sid, m.payload) for m in replies] == [
        (f"_INBOX.big.{i}", "7", body[i][::-1]) for i in range(n)]

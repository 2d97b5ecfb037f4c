"""Cluster routes end to end: three `jetraft server` processes, real nats-py clients.

The cluster is started once per module: node A seeds nothing but itself (a route to self must
be refused), B and C seed only A, so B <-> C exists only through gossip. A full mesh is
recognised from outside by every node's client INFO listing all three client URLs in
`connect_urls`. Interest propagation is asynchronous, so before publishing, a test waits on
`routed()`: each subscribing connection adds a probe subscription *after* its real ones and the
publisher publishes probes until each arrives; RS+ lines travel in order on one route, so once
the probe arrives the real interest is known too. Nodes are killed by PID and restarted on the
same ports by the tests that need it (and restarted in `finally`). No sleeps: every wait is a
condition polled against a deadline.

The last test routes a jetraft node to the reference nats-server (config file with
`cluster { name, listen, routes }`) and passes messages both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
import trio
from nats.aio.client import Client

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, free_port
from natsd import protocol as p
from natsd import route_protocol as rp
from natsd.config import ServerOptions
from natsd.server import Server

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = "routes-test"
DEADLINE_S = 15.0
SCENARIO_TIMEOUT_S = 40.0


class Node:
    """One jetraft server process with a client port and a cluster port."""

    def __init__(self, name: str, tmp: pathlib.Path, routes: list[str]) -> None:
        self.name = name
        self.client_port = free_port()
        self.cluster_port = free_port()
        args = ["-n", name, "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}",
                "--cluster_name", CLUSTER]
        if routes:
            args += ["--routes", ",".join(routes)]
        self.proc = ServerProcess(kind=ServerKind.JETRAFT, port=self.client_port, extra_args=args,
                                  log_path=tmp / f"{name}.log", cwd=REPO_ROOT)

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    @property
    def host_port(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


def read_info(port: int) -> dict:
    """The INFO a fresh connection to `port` receives."""
    with socket.create_connection((LOOPBACK, port), timeout=3.0) as sock:
        line = sock.makefile("rb").readline(65536)
    assert line.startswith(b"INFO "), line
    return json.loads(line[5:])


def wait_mesh(nodes: list[Node], timeout_s: float = DEADLINE_S) -> None:
    """Poll until every node advertises every node's client URL (a full mesh)."""
    want = {n.host_port for n in nodes}
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    delay_s = 0.02
    while time.monotonic() < deadline:
        seen = {n.name: set(read_info(n.client_port).get("connect_urls", [])) for n in nodes}
        if all(urls == want for urls in seen.values()):
            return
        time.sleep(delay_s)  # polling interval of a condition wait
        delay_s = min(delay_s * 2, 0.2)
    raise AssertionError(f"no full mesh within {timeout_s}s: {seen}")


def run(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run an asyncio (nats-py) scenario with an overall deadline."""
    return asyncio.run(asyncio.wait_for(scenario(*args), SCENARIO_TIMEOUT_S))


@contextlib.asynccontextmanager
async def clients(*urls: str, **options: Any):
    opened: list[Client] = []
    try:
        for url in urls:
            opened.append(await nats.connect(url, connect_timeout=2, allow_reconnect=False, **options))
        yield opened
    finally:
        for nc in opened:
            with contextlib.suppress(Exception):
                await nc.close()


async def routed(pub: Client, *subscribers: Client, timeout_s: float = DEADLINE_S) -> None:
    """Wait until interest registered so far on `subscribers` is known at `pub`'s server."""
    probes = []
    for nc in subscribers:
        subject = f"probe.{uuid.uuid4().hex}"
        probes.append((subject, await nc.subscribe(subject)))
        await nc.flush()
    deadline = time.monotonic() + timeout_s
    pending = list(probes)
    while pending:
        assert time.monotonic() < deadline, f"interest not routed: {[s for s, _ in pending]}"
        for subject, _ in pending:
            await pub.publish(subject, b"probe")
        await pub.flush()
        still = []
        for subject, sub in pending:
            try:
                await sub.next_msg(timeout=0.1)
            except nats.errors.TimeoutError:
                still.append((subject, sub))
        pending = still
    for _, sub in probes:
        await sub.unsubscribe()


async def collect(sub: Any, count: int, timeout_s: float = 5.0) -> list:
    return [await sub.next_msg(timeout=timeout_s) for _ in range(count)]


async def nothing_more(sub: Any, *barrier: Client) -> None:
    """After a round trip on each connection nothing more is queued on `sub`."""
    for nc in barrier:
        await nc.flush()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    tmp = tmp_path_factory.mktemp("routes")
    a = Node("A", tmp, [])
    a.proc.extra_args += ["--routes", a.route_url]  # a route to self is refused
    b = Node("B", tmp, [a.route_url])
    c = Node("C", tmp, [a.route_url])
    nodes = [a, b, c]
    try:
        for node in nodes:
            node.proc.start()
        wait_mesh(nodes)
        yield nodes
    except BaseException:
        for node in nodes:
            print(f"--- {node.name} log ---\n{node.proc.log_tail()}")
        raise
    finally:
        for node in nodes:
            node.proc.stop()


def test_full_mesh_from_one_seed_and_cluster_info(cluster: list[Node]) -> None:
    urls = {n.host_port for n in cluster}
    for node in cluster:
        info = read_info(node.client_port)
        assert info["cluster"] == CLUSTER
        assert set(info["connect_urls"]) == urls
    assert "route to self" in cluster[0].proc.log_tail(200_000)


def test_pub_on_a_reaches_sub_on_c(cluster: list[Node]) -> None:
    a, _, c = cluster

    async def scenario() -> None:
        async with clients(a.url, c.url) as (pub, sub_nc):
            sub = await sub_nc.subscribe("orders.new")
            await routed(pub, sub_nc)
            for i in range(20):
                headers = {"n": str(i)} if i % 2 else None
                await pub.publish("orders.new", b"order-%d" % i, headers=headers)
            got = await collect(sub, 20)
            assert [m.data for m in got] == [b"order-%d" % i for i in range(20)]
            assert [m.headers for m in got[1:4]] == [{"n": "1"}, None, {"n": "3"}]
            await nothing_more(sub, pub, sub_nc)

    run(scenario)


def test_wildcard_interest(cluster: list[Node]) -> None:
    _, b, c = cluster

    async def scenario() -> None:
        async with clients(b.url, c.url) as (pub, sub_nc):
            star = await sub_nc.subscribe("w.*.x")
            full = await sub_nc.subscribe("w.>")
            await routed(pub, sub_nc)
            for subject in ("w.1.x", "w.2.y", "z.1.x", "w.3.x.4"):
                await pub.publish(subject, subject.encode())
            assert [m.subject for m in await collect(star, 1)] == ["w.1.x"]
            assert [m.subject for m in await collect(full, 3)] == ["w.1.x", "w.2.y", "w.3.x.4"]
            await nothing_more(star, pub, sub_nc)
            await nothing_more(full)

    run(scenario)


def test_queue_group_across_nodes_each_message_once(cluster: list[Node]) -> None:
    a, b, c = cluster
    total = 90

    async def scenario() -> None:
        async with clients(a.url, b.url, c.url, a.url) as (na, nb, nc_, pub):
            members = [await nc.subscribe("jobs", queue="workers") for nc in (na, nb, nc_)]
            watcher = await nc_.subscribe("jobs")  # plain interest gets every message
            await routed(pub, na, nb, nc_)
            for i in range(total):
                await pub.publish("jobs", b"%d" % i)
            seen = await collect(watcher, total)
            assert sorted(int(m.data) for m in seen) == list(range(total))
            per_member = await gather_group(members, total, [pub, na, nb, nc_])
            received = sorted(int(m.data) for got in per_member for m in got)
            assert received == list(range(total)), "each message exactly once in the group"
            assert sum(1 for got in per_member if got) >= 2, [len(g) for g in per_member]

    run(scenario)


def drain(sub: Any) -> list:
    """Messages already delivered to `sub`'s queue (no waiting)."""
    out = []
    while not sub._pending_queue.empty():
        out.append(sub._pending_queue.get_nowait())
    return out


async def gather_group(members: list, total: int, conns: list[Client]) -> list[list]:
    """Collect queue-group deliveries until `total` arrived (deadline), then one more round
    trip on every connection so that a duplicate would show up too."""
    got: list[list] = [[] for _ in members]
    deadline = time.monotonic() + DEADLINE_S
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for nc in conns:
            await nc.flush()  # a round trip paces the loop
        for i, sub in enumerate(members):
            got[i].extend(drain(sub))
    for nc in conns:
        await nc.flush()
    for i, sub in enumerate(members):
        got[i].extend(drain(sub))
    return got


def test_request_reply_and_no_responders_across_nodes(cluster: list[Node]) -> None:
    a, _, c = cluster

    async def scenario() -> None:
        async with clients(a.url, c.url) as (requester, responder):
            async def handle(msg: Any) -> None:
                await msg.respond(b"re:" + msg.data)

            await responder.subscribe("svc.echo", cb=handle)
            await routed(requester, responder)
            for i in range(5):
                reply = await requester.request("svc.echo", b"%d" % i, timeout=5)
                assert reply.data == b"re:%d" % i
            with pytest.raises(nats.errors.NoRespondersError):
                await requester.request("svc.nobody", b"x", timeout=5)

    run(scenario)


def test_client_on_route_port_is_refused(cluster: list[Node]) -> None:
    port = cluster[1].cluster_port
    with socket.create_connection((LOOPBACK, port), timeout=5.0) as sock:
        reader = sock.makefile("rb")
        assert reader.readline(65536).startswith(b"INFO ")
        sock.sendall(b'CONNECT {"verbose":false,"lang":"python3","version":"2.16.0"}\r\nPING\r\n')
        lines = []
        while (line := reader.readline(65536)):  # until the server closes
            lines.append(line)
    assert b"-ERR 'attempted to connect to route port'\r\n" in lines


def test_killed_node_restarts_and_interest_is_restored(cluster: list[Node]) -> None:
    a, b, c = cluster

    async def scenario() -> None:
        async with clients(a.url) as (keeper,):
            kept = await keeper.subscribe("keep.alive")
            await keeper.flush()
            c.proc.kill()
            try:
                c.proc.start()
                wait_mesh(cluster)
                async with clients(c.url, b.url) as (pub_c, sub_b):
                    on_b = await sub_b.subscribe("after.restart")
                    await routed(pub_c, keeper, sub_b)
                    await pub_c.publish("keep.alive", b"still here")
                    await pub_c.publish("after.restart", b"new")
                    assert (await kept.next_msg(timeout=5)).data == b"still here"
                    assert (await on_b.next_msg(timeout=5)).data == b"new"
            finally:
                if not c.proc.alive():
                    c.proc.start()

    run(scenario)


def test_nats_py_fails_over_when_its_server_is_killed(cluster: list[Node]) -> None:
    a, b, _ = cluster
    wait_mesh(cluster)

    async def scenario() -> None:
        reconnected = asyncio.Event()

        async def on_reconnect() -> None:
            reconnected.set()

        roaming = await nats.connect(b.url, reconnect_time_wait=0.1, max_reconnect_attempts=50,
                                     connect_timeout=1, reconnected_cb=on_reconnect)
        try:
            known = {f"{u.hostname}:{u.port}" for u in (s.uri for s in roaming._server_pool)}
            assert {n.host_port for n in cluster} <= known, "connect_urls were not learned"
            sub = await roaming.subscribe("roam")
            await roaming.flush()
            b.proc.kill()
            await asyncio.wait_for(reconnected.wait(), DEADLINE_S)
            assert roaming.connected_url.port != b.client_port
            async with clients(a.url) as (pub,):
                await routed(pub, roaming)
                await pub.publish("roam", b"found you")
                assert (await sub.next_msg(timeout=5)).data == b"found you"
        finally:
            await roaming.close()
            if not b.proc.alive():
                b.proc.start()

    run(scenario)
    wait_mesh(cluster)


# -- interop with the reference nats-server ---------------------------------------------------

def test_routes_with_reference_nats_server(tmp_path: pathlib.Path) -> None:
    """nats-server and jetraft node J seed only J; jetraft node K seeds only J as well, so
    K <-> nats-server exists only through gossip in both implementations."""
    jr = Node("J", tmp_path, [])
    jr2 = Node("K", tmp_path, [jr.route_url])
    ref_client, ref_cluster = free_port(), free_port()
    config = tmp_path / "ref.conf"
    config.write_text(
        f'server_name: "ref"\ncluster {{\n  name: "{CLUSTER}"\n'
        f'  listen: "{LOOPBACK}:{ref_cluster}"\n  routes: ["{jr.route_url}"]\n}}\n'
    )
    ref = ServerProcess(kind=ServerKind.NATS_SERVER, port=ref_client, config=config,
                        log_path=tmp_path / "ref.log", cwd=REPO_ROOT)
    ref_url = f"nats://{LOOPBACK}:{ref_client}"

    async def scenario() -> None:
        async with clients(ref_url, jr.url, jr.url) as (on_ref, on_jr, on_jr2):
            from_jr = await on_ref.subscribe("to.ref.>")
            from_ref = await on_jr.subscribe("to.jr")
            workers = [await on_ref.subscribe("work", queue="q"), await on_jr2.subscribe("work", queue="q")]

            async def handle(msg: Any) -> None:
                await msg.respond(b"ref says " + msg.data)

            await on_ref.subscribe("ref.svc", cb=handle)
            await routed(on_jr, on_ref)
            await routed(on_ref, on_jr, on_jr2)
            await on_jr.publish("to.ref.x", b"hello ref", headers={"h": "1"})
            await on_ref.publish("to.jr", b"hello jr")
            got = await from_jr.next_msg(timeout=5)
            assert (got.subject, got.data, got.headers) == ("to.ref.x", b"hello ref", {"h": "1"})
            assert (await from_ref.next_msg(timeout=5)).data == b"hello jr"
            reply = await on_jr.request("ref.svc", b"hi", timeout=5)
            assert reply.data == b"ref says hi"
            for i in range(40):
                await (on_jr if i % 2 else on_ref).publish("work", b"%d" % i)
            per_member = await gather_group(workers, 40, [on_jr, on_ref, on_jr2])
            assert sorted(int(m.data) for got in per_member for m in got) == list(range(40))
        async with clients(jr2.url, ref_url) as (on_k, on_ref):
            from_k = await on_ref.subscribe("k.to.ref")
            await routed(on_k, on_ref)
            await on_k.publish("k.to.ref", b"via gossip")
            assert (await from_k.next_msg(timeout=5)).data == b"via gossip"
        info = read_info(jr2.client_port)
        assert {jr.host_port, jr2.host_port, f"{LOOPBACK}:{ref_client}"} <= set(info["connect_urls"])

    try:
        jr.proc.start()
        ref.start()
        jr2.proc.start()
        run(scenario)
    except BaseException:
        print(f"--- J log ---\n{jr.proc.log_tail()}\n--- K log ---\n{jr2.proc.log_tail()}\n"
              f"--- nats-server log ---\n{ref.log_tail()}")
        raise
    finally:
        ref.stop()
        jr2.proc.stop()
        jr.proc.stop()


# -- in-process clusters (trio): duplicate dials, route loss, async INFO, refusals -------------

QUIET = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":true}\r\n'


class Raw:
    """A raw protocol client over a trio stream: send bytes, read decoded server operations."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parser = p.Parser(server_side=False, max_payload=1 << 24)
        self.pending: list = []
        self.passed: list[p.Msg] = []  # messages read past while waiting for a PONG

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def op(self, timeout_s: float = DEADLINE_S) -> Any:
        with trio.fail_after(timeout_s):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

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


# -- configuration: nats-server's flag names and the TOML cluster block --------------------------

def test_cluster_flags_and_toml_block(tmp_path: pathlib.Path) -> None:
    from click.testing import CliRunner

    from cli.server import _options
    from cli.server import server as server_command

    config = tmp_path / "c.toml"
    config.write_text('[cluster]\nname = "fromfile"\nlisten = "127.0.0.1:7222"\n'
                      'routes = ["nats-route://h1:1", "nats-route://h2:2"]\n'
                      'advertise = "10.0.0.1:7222"\nno_advertise = true\nconnect_retries = 3\n')
    names = [param.name for param in server_command.params]
    flags: dict[str, Any] = dict.fromkeys(names)
    flags.update(debug_trace=False, config_file=str(config))
    options, unknown = _options(flags)
    assert unknown == []
    assert (options.cluster_name, options.cluster_host, options.cluster_port) == ("fromfile", LOOPBACK, 7222)
    assert options.routes == ("nats-route://h1:1", "nats-route://h2:2")
    assert options.cluster_advertise == "10.0.0.1:7222" and options.cluster_no_advertise
    flags.update(cluster_listen="nats://0.0.0.0:8222", routes="nats://a:1, nats://b:2",
                 cluster_name="flag", cluster_advertise="h:9")
    options, _ = _options(flags)
    assert (options.cluster_name, options.cluster_host, options.cluster_port) == ("flag", "0.0.0.0", 8222)
    assert options.routes == ("nats://a:1", "nats://b:2") and options.cluster_advertise == "h:9"
    result = CliRunner().invoke(server_command, ["--cluster", "nats://nohost"])
    assert result.exit_code != 0 and "--cluster" in result.output


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

"""Cluster routes end to end: three server processes, real nats-py clients; every cluster test
runs on three `jetraft server`s and, as a check of the test itself, on three reference
nats-servers.

The cluster is started once per module: node A seeds nothing but itself (a route to self must
be refused), B and C seed only A, so B <-> C exists only through gossip. A full mesh is
recognised from outside by every node's client INFO listing all three client URLs in
`connect_urls`. Interest propagation is asynchronous, so before publishing, a test waits on
`routed()`: each subscribing connection adds a probe subscription *after* its real ones and the
publisher publishes probes until each arrives; RS+ lines travel in order on one route, so once
the probe arrives the real interest is known too. Nodes are killed by PID and restarted on the
same ports by the tests that need it (and restarted in `finally`). No sleeps: every wait is a
condition polled against a deadline.

`test_routes_with_reference_nats_server` routes jetraft nodes to the reference nats-server
(config file with `cluster { name, listen, routes }`) and passes messages both ways, including
over a route that exists only through gossip. The in-process tests (duplicate dials, route
loss, the delivery model, exact wire frames) are in test_routes_inprocess.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, free_port

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = "routes-test"
DEADLINE_S = 15.0
SCENARIO_TIMEOUT_S = 40.0


class Node:
    """One server process (jetraft, or the reference nats-server from a generated config file)
    with a client port and a cluster port."""

    def __init__(self, name: str, tmp: pathlib.Path, routes: list[str],
                 kind: ServerKind = ServerKind.JETRAFT) -> None:
        self.name = name
        self.kind = kind
        self.client_port = free_port()
        self.cluster_port = free_port()
        if kind is ServerKind.NATS_SERVER:
            config = tmp / f"{name}.conf"
            listed = ", ".join(f'"{url}"' for url in routes)
            config.write_text(f'server_name: "{name}"\ncluster {{\n  name: "{CLUSTER}"\n'
                              f'  listen: "{LOOPBACK}:{self.cluster_port}"\n  routes: [{listed}]\n}}\n')
            self.proc = ServerProcess(kind=kind, port=self.client_port, config=config,
                                      log_path=tmp / f"{name}.log", cwd=REPO_ROOT)
            return
        args = ["-n", name, "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}",
                "--cluster_name", CLUSTER]
        if routes:
            args += ["--routes", ",".join(routes)]
        self.proc = ServerProcess(kind=kind, port=self.client_port, extra_args=args,
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


@pytest.fixture(scope="module", params=[ServerKind.JETRAFT, ServerKind.NATS_SERVER],
                ids=lambda kind: kind.value)
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    """Three nodes of one kind; every test runs on the reference nats-server too, which proves
    the test itself is right."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"routes-{kind.value}")
    a = Node("A", tmp, [], kind)
    if kind is ServerKind.JETRAFT:
        a.proc.extra_args += ["--routes", a.route_url]  # a route to self is refused
    b = Node("B", tmp, [a.route_url], kind)
    c = Node("C", tmp, [a.route_url], kind)
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
    if cluster[0].kind is ServerKind.JETRAFT:
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


def route_port_answer(port: int) -> list[bytes]:
    """What a client (CONNECT with `lang`) gets from a route port, up to the server's close."""
    with socket.create_connection((LOOPBACK, port), timeout=5.0) as sock:
        reader = sock.makefile("rb")
        assert reader.readline(65536).startswith(b"INFO ")
        sock.sendall(b'CONNECT {"verbose":false,"lang":"python3","version":"2.16.0"}\r\nPING\r\n')
        return list(iter(lambda: reader.readline(65536), b""))


def test_client_on_route_port_is_refused(cluster: list[Node]) -> None:
    assert route_port_answer(cluster[1].cluster_port) == [b"-ERR 'attempted to connect to route port'\r\n"]


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


def test_seed_node_killed_the_rest_stay_meshed_and_the_seed_rejoins(cluster: list[Node]) -> None:
    a, b, c = cluster  # B and C were given only A; their B <-> C route came from gossip

    async def scenario() -> None:
        a.proc.kill()
        try:
            async with clients(b.url, c.url) as (pub_b, sub_c):
                on_c = await sub_c.subscribe("without.seed")
                await routed(pub_b, sub_c)
                await pub_b.publish("without.seed", b"still meshed")
                assert (await on_c.next_msg(timeout=5)).data == b"still meshed"
        finally:
            a.proc.start()
        wait_mesh(cluster)
        async with clients(a.url, b.url, c.url) as (on_a, pub_b, pub_c):
            sub = await on_a.subscribe("seed.back")
            await routed(pub_b, on_a)
            await routed(pub_c, on_a)
            await pub_b.publish("seed.back", b"b")
            await pub_c.publish("seed.back", b"c")
            assert sorted([(await sub.next_msg(timeout=5)).data for _ in range(2)]) == [b"b", b"c"]

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


# -- configuration: nats-server's flag names and the TOML cluster block --------------------------

def test_cluster_flags_and_toml_block(tmp_path: pathlib.Path) -> None:
    from click.testing import CliRunner

    from cli.server import _options
    from cli.server import server as server_command

    config = tmp_path / "c.toml"
    config.write_text('[cluster]\nname = "fromfile"\nlisten = "127.0.0.1:7222"\n'
                      'routes = ["nats-route://h1:1", "nats-route://h2:2"]\n'
                      'advertise = "10.0.0.1:7222"\nno_advertise = true\nconnect_retries = 3\n'
                      '[cluster.authorization]\nuser = "ruser"\npassword = "pw"\n')
    names = [param.name for param in server_command.params]
    flags: dict[str, Any] = dict.fromkeys(names)
    flags.update(debug_trace=False, config_file=str(config))
    options, unknown = _options(flags)
    assert unknown == []
    assert (options.cluster_name, options.cluster_host, options.cluster_port) == ("fromfile", LOOPBACK, 7222)
    assert options.routes == ("nats-route://h1:1", "nats-route://h2:2")
    assert options.cluster_advertise == "10.0.0.1:7222" and options.cluster_no_advertise
    assert (options.cluster_user, options.cluster_password) == ("ruser", "pw")
    assert options.cluster_implicit_routes is True
    flags.update(cluster_listen="nats://0.0.0.0:8222", routes="nats://a:1, nats://b:2",
                 cluster_name="flag", cluster_advertise="h:9", no_implicit_routes=True)
    options, _ = _options(flags)
    assert options.cluster_implicit_routes is False
    assert (options.cluster_name, options.cluster_host, options.cluster_port) == ("flag", "0.0.0.0", 8222)
    assert options.routes == ("nats://a:1", "nats://b:2") and options.cluster_advertise == "h:9"
    result = CliRunner().invoke(server_command, ["--cluster", "nats://nohost"])
    assert result.exit_code != 0 and "--cluster" in result.output

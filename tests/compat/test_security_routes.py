"""A three-node cluster whose routes run over mutual TLS (jetraft, and nats-server as oracle).

Each node has `cluster { tls { cert_file key_file ca_file verify = true } }` with a certificate
from one test CA and routes to the other two. A message published on node A must reach a
subscriber on node C (and B), which needs the TLS routes to be up. A node whose route
certificate comes from another CA cannot join: its subscribers never see cluster traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Iterator

import nats
import pytest
import trustme

from cli.benchlib.launcher import free_port
from tests.compat.servers import KINDS
from tests.compat.test_security_support import Certs, SecureServer, arun, make_certs, secure_server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("route-certs"))


def _node_conf(name: str, cluster_port: int, peers: list[int], tls: dict) -> dict:
    return {"server_name": name, "cluster": {
        "name": "sec", "listen": f"127.0.0.1:{cluster_port}",
        "routes": [f"nats-route://127.0.0.1:{p}" for p in peers], "tls": tls}}


def _tls(certs: Certs, ca: pathlib.Path | None = None) -> dict:
    return {"cert_file": str(certs.cert), "key_file": str(certs.key),
            "ca_file": str(ca or certs.ca), "verify": True, "timeout": 2}


@contextlib.contextmanager
def cluster(kind: str, tmp: pathlib.Path, tls_per_node: list[dict]) -> Iterator[list[SecureServer]]:
    ports = [free_port() for _ in tls_per_node]
    with contextlib.ExitStack() as stack:
        nodes = []
        for i, tls in enumerate(tls_per_node):
            directory = tmp / f"n{i}"
            directory.mkdir()
            conf = _node_conf(f"n{i}", ports[i], [p for j, p in enumerate(ports) if j != i], tls)
            nodes.append(stack.enter_context(secure_server(kind, directory, conf)))
        yield nodes


async def _reaches(src_url: str, dst_urls: list[str], subject: str, deadline_s: float) -> bool:
    """Publish on `src` until every `dst` subscriber got a message, or the deadline passes."""
    subs, conns = [], []
    try:
        for url in dst_urls:
            nc = await nats.connect(url, allow_reconnect=False)
            conns.append(nc)
            subs.append(await nc.subscribe(subject))
            await nc.flush()
        pub = await nats.connect(src_url, allow_reconnect=False)
        conns.append(pub)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        pending = list(subs)
        while pending and loop.time() < end:
            await pub.publish(subject, b"over-tls")
            await pub.flush()
            still = []
            for sub in pending:
                try:
                    await sub.next_msg(timeout=0.2)
                except nats.errors.TimeoutError:
                    still.append(sub)
            pending = still
        return not pending
    finally:
        for nc in conns:
            await nc.close()


@pytest.mark.parametrize("kind", KINDS)
def test_three_nodes_with_mutual_tls_routes(kind: str, certs: Certs, tmp_path: pathlib.Path) -> None:
    tls = _tls(certs)
    with cluster(kind, tmp_path, [tls, tls, tls]) as nodes:
        urls = [n.url for n in nodes]
        assert arun(_reaches(urls[0], urls[1:], "route.tls", deadline_s=15), timeout_s=30)
        assert arun(_reaches(urls[2], urls[:1], "route.back", deadline_s=5), timeout_s=20)


@pytest.mark.parametrize("kind", KINDS)
def test_route_from_another_ca_is_refused(kind: str, certs: Certs, tmp_path: pathlib.Path) -> None:
    """Node 1 trusts only an unrelated CA: neither side's certificate verifies, no route forms."""
    stranger_ca = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(stranger_ca)
    with cluster(kind, tmp_path, [_tls(certs), _tls(certs, stranger_ca)]) as nodes:
        assert not arun(_reaches(nodes[0].url, [nodes[1].url], "route.no", deadline_s=2), timeout_s=20)


USERS = {"users": [
    {"user": "root", "password": "pw"},
    {"user": "spy", "password": "pw", "permissions": {"subscribe": {"allow": [">"], "deny": ["secret.>"]}}},
]}


def _wait_lines(session, wanted: str, rounds: int = 200) -> list[str]:
    """PING/PONG rounds until a line equal to `wanted` arrived (routed messages come later)."""
    seen: list[str] = []
    for _ in range(rounds):
        seen += session.say(b"")
        if wanted in seen:
            return seen
    raise AssertionError(f"{wanted!r} never arrived; saw {seen!r}")


@pytest.mark.parametrize("kind", KINDS)
def test_deny_filter_holds_across_routes(kind: str, tmp_path: pathlib.Path) -> None:
    """A wildcard subscriber denied `secret.>` gets no secret message from another node, plain
    or in a queue group, and local queue members are filtered too."""
    from tests.compat.test_security_perms import Session

    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(2):
            conf = _node_conf(f"d{i}", ports[i], [ports[1 - i]], {})
            del conf["cluster"]["tls"]
            conf["authorization"] = USERS
            (tmp_path / f"d{i}").mkdir()
            nodes.append(stack.enter_context(secure_server(kind, tmp_path / f"d{i}", conf)))
        spy_a, spy_b = Session(nodes[0].port, "spy"), Session(nodes[1].port, "spy")
        root = Session(nodes[0].port, "root")
        try:
            assert spy_a.say(b"SUB > 1\r\nSUB > q2 2\r\n") == []
            assert spy_b.say(b"SUB > q 1\r\n") == []
            for _ in range(200):  # until node A knows node B's interest
                root.say(b"PUB ready 0\r\n\r\n")
                if "MSG ready 1 0" in spy_b.say(b""):
                    break
            root.say(b"PUB secret.a 1\r\ns\r\nPUB public.b 1\r\np\r\n")
            got_b = _wait_lines(spy_b, "MSG public.b 1 1")
            got_a = _wait_lines(spy_a, "MSG public.b 2 1")
            assert not [line for line in got_a + got_b if "secret" in line]
        finally:
            for s in (spy_a, spy_b, root):
                s.close()

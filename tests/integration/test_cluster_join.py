"""A cluster formed from one seed: three `jetraft server -js` processes, nats-py.

n1 is started with no route at all, n2 and n3 with only n1's route URL. Route gossip must give
every server a route to both others, and the meta group must end up with all three as voters on
every server (the meta leader admits a server it does not know as a learner and promotes it
once caught up; the changes are entries of the meta log). An R3 stream then spans the three,
and a restarted server keeps its meta membership (it takes it from its log, not from its one
seed). A server that already holds another meta group's log is refused rather than merged.
Every wait polls a condition against a deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import urllib.request
from collections.abc import Awaitable, Iterator
from typing import Any

import nats
import pytest

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess
from cli.cluster import stable_ports
from tests.cluster_support import REPO_ROOT, api, until

CLUSTER = "join-test"
DEADLINE_S = 30.0
SCENARIO_TIMEOUT_S = 90.0


class Node:
    def __init__(self, name: str, tmp: pathlib.Path, cluster: str = CLUSTER) -> None:
        self.name = name
        self.cluster = cluster
        self.client_port, self.cluster_port, self.http_port = stable_ports(1), stable_ports(2), stable_ports(1)
        self.store_dir = tmp / name
        self.log_path = tmp / f"{name}.log"
        self.routes: list[str] = []
        self.proc: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    def start(self) -> None:
        args = ["-n", self.name, "-js", "-sd", str(self.store_dir), "-m", str(self.http_port),
                "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}", "--cluster_name", self.cluster]
        if self.routes:
            args += ["--routes", ",".join(self.routes)]
        self.proc = ServerProcess(kind=ServerKind.JETRAFT, port=self.client_port, extra_args=args,
                                  log_path=self.log_path, cwd=REPO_ROOT)
        self.proc.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def monitor(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=2) as resp:
            return json.loads(resp.read())


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("join")
    nodes = {name: Node(name, tmp) for name in ("n1", "n2", "n3")}
    nodes["n2"].routes = [nodes["n1"].route_url]
    nodes["n3"].routes = [nodes["n1"].route_url]
    try:
        for node in nodes.values():
            node.start()
        yield nodes
    except BaseException:
        for node in nodes.values():
            print(f"--- {node.name} log ---\n{node.log_path.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        for node in nodes.values():
            node.stop()


async def meta_view(node: Node) -> tuple[int, str, int]:
    """(voters in this server's own meta membership, its meta leader, routes) from /jsz, /routez."""
    jsz = await asyncio.to_thread(node.monitor, "/jsz")
    routez = await asyncio.to_thread(node.monitor, "/routez")
    meta = jsz.get("meta_cluster") or {}
    return int(meta.get("cluster_size", 0)), str(meta.get("leader", "")), int(routez["num_routes"])


async def full_cluster(nodes: dict[str, Node]) -> bool:
    views = [await meta_view(n) for n in nodes.values()]
    return all(v[0] == 3 and v[2] == 2 for v in views) and len({v[1] for v in views}) == 1 and views[0][1] != ""


def test_one_seed_forms_full_mesh_and_three_voter_meta_group(seeded: dict[str, Node]) -> None:
    async def scenario() -> None:
        await until(lambda: full_cluster(seeded), "full mesh and 3 meta voters on every server", DEADLINE_S)
        nc = await nats.connect(seeded["n3"].url)
        try:
            async def registered() -> dict[str, Any]:
                meta = (await api(nc, "$JS.API.INFO"))["meta_cluster"]
                return meta if sorted(meta["peers"]) == ["n1", "n2", "n3"] else {}
            meta = await until(registered, "every server registered by name", DEADLINE_S)
            assert meta["cluster_size"] == 3
        finally:
            await nc.close()

    run(scenario())


def test_r3_stream_spans_the_joined_servers(seeded: dict[str, Node]) -> None:
    async def scenario() -> None:
        await until(lambda: full_cluster(seeded), "full cluster", DEADLINE_S)
        nc = await nats.connect(seeded["n2"].url)
        try:
            created = await until(lambda: api(nc, "$JS.API.STREAM.CREATE.JOINED", json.dumps(
                {"name": "JOINED", "subjects": ["joined.>"], "num_replicas": 3}).encode(), 5.0),
                "R3 stream created", DEADLINE_S)
            assert "error" not in created, created
            replicas = {created["cluster"]["leader"], *(r["name"] for r in created["cluster"].get("replicas", []))}
            assert replicas == {"n1", "n2", "n3"}
            js = nc.jetstream()
            for i in range(5):
                ack = await js.publish(f"joined.{i}", b"m%d" % i)
                assert ack.seq == i + 1
        finally:
            await nc.close()
        for node in seeded.values():  # every server reaches the stream and reads the last message
            nc = await nats.connect(node.url)
            try:
                got = await until(lambda: api(nc, "$JS.API.STREAM.MSG.GET.JOINED", b'{"seq": 5}'),
                                  f"message 5 through {node.name}", DEADLINE_S)
                assert got["message"]["subject"] == "joined.4", got
            finally:
                await nc.close()

    run(scenario())


def test_restart_keeps_meta_membership(seeded: dict[str, Node]) -> None:
    """n3 knows only n1 from its flags; after a restart with n1 stopped it still counts three
    voters (from its meta log) and, with n2, still forms a quorum that elects a meta leader."""
    async def scenario() -> None:
        await until(lambda: full_cluster(seeded), "full cluster", DEADLINE_S)
        seeded["n1"].stop()
        seeded["n3"].stop()
        seeded["n3"].start()

        async def without_n1() -> bool:
            size3, leader3, _ = await meta_view(seeded["n3"])
            size2, leader2, _ = await meta_view(seeded["n2"])
            return size3 == size2 == 3 and leader3 == leader2 and leader3 in ("n2", "n3")
        await until(without_n1, "n2 and n3 elect a meta leader with n1 down", DEADLINE_S)
        seeded["n1"].start()
        await until(lambda: full_cluster(seeded), "full cluster after restarts", DEADLINE_S)

    run(scenario())


def test_server_with_another_meta_log_is_refused(seeded: dict[str, Node], tmp_path: pathlib.Path) -> None:
    """A one-server cluster (its route names only itself) has its own meta log; pointed at the
    joined cluster afterwards, it is not admitted: the two meta groups never merge."""
    lone = Node("lone", tmp_path)
    lone.routes = [lone.route_url]
    try:
        lone.start()

        async def alone() -> bool:
            size, leader, _ = await meta_view(lone)
            return size == 1 and leader == "lone"
        run(until(alone, "the lone server leads its own meta group", DEADLINE_S))
        lone.stop()
        lone.routes = [seeded["n1"].route_url]
        lone.start()

        async def refused() -> bool:
            log = "".join(n.log_path.read_text(errors="replace") for n in seeded.values())
            return "meta.join_refused" in log
        run(until(refused, "the meta leader refuses the server", DEADLINE_S))
        async def all_views() -> list[tuple[int, str, int]]:
            return [await meta_view(n) for n in seeded.values()]
        views = run(all_views())
        assert all(v[0] == 3 for v in views), views
        assert run(meta_view(lone))[0] == 1
    finally:
        lone.stop()


def test_seeds_pointing_at_each_other(tmp_path: pathlib.Path) -> None:
    """n1 names only n2, n2 only n1, n3 only n1: the same full cluster. n3 and n1 start first,
    so n3 leads ({n1, n3}: n1 cannot win without n2); then n2 joins, with Raft ports chosen so
    that n2 must dial n3 (the smaller node id dials) although no flag tells n2 where n3 is: it
    learns that from the answers to its `$JSC.JOIN`."""
    nodes = {name: Node(name, tmp_path) for name in ("n1", "n2", "n3")}
    if f"{LOOPBACK}:{nodes['n2'].cluster_port + 1}" > f"{LOOPBACK}:{nodes['n3'].cluster_port + 1}":
        nodes["n2"].cluster_port, nodes["n3"].cluster_port = nodes["n3"].cluster_port, nodes["n2"].cluster_port
    nodes["n1"].routes = [nodes["n2"].route_url]
    nodes["n2"].routes = [nodes["n1"].route_url]
    nodes["n3"].routes = [nodes["n1"].route_url]
    try:
        nodes["n3"].start()
        nodes["n1"].start()

        async def n3_leads() -> bool:
            return (await meta_view(nodes["n3"]))[1] == "n3"
        run(until(n3_leads, "n3 leads the meta group of n1 and n3", DEADLINE_S))
        nodes["n2"].start()
        run(until(lambda: full_cluster(nodes), "full mesh and 3 meta voters on every server", DEADLINE_S))
    except BaseException:
        for node in nodes.values():
            print(f"--- {node.name} log ---\n{node.log_path.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        for node in nodes.values():
            node.stop()


def test_seedless_server_learns_it_is_a_voter(tmp_path: pathlib.Path) -> None:
    """Two servers, n1 with no route, n2 naming n1: n2's bootstrap voters are both, n1 starts
    as a learner of its own group. The meta leader writes the membership into the meta log, so
    n1 counts itself a voter too and can take over the meta leadership (a stepdown moves it)."""
    nodes = {name: Node(name, tmp_path) for name in ("n1", "n2")}
    nodes["n2"].routes = [nodes["n1"].route_url]

    async def both_voters() -> str:
        views = [await meta_view(n) for n in nodes.values()]
        ok = all(size == 2 and routes == 1 for size, _, routes in views) and len({v[1] for v in views}) == 1
        return views[0][1] if ok else ""

    async def stepdown_moves_it(old: str) -> None:
        nc = await nats.connect(nodes["n1"].url)
        try:
            async def moved() -> bool:
                got = await api(nc, "$JS.API.META.LEADER.STEPDOWN", timeout_s=5.0)
                return got.get("success") is True
            await until(moved, "meta leader stepdown accepted", DEADLINE_S)

            async def other_leads() -> bool:
                leader = await both_voters()
                return leader not in ("", old)
            await until(other_leads, "the other server leads the meta group", DEADLINE_S)
        finally:
            await nc.close()

    try:
        for node in nodes.values():
            node.start()
        first = run(until(both_voters, "both servers count two meta voters", DEADLINE_S))
        run(stepdown_moves_it(first))
        run(stepdown_moves_it("n2" if first == "n1" else "n1"))
    except BaseException:
        for node in nodes.values():
            print(f"--- {node.name} log ---\n{node.log_path.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        for node in nodes.values():
            node.stop()

"""Monitoring of a three-node clustered JetStream: $SYS pings across routes, /jsz, /healthz.

Three `jetraft server -js --cluster ... -m PORT -c sys.conf` processes (system account `SYS`
with user `sys`, user `app` for the data). The scenarios run in order on one cluster: an R3
stream gets messages; `$SYS.REQ.SERVER.PING.JSZ` from `sys` on one node is answered once by
every server, each reply carrying that server's own replica state, and is refused to `app`;
/jsz shows the meta leader, the cluster size and the stream's Raft group; then one node is
stopped, the stream grows while it is down, and after its restart its /healthz is unhealthy
until its replica has caught up - when it first reports healthy, its content hash and applied
state equal the leader's. Processes are stopped by PID; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.errors import NoRespondersError
from prometheus_client.parser import text_string_to_metric_families

from cli.benchlib.launcher import LOOPBACK
from tests.cluster_support import ClusterNode, reserve_ports, running_cluster
from tests.cluster_support import until as poll_until

CONFIG = """system_account = "SYS"
accounts = {SYS = {users = [{user = "sys", password = "sys"}]}, APP = {users = [{user = "app", password = "app"}]}}
"""
DEADLINE_S = 20.0
STREAM = "MON"
FIRST_BATCH = 5
SECOND_BATCH = 200


class Node(ClusterNode):
    def __init__(self, name: str, tmp: pathlib.Path, config: pathlib.Path, ports: tuple[int, int, int]) -> None:
        cluster_port, client_port, self.http_port = ports
        super().__init__(name, tmp, "mon", client_port=client_port, cluster_port=cluster_port,
                         extra_args=["-m", str(self.http_port)], config=config)

    def url(self, user: str) -> str:
        return f"nats://{user}:{user}@{LOOPBACK}:{self.client_port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("moncluster")
    config = tmp / "sys.conf"
    config.write_text(CONFIG, encoding="utf-8")
    names = ("n1", "n2", "n3")
    pairs, singles = reserve_ports(len(names), 2 * len(names))
    nodes = {name: Node(name, tmp, config, (pairs[i], singles[2 * i], singles[2 * i + 1]))
             for i, name in enumerate(names)}
    with running_cluster(nodes.values(), lambda: run(setup_stream(nodes))):
        yield nodes


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(check: Any, what: str, timeout_s: float = DEADLINE_S) -> Any:
    return await poll_until(check, what, timeout_s, interval_s=0.1)


async def setup_stream(nodes: dict[str, Node]) -> None:
    nc = await nats.connect(nodes["n1"].url("app"))
    try:
        async def created() -> bool:
            reply = await nc.request("$JS.API.STREAM.CREATE." + STREAM, json.dumps(
                {"name": STREAM, "subjects": ["mon.>"], "num_replicas": 3}).encode(), timeout=2)
            body = json.loads(reply.data)
            return "config" in body or body.get("error", {}).get("err_code") == 10058
        await until(created, "stream creation")
        js = nc.jetstream()
        for i in range(FIRST_BATCH):
            await js.publish(f"mon.{i}", b"x")
    finally:
        await nc.close()


async def sys_replies(node: Node, subject: str, body: bytes, expect: int,
                      window_s: float = 3.0) -> list[dict[str, Any]]:
    """Send one request as `sys`; gather replies until `expect` arrived (or `window_s`)."""
    nc = await nats.connect(node.url("sys"))
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, body, reply=inbox)
        replies = []
        deadline = time.monotonic() + window_s
        while len(replies) < expect and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                break
            replies.append(json.loads(msg.data))
        return replies
    finally:
        await nc.close()


def detail_of(jsz: dict[str, Any]) -> dict[str, Any] | None:
    for account in jsz.get("account_details") or ():
        for detail in account.get("stream_detail") or ():
            if detail["name"] == STREAM:
                return detail
    return None


def test_ping_jsz_one_reply_per_server_with_its_own_state(cluster: dict[str, Node]) -> None:
    seen: dict[str, Any] = {}

    async def every_replica_has_the_messages() -> list[dict[str, Any]] | None:
        replies = await sys_replies(cluster["n2"], "$SYS.REQ.SERVER.PING.JSZ",
                                    b'{"streams": true}', expect=3)
        states = {r["server"]["name"]: (detail_of(r["data"]) or {}).get("state", {}) for r in replies}
        seen["last"] = states  # for the failure message
        if len(replies) == 3 and all(s.get("messages") == FIRST_BATCH for s in states.values()):
            return replies
        return None

    try:
        replies = run(until(every_replica_has_the_messages, "three JSZ replies with the stream"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; replica states seen last: {seen.get('last')}") from None
    assert sorted(r["server"]["name"] for r in replies) == ["n1", "n2", "n3"]
    assert len({r["server"]["id"] for r in replies}) == 3
    for reply in replies:
        data = reply["data"]
        assert data["server_id"] == reply["server"]["id"]  # each server's own document
        assert data["meta_cluster"]["cluster_size"] == 3
        raft = detail_of(data)["cluster"]["raft"]
        assert raft["applied"] > 0 and raft["repair_needed"] is False
    assert len({r["data"]["meta_cluster"]["leader"] for r in replies}) == 1
    n3_id = next(r["server"]["id"] for r in replies if r["server"]["name"] == "n3")
    for kind in ("VARZ", "JSZ"):  # addressed to one server (through the route from n1)
        (only,) = run(sys_replies(cluster["n1"], f"$SYS.REQ.SERVER.{n3_id}.{kind}", b"", expect=2,
                                        window_s=1.0))
        assert only["server"]["name"] == "n3" and only["data"]["server_id"] == n3_id


def test_ping_jsz_denied_to_ordinary_users(cluster: dict[str, Node]) -> None:
    async def attempt() -> bool:
        nc = await nats.connect(cluster["n1"].url("app"))
        try:
            await nc.request("$SYS.REQ.SERVER.PING.JSZ", b"", timeout=2)
            return False
        except NoRespondersError:
            return True
        finally:
            await nc.close()
    assert run(attempt())


def test_jsz_shows_meta_leader_and_stream_group(cluster: dict[str, Node]) -> None:
    async def leader_view() -> Any:
        status, jsz = cluster["n1"].get("/jsz?streams=true")
        detail = detail_of(jsz)
        return jsz if detail and detail["cluster"].get("leader") else None

    jsz = run(until(leader_view, "jsz with a stream leader"))
    assert jsz["meta_cluster"]["cluster_size"] == 3 and jsz["meta_cluster"]["leader"] in ("n1", "n2", "n3")
    cluster_block = detail_of(jsz)["cluster"]
    assert cluster_block["raft_group"] and cluster_block["leader"] in ("n1", "n2", "n3")
    async def stream_info() -> dict[str, Any]:
        nc = await nats.connect(cluster["n1"].url("app"))
        try:
            return json.loads((await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=2)).data)
        finally:
            await nc.close()
    raft = run(stream_info())["cluster"]["raft"]  # the leader's Raft health in stream info
    assert raft["role"] == "leader" and raft["applied"] >= FIRST_BATCH and raft["last_contact_ms"] == 0
    varz = cluster["n1"].get("/varz")[1]
    assert varz["cluster"]["name"] == "mon" and varz["routes"] == 2


def scrape(node: Node) -> dict[tuple[str, str], float]:
    """/metrics as {(sample name, stream or group label): value}."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{node.http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("stream") or s.labels.get("group") or s.labels.get("le", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_streams_raft_and_latencies(cluster: dict[str, Node]) -> None:
    async def publish() -> None:
        nc = await nats.connect(cluster["n1"].url("app"))
        try:
            await nc.jetstream().publish("mon.metrics", b"m", headers={"Nats-Msg-Id": "metrics-1"})
        finally:
            await nc.close()
    run(publish())
    scrapes = [scrape(node) for node in cluster.values()]
    assert sum(s[("jetraft_stream_leader", STREAM)] for s in scrapes) == 1  # one leader
    for samples in scrapes:
        assert samples[("nats_varz_routes", "")] == 2
        assert samples[("jetraft_stream_messages", STREAM)] >= 0
        assert samples[("jetraft_raft_term", "_meta_")] >= 1
        assert samples[("jetraft_raft_persist_seconds_count", "")] > 0  # every node fsyncs
    assert sum(s[("jetraft_publish_commit_seconds_count", "")] for s in scrapes) >= 1


async def digest(node: Node, of: str) -> dict[str, Any]:
    nc = await nats.connect(node.url("app"))
    try:
        reply = await nc.request(f"$JSC.DIGEST.{of}.{STREAM}", b"", timeout=2)
        return json.loads(reply.data)
    finally:
        await nc.close()


def test_healthz_unhealthy_while_catching_up(cluster: dict[str, Node]) -> None:
    n1, n3 = cluster["n1"], cluster["n3"]

    async def all_healthy() -> bool:
        statuses = [(await asyncio.to_thread(n.get, "/healthz"))[0] for n in cluster.values()]
        return statuses == [200, 200, 200]
    run(until(all_healthy, "every node healthy"))

    n3.stop()

    async def publish_more() -> None:
        nc = await nats.connect(n1.url("app"))
        try:
            js = nc.jetstream()
            for i in range(SECOND_BATCH):  # retried (deduplicated by id) while leadership moves
                await until(lambda i=i: js.publish(f"mon.more.{i}", b"y" * 64, timeout=1,
                                                   headers={"Nats-Msg-Id": f"more-{i}"}),
                            f"publish {i}")
        finally:
            await nc.close()
    run(publish_more())
    assert n1.get("/healthz")[0] == 200  # the rest of the cluster stays healthy

    n3.start([f"nats-route://{LOOPBACK}:{n.cluster_port}" for n in cluster.values()])
    statuses = []

    async def healthy_again() -> bool:
        status, body = await asyncio.to_thread(n3.get, "/healthz")
        statuses.append((status, body))
        return status == 200
    run(until(healthy_again, "the restarted node to be healthy", timeout_s=30))
    # the moment it says healthy it holds everything (retried only while n1 learns n3's
    # digest subscription over the new route; nothing is published meanwhile)
    mine = run(until(lambda: digest(n1, "n3"), "n3's digest"))
    assert mine["messages"] >= FIRST_BATCH + SECOND_BATCH
    first_status, first_body = statuses[0]
    assert first_status == 503 and first_body["status"] == "unavailable"

    async def leader_digest() -> Any:
        for node in cluster.values():
            d = await digest(n1, node.name)
            if d["leader"]:
                return d
        return None
    leader = run(until(leader_digest, "the leader's digest"))
    assert (mine["digest"], mine["last_seq"]) == (leader["digest"], leader["last_seq"])

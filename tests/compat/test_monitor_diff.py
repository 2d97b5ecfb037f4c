"""Monitoring against the reference: the same requests to jetraft and to nats-server (`-m PORT`).

Both servers get the same config (valid as TOML and as nats conf): a system account `SYS` with
user `sys`, and an `APP` account with JetStream. A nats-py client (user `app`) creates a stream
with two messages and a durable consumer and subscribes; then every endpoint (/varz, /connz,
/subsz, /routez, /healthz, /jsz) is fetched over HTTP and the `$SYS.REQ.SERVER.PING*` requests
are sent as `sys`. For the fields a user relies on, both servers must have the key with the same
JSON type (numbers are one type: Go prints whole floats without a fraction), and the figures
that describe the same situation must be equal (one stream, two messages, one consumer, healthy).
An `app` request to `$SYS.REQ.SERVER.PING.JSZ` must find no responders on both.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
import urllib.request
from typing import Any

import nats
import pytest
from nats.errors import NoRespondersError

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, free_port
from tests.cluster_support import reserve_ports
from tests.compat.servers import REPO_ROOT, skip_if_unavailable

CONFIG = """system_account = "SYS"
accounts = {SYS = {users = [{user = "sys", password = "sys"}]}, APP = {jetstream = "enabled", users = [{user = "app", password = "app"}]}}
"""
DEADLINE_S = 10.0
CLUSTER_DEADLINE_S = 20.0

COMMON = {
    "/varz": [
        "server_id", "server_name", "version", "proto", "host", "port", "max_connections",
        "ping_interval", "ping_max", "http_port", "max_payload", "max_pending", "max_control_line",
        "auth_timeout", "write_deadline", "start", "now", "uptime", "mem", "cores", "cpu",
        "connections", "total_connections", "routes", "in_msgs", "out_msgs", "in_bytes",
        "out_bytes", "slow_consumers", "subscriptions", "cluster", "jetstream.config.max_memory",
        "jetstream.config.max_storage", "jetstream.config.store_dir", "jetstream.stats.memory",
        "jetstream.stats.storage", "jetstream.stats.api.total", "jetstream.stats.api.errors",
    ],
    "/connz?subs=1": [
        "server_id", "now", "num_connections", "total", "offset", "limit", "connections",
    ],
    "/subsz": [
        "server_id", "now", "num_subscriptions", "num_cache", "num_inserts", "num_removes",
        "num_matches", "cache_hit_rate", "max_fanout", "avg_fanout", "total", "offset", "limit",
    ],
    "/routez": ["server_id", "server_name", "now", "num_routes", "routes"],
    "/healthz": ["status"],
    "/jsz?streams=true&consumers=true": [
        "server_id", "now", "memory", "storage", "accounts", "api.total", "api.errors",
        "config.max_memory", "config.max_storage", "config.store_dir", "streams", "consumers",
        "messages", "bytes", "account_details",
    ],
}
CONNECTION = ["cid", "ip", "port", "start", "last_activity", "rtt", "uptime", "idle",
              "pending_bytes", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "subscriptions",
              "name", "lang", "version", "subscriptions_list"]
STREAM_DETAIL = ["name", "created", "cluster.leader", "state.messages", "state.bytes",
                 "state.first_seq", "state.last_seq", "state.first_ts", "state.consumer_count",
                 "consumer_detail"]
CONSUMER_DETAIL = ["stream_name", "name", "created", "delivered.consumer_seq", "delivered.stream_seq",
                   "ack_floor.stream_seq", "num_ack_pending", "num_redelivered", "num_waiting",
                   "num_pending"]
SYS_SERVER = ["server.name", "server.host", "server.id", "server.ver", "server.jetstream", "server.time"]
STATSZ = ["statsz.start", "statsz.mem", "statsz.cores", "statsz.connections",
          "statsz.total_connections", "statsz.subscriptions", "statsz.sent.msgs",
          "statsz.received.msgs", "statsz.slow_consumers", "statsz.active_servers"]


def kind_of(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def pick(doc: Any, path: str) -> Any:
    for part in path.split("."):
        assert isinstance(doc, dict) and part in doc, f"missing {path!r}"
        doc = doc[part]
    return doc


def shape(doc: Any, paths: list[str]) -> dict[str, str]:
    return {path: kind_of(pick(doc, path)) for path in paths}


def http_get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def stream_detail(jsz: dict[str, Any], name: str) -> dict[str, Any] | None:
    for account in jsz.get("account_details") or ():
        for detail in account.get("stream_detail") or ():
            if detail["name"] == name:
                return detail
    return None


async def wait_for(check: Any, what: str, timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)  # polling interval of a condition wait
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def observe(port: int, http_port: int) -> dict[str, Any]:
    """Set the scene through `app`, then collect every document (and the $SYS replies)."""
    app = await nats.connect(f"nats://app:app@{LOOPBACK}:{port}", name="appc")
    sys_nc = await nats.connect(f"nats://sys:sys@{LOOPBACK}:{port}")
    try:
        js = app.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        for i in range(2):
            await js.publish(f"s.{i}", b"hello")
        await js.pull_subscribe("s.>", durable="D")
        await app.subscribe("foo.*")
        await app.flush()

        async def jsz_ready() -> Any:
            doc = await asyncio.to_thread(http_get, http_port, "/jsz?streams=true&consumers=true")
            detail = stream_detail(doc, "S")
            return doc if detail and detail["state"]["messages"] == 2 and detail.get("consumer_detail") else None

        docs: dict[str, Any] = {"/jsz?streams=true&consumers=true": await wait_for(jsz_ready, "jsz")}
        for path in COMMON:
            docs.setdefault(path, await asyncio.to_thread(http_get, http_port, path))
        for subject in ("$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.JSZ", "$SYS.REQ.SERVER.PING.VARZ"):
            docs[subject] = json.loads((await sys_nc.request(subject, b"", timeout=2)).data)
        try:
            await app.request("$SYS.REQ.SERVER.PING.JSZ", b"", timeout=2)
            docs["app_denied"] = False
        except NoRespondersError:
            docs["app_denied"] = True
        return docs
    finally:
        await app.close()
        await sys_nc.close()


def collect(kind: str, tmp: pathlib.Path) -> dict[str, Any]:
    skip_if_unavailable(kind)
    config = tmp / f"{kind}.conf"
    config.write_text(CONFIG, encoding="utf-8")
    http_port = free_port()
    proc = ServerProcess(kind=ServerKind(kind), port=free_port(), config=config,
                         extra_args=["-m", str(http_port), "-js", "-sd", str(tmp / f"{kind}-js")],
                         log_path=tmp / f"{kind}.log", cwd=REPO_ROOT)
    proc.start()
    try:
        return asyncio.run(asyncio.wait_for(observe(proc.port, http_port), 30))
    except BaseException:
        print(f"--- {kind} log ---\n{proc.log_tail()}")
        raise
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("monitor-diff")
    return {kind.value: collect(kind.value, tmp) for kind in (ServerKind.NATS_SERVER, ServerKind.JETRAFT)}


def both(observed: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return observed[ServerKind.JETRAFT.value], observed[ServerKind.NATS_SERVER.value]


@pytest.mark.parametrize("path", list(COMMON))
def test_endpoint_fields_match_nats_server(observed: dict[str, dict[str, Any]], path: str) -> None:
    ours, ref = both(observed)
    assert shape(ours[path], COMMON[path]) == shape(ref[path], COMMON[path])


def test_connection_fields_match(observed: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(observed)
    shapes = []
    for doc in (ours, ref):
        (conn,) = [c for c in doc["/connz?subs=1"]["connections"] if c.get("name") == "appc"]
        assert conn["in_msgs"] >= 2 and conn["subscriptions"] >= 1
        assert "foo.*" in conn["subscriptions_list"]
        shapes.append(shape(conn, CONNECTION))
    assert shapes[0] == shapes[1]


def test_jsz_stream_and_consumer_detail_match(observed: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(observed)
    path = "/jsz?streams=true&consumers=true"
    for doc in (ours, ref):
        assert (doc[path]["streams"], doc[path]["consumers"], doc[path]["messages"]) == (1, 1, 2)
    mine, theirs = stream_detail(ours[path], "S"), stream_detail(ref[path], "S")
    assert shape(mine, STREAM_DETAIL) == shape(theirs, STREAM_DETAIL)
    assert shape(mine["consumer_detail"][0], CONSUMER_DETAIL) == shape(theirs["consumer_detail"][0], CONSUMER_DETAIL)
    assert mine["consumer_detail"][0]["num_pending"] == theirs["consumer_detail"][0]["num_pending"] == 2


def test_healthz_agrees(observed: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(observed)
    assert ours["/healthz"] == ref["/healthz"] == {"status": "ok"}


def test_sys_ping_replies_match(observed: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(observed)
    ping = "$SYS.REQ.SERVER.PING"
    assert shape(ours[ping], SYS_SERVER + STATSZ) == shape(ref[ping], SYS_SERVER + STATSZ)
    for subject, fields in (("$SYS.REQ.SERVER.PING.JSZ", ["data.server_id", "data.streams", "data.messages"]),
                            ("$SYS.REQ.SERVER.PING.VARZ", ["data.server_id", "data.in_msgs", "data.connections"])):
        assert shape(ours[subject], SYS_SERVER + fields) == shape(ref[subject], SYS_SERVER + fields)
    for doc in (ours, ref):
        assert doc["$SYS.REQ.SERVER.PING.JSZ"]["data"]["messages"] == 2


def test_ordinary_user_is_denied_sys_requests(observed: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(observed)
    assert ours["app_denied"] is ref["app_denied"] is True


# -- three-node clusters ----------------------------------------------------------------------

CLUSTER_VARZ = ["routes", "cluster.name", "cluster.addr", "cluster.cluster_port", "cluster.urls"]
ROUTE = ["rid", "remote_id", "remote_name", "did_solicit", "is_configured", "ip", "port",
         "pending_size", "in_msgs", "out_msgs", "subscriptions"]
META = ["meta_cluster.name", "meta_cluster.leader", "meta_cluster.peer", "meta_cluster.cluster_size"]
STREAM_CLUSTER = ["cluster.leader", "cluster.replicas"]
REPLICA = ["name", "current", "peer"]


async def observe_cluster(ports: list[int], http_port: int) -> dict[str, Any]:
    app = await nats.connect(f"nats://app:app@{LOOPBACK}:{ports[0]}")
    try:
        async def stream_created() -> bool:
            reply = await app.request("$JS.API.STREAM.CREATE.C", json.dumps(
                {"name": "C", "subjects": ["c.>"], "num_replicas": 3}).encode(), timeout=2)
            body = json.loads(reply.data)
            return "config" in body or body.get("error", {}).get("err_code") == 10058
        await wait_for(lambda: _quiet(stream_created), "an R3 stream", CLUSTER_DEADLINE_S)
        js = app.jetstream()
        for i in range(3):
            await js.publish(f"c.{i}", b"x")

        async def all_replicas() -> Any:
            replies = await gather_sys(ports[1], "$SYS.REQ.SERVER.PING.JSZ", b'{"streams": true}', 3)
            counts = [(stream_detail(r["data"], "C") or {}).get("state", {}).get("messages") for r in replies]
            return replies if counts == [3, 3, 3] else None
        docs: dict[str, Any] = {"ping_jsz": await wait_for(all_replicas, "three JSZ replies", CLUSTER_DEADLINE_S)}

        async def jsz_with_replicas() -> Any:
            doc = await asyncio.to_thread(http_get, http_port, "/jsz?streams=true")
            detail = stream_detail(doc, "C")
            return doc if detail and detail.get("cluster", {}).get("replicas") else None
        docs["jsz"] = await wait_for(jsz_with_replicas, "jsz with the stream's replicas", CLUSTER_DEADLINE_S)
        docs["varz"] = await asyncio.to_thread(http_get, http_port, "/varz")
        docs["routez"] = await asyncio.to_thread(http_get, http_port, "/routez")
        return docs
    finally:
        await app.close()


async def _quiet(check: Any) -> Any:
    try:
        return await check()
    except Exception:  # noqa: BLE001 - not ready yet (no meta leader, no responders)
        return None


async def gather_sys(port: int, subject: str, body: bytes, expect: int) -> list[dict[str, Any]]:
    nc = await nats.connect(f"nats://sys:sys@{LOOPBACK}:{port}")
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, body, reply=inbox)
        replies = []
        deadline = time.monotonic() + 2.0
        while len(replies) < expect and time.monotonic() < deadline:
            try:
                replies.append(json.loads((await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01))).data))
            except asyncio.TimeoutError:
                break
        return replies
    finally:
        await nc.close()


def collect_cluster(kind: str, tmp: pathlib.Path) -> dict[str, Any]:
    skip_if_unavailable(kind)
    config = tmp / f"{kind}-cluster.conf"
    config.write_text(CONFIG, encoding="utf-8")
    names = ["n1", "n2", "n3"]
    cluster_ports, singles = reserve_ports(len(names), len(names) + 1)
    http_port, client_ports = singles[0], singles[1:]
    routes = ",".join(f"nats://{LOOPBACK}:{p}" for p in cluster_ports)
    procs = []
    try:
        for i, name in enumerate(names):
            args = ["-n", name, "-js", "-sd", str(tmp / f"{kind}-{name}"), "--cluster",
                    f"nats://{LOOPBACK}:{cluster_ports[i]}", "--cluster_name", "diff", "--routes", routes]
            if i == 0:
                args += ["-m", str(http_port)]
            proc = ServerProcess(kind=ServerKind(kind), port=client_ports[i], config=config, extra_args=args,
                                 log_path=tmp / f"{kind}-{name}.log", cwd=REPO_ROOT)
            procs.append(proc)
            proc.start()
        return asyncio.run(asyncio.wait_for(observe_cluster([p.port for p in procs], http_port), 75))
    except BaseException:
        for proc in procs:
            print(f"--- {proc.log_path} ---\n{proc.log_tail()}")
        raise
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("monitor-cluster-diff")
    return {kind.value: collect_cluster(kind.value, tmp) for kind in (ServerKind.NATS_SERVER, ServerKind.JETRAFT)}


def test_cluster_ping_jsz_answered_by_every_server(clusters: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(clusters)
    for doc in (ours, ref):
        assert sorted(r["server"]["name"] for r in doc["ping_jsz"]) == ["n1", "n2", "n3"]
    assert shape(ours["ping_jsz"][0], SYS_SERVER) == shape(ref["ping_jsz"][0], SYS_SERVER)


def test_cluster_varz_routez_and_jsz_fields_match(clusters: dict[str, dict[str, Any]]) -> None:
    ours, ref = both(clusters)
    assert shape(ours["varz"], CLUSTER_VARZ) == shape(ref["varz"], CLUSTER_VARZ)
    assert ours["varz"]["cluster"]["name"] == ref["varz"]["cluster"]["name"] == "diff"
    assert ours["routez"]["num_routes"] == 2 and ref["routez"]["num_routes"] >= 2  # nats-server pools routes
    assert shape(ours["routez"]["routes"][0], ROUTE) == shape(ref["routez"]["routes"][0], ROUTE)
    assert shape(ours["jsz"], META) == shape(ref["jsz"], META)
    assert ours["jsz"]["meta_cluster"]["cluster_size"] == ref["jsz"]["meta_cluster"]["cluster_size"] == 3
    mine, theirs = stream_detail(ours["jsz"], "C"), stream_detail(ref["jsz"], "C")
    assert shape(mine, STREAM_CLUSTER) == shape(theirs, STREAM_CLUSTER)
    assert shape(mine["cluster"]["replicas"][0], REPLICA) == shape(theirs["cluster"]["replicas"][0], REPLICA)
    assert len(mine["cluster"]["replicas"]) == len(theirs["cluster"]["replicas"]) == 2

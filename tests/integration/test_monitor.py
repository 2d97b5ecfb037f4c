"""HTTP monitoring and $SYS requests of one in-process server, driven by raw NATS sockets.

Each test starts a `Server` with `http_port=0` (an ephemeral monitoring port) inside its
nursery, talks NATS bytes to it, and fetches the endpoints over real HTTP (urllib in a worker
thread). Waits are conditions with deadlines (`trio.fail_after`); every server is shut down by
its test.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from natsd import protocol as p
from natsd.auth import User
from natsd.config import ServerOptions
from natsd.server import Server
from tests.integration.raw_support import RawBase

HOST = "127.0.0.1"
DEADLINE_S = 5


class Raw(RawBase):
    """A raw NATS client: send bytes, read decoded server operations."""

    deadline_s = DEADLINE_S

    @classmethod
    async def connect(cls, port: int, name: str = "", user: str = "", password: str = "") -> Raw:
        raw = cls(await trio.open_tcp_stream(HOST, port))
        assert isinstance(await raw.op(), p.Info)
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True,
                                   "no_responders": True, "name": name, "lang": "raw", "version": "0.1"}
        if user:
            options.update(user=user, **{"pass": password})
        await raw.send(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
        await raw.roundtrip()
        return raw

    async def roundtrip(self) -> list:
        """PING and wait for PONG; return the other operations seen before it."""
        await self.send(b"PING\r\n")
        seen = []
        while (op := await self.op()) != p.PONG:
            if not isinstance(op, p.Info):
                seen.append(op)
        return seen

    async def msg(self) -> p.Msg:
        while True:
            op = await self.op()
            if isinstance(op, p.Msg):
                return op

    async def close(self) -> None:
        await self.stream.aclose()


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=DEADLINE_S) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


async def fetch(server: Server, path: str) -> tuple[int, Any]:
    status, body, ctype = await trio.to_thread.run_sync(_get, server.monitor.http_port, path)
    return status, (json.loads(body) if ctype.startswith("application/json") else body.decode())


async def start(nursery: trio.Nursery, **options: Any) -> Server:
    server = Server(ServerOptions(host=HOST, port=0, http_port=0, seed=1, **options))
    await nursery.start(server.serve)
    assert server.monitor.http_port
    return server


async def test_endpoints_report_connections_and_counters() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        raw = await Raw.connect(server.port, name="watcher")
        await raw.send(b"SUB orders.* 1\r\n" + b"PUB orders.new 5\r\nhello\r\n" * 3)
        for _ in range(3):
            assert (await raw.msg()).payload == b"hello"

        status, varz = await fetch(server, "/varz")
        assert status == 200
        assert (varz["server_id"], varz["port"], varz["connections"]) == (server.server_id, server.port, 1)
        assert (varz["in_msgs"], varz["in_bytes"], varz["out_msgs"], varz["out_bytes"]) == (3, 15, 3, 15)
        assert varz["subscriptions"] == 1 and varz["http_port"] == server.monitor.http_port
        assert varz["start"].endswith("Z") and varz["uptime"].endswith("s")

        status, connz = await fetch(server, "/connz?subs=1")
        (conn,) = connz["connections"]
        assert (conn["name"], conn["lang"], conn["version"]) == ("watcher", "raw", "0.1")
        assert conn["subscriptions_list"] == ["orders.*"] and conn["in_msgs"] == 3
        assert "subscriptions_list" not in (await fetch(server, "/connz"))[1]["connections"][0]

        status, subsz = await fetch(server, "/subsz?subs=1&test=orders.old")
        assert subsz["num_subscriptions"] == 1
        assert [s["subject"] for s in subsz["subscriptions_list"]] == ["orders.*"]
        assert (await fetch(server, "/subsz?subs=1&test=other"))[1]["subscriptions_list"] == []
        assert (await fetch(server, "/routez"))[1]["num_routes"] == 0
        assert await fetch(server, "/healthz") == (200, {"status": "ok"})
        assert (await fetch(server, "/jsz"))[1]["disabled"] is True
        assert (await fetch(server, "/nope"))[0] == 404

        await raw.close()
        with trio.fail_after(DEADLINE_S):  # closed connections still count in the totals
            while server.clients:
                await trio.sleep(0.01)
        varz = (await fetch(server, "/varz"))[1]
        assert (varz["connections"], varz["total_connections"], varz["in_msgs"]) == (0, 1, 3)
        await server.shutdown()


async def test_connz_paging_and_sorting() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        clients = []
        for i in range(5):
            raw = await Raw.connect(server.port, name=f"c{i}")
            await raw.send(b"PUB nowhere 1\r\nx\r\n" * i)
            await raw.roundtrip()
            clients.append(raw)
        _, page = await fetch(server, "/connz?sort=msgs_from&limit=2&offset=1")
        assert (page["total"], page["num_connections"], page["offset"], page["limit"]) == (5, 2, 1, 2)
        assert [c["name"] for c in page["connections"]] == ["c3", "c2"]
        _, by_cid = await fetch(server, "/connz")
        assert [c["cid"] for c in by_cid["connections"]] == sorted(c["cid"] for c in by_cid["connections"])
        assert (await fetch(server, "/connz?offset=10"))[1]["connections"] == []
        for raw in clients:
            await raw.close()
        await server.shutdown()


async def test_metrics_are_prometheus_text() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        raw = await Raw.connect(server.port)
        await raw.send(b"PUB a 3\r\nabc\r\n" * 4)
        await raw.roundtrip()
        status, text = await fetch(server, "/metrics")
        assert status == 200
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["nats_varz_in_msgs_total"] == 4
        assert samples["nats_varz_in_bytes_total"] == 12
        assert samples["nats_varz_connections"] == 1
        await raw.close()
        await server.shutdown()


async def test_http_keep_alive_and_bad_requests() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        stream = await trio.open_tcp_stream(HOST, server.monitor.http_port)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send_all(request + request)
        data = b""
        with trio.fail_after(DEADLINE_S):
            while data.count(b'"status": "ok"') < 2:
                data += await stream.receive_some(65536)
        assert data.count(b"HTTP/1.1 200") == 2
        await stream.aclose()
        bad = await trio.open_tcp_stream(HOST, server.monitor.http_port)
        await bad.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        with trio.fail_after(DEADLINE_S):
            while await bad.receive_some(65536):
                pass
        await bad.aclose()
        assert (await fetch(server, "/healthz"))[0] == 200  # still serving
        await server.shutdown()


SYS_USERS = (User(name="sys", password="s3cret"), User(name="app", password="app"))


async def test_sys_requests_answered_for_system_users_only() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, auth_users=SYS_USERS, system_users=("sys",))
        sys_client = await Raw.connect(server.port, user="sys", password="s3cret")
        await sys_client.send(b"SUB _INBOX.sys 1\r\n")
        for subject in ("$SYS.REQ.SERVER.PING.VARZ", f"$SYS.REQ.SERVER.{server.server_id}.VARZ"):
            await sys_client.send(f"PUB {subject} _INBOX.sys 0\r\n\r\n".encode())
            reply = json.loads((await sys_client.msg()).payload)
            assert reply["server"]["id"] == server.server_id
            assert reply["data"]["server_id"] == server.server_id
        body = b'{"subscriptions":true}'
        await sys_client.send(b"PUB $SYS.REQ.SERVER.PING.CONNZ _INBOX.sys %d\r\n%s\r\n" % (len(body), body))
        conns = json.loads((await sys_client.msg()).payload)["data"]["connections"]
        assert conns[0]["subscriptions_list"] == ["_INBOX.sys"]
        await sys_client.send(b"PUB $SYS.REQ.SERVER.PING _INBOX.sys 0\r\n\r\n")
        assert json.loads((await sys_client.msg()).payload)["statsz"]["connections"] == 1

        app = await Raw.connect(server.port, user="app", password="app")
        await app.send(b"SUB _INBOX.app 1\r\nPUB $SYS.REQ.SERVER.PING.VARZ _INBOX.app 0\r\n\r\n")
        denied = await app.msg()  # the 503 no-responders status, as from nats-server
        assert denied.headers is not None and b"503" in denied.headers
        await sys_client.close()
        await app.close()
        await server.shutdown()


async def test_no_system_account_means_no_responders() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        raw = await Raw.connect(server.port)
        await raw.send(b"SUB r 1\r\nPUB $SYS.REQ.SERVER.PING r 0\r\n\r\n")
        status = await raw.msg()
        assert status.headers is not None and b"503" in status.headers
        await raw.close()
        await server.shutdown()


async def test_healthz_waits_for_jetstream_and_jsz_reports_streams(tmp_path: Any) -> None:
    from jetstream.service import JetStream

    async with trio.open_nursery() as nursery:
        server = await start(nursery, jetstream=True, store_dir=str(tmp_path))
        status, body = await fetch(server, "/healthz?js-enabled-only=true")
        assert (status, body["status"]) == (503, "unavailable")  # JetStream not started yet
        js = JetStream(server)
        js_scope = trio.CancelScope()

        async def run_js(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with js_scope:
                await js.run(task_status=task_status)
        await nursery.start(run_js)
        assert await fetch(server, "/healthz?js-enabled-only=true") == (200, {"status": "ok"})
        raw = await Raw.connect(server.port)
        create = json.dumps({"name": "S", "subjects": ["s.>"]}).encode()
        await raw.send(b"SUB r 1\r\nPUB $JS.API.STREAM.CREATE.S r %d\r\n%s\r\n" % (len(create), create))
        assert "config" in json.loads((await raw.msg()).payload)
        await raw.send(b"PUB s.1 r 2\r\nhi\r\n")
        assert json.loads((await raw.msg()).payload)["seq"] == 1
        with trio.fail_after(DEADLINE_S):  # the stream state is read off the event loop
            while True:
                jsz = (await fetch(server, "/jsz?streams=true"))[1]
                if jsz["messages"] == 1:
                    break
                await trio.sleep(0.05)
        (detail,) = jsz["account_details"][0]["stream_detail"]
        assert (jsz["streams"], detail["name"], detail["state"]["last_seq"]) == (1, "S", 1)
        varz = (await fetch(server, "/varz"))[1]
        assert varz["jetstream"]["stats"]["api"]["total"] >= 1
        _, metrics = await fetch(server, "/metrics")
        assert 'jetraft_stream_messages{server_name="%s",stream="S"} 1.0' % server.server_name in metrics
        await raw.close()
        js_scope.cancel()
        await server.shutdown()


async def test_slow_consumers_are_counted() -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, max_pending_bytes=256 * 1024)
        sleeper = await Raw.connect(server.port, name="sleeper")  # subscribes, never reads
        await sleeper.send(b"SUB big 1\r\n")
        await sleeper.roundtrip()
        publisher = await Raw.connect(server.port)
        payload = b"x" * 65536
        frame = b"PUB big %d\r\n%s\r\n" % (len(payload), payload)
        with trio.fail_after(DEADLINE_S * 2):
            for _ in range(400):  # bounded: 25 MiB, far past socket buffers and max_pending
                await publisher.send(frame * 4)
                if server.slow_consumers:
                    break
        assert server.slow_consumers == 1
        varz = (await fetch(server, "/varz"))[1]
        assert varz["slow_consumers"] == 1
        await publisher.close()
        await sleeper.close()
        await server.shutdown()

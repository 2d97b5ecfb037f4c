"""A deposed stream leader must not answer reads from its stale local state.

Three `jetraft server -js` processes and nats-py. The R3 stream's leader L is frozen (SIGSTOP);
the other two elect a new leader and commit more messages. While L is still frozen, a client
connected to L's server sends reads (stream info, MSG.GET, DIRECT.GET, consumer info): they sit
in L's socket. L is thawed (SIGCONT) and handles them first thing, still believing it leads (its
check-quorum step-down needs an election timeout of ticks). Every answer must show the new
messages: a leader confirms it still leads (a read-index round with a quorum) before answering
from local state, else it stays silent and the real leader's answer arrives through the routes.
A second scenario freezes both followers: the lone leader answers no read at all until they
come back. Every wait polls a condition against a deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
from collections.abc import Awaitable, Iterator
from typing import Any

import nats
import pytest

from cli.benchlib.launcher import LOOPBACK
from cli.cluster import stable_ports
from tests.cluster_support import ClusterNode, api, running_cluster, until

CLUSTER = "stale-test"
DEADLINE_S = 30.0
SCENARIO_TIMEOUT_S = 90.0
READ_TIMEOUT_S = 4.0
NO_ANSWER = (nats.errors.TimeoutError, asyncio.TimeoutError, nats.errors.NoRespondersError)


class Node(ClusterNode):
    def __init__(self, name: str, tmp: pathlib.Path) -> None:
        super().__init__(name, tmp, CLUSTER, client_port=stable_ports(1), cluster_port=stable_ports(2))

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.proc is not None
        os.kill(self.proc.proc.pid, sig)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))  # type: ignore[arg-type]


async def meta_ready(nodes: dict[str, Node]) -> None:
    nc = await nats.connect(nodes["n1"].url)
    try:
        async def leader() -> str:
            return (await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"]
        await until(leader, "a meta leader", DEADLINE_S)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("stale")
    nodes = {name: Node(name, tmp) for name in ("n1", "n2", "n3")}
    with running_cluster(nodes.values(), lambda: run(meta_ready(nodes)), log_chars=6000):
        try:
            yield nodes
        finally:
            for node in nodes.values():  # never leave a frozen process behind
                if node.proc is not None and node.proc.proc is not None and node.proc.alive():
                    node.signal(signal.SIGCONT)


async def make_stream(nc: Any, name: str) -> str:
    """An R3 stream with one message and a durable consumer; returns its leader's name."""
    body = json.dumps({"name": name, "subjects": [f"{name}.>"], "num_replicas": 3}).encode()
    created = await until(lambda: api(nc, f"$JS.API.STREAM.CREATE.{name}", body, 5.0), "stream created", DEADLINE_S)
    assert "error" not in created, created
    js = nc.jetstream()
    await js.publish(f"{name}.a", b"first")
    consumer = json.dumps({"stream_name": name, "config": {"durable_name": "D", "ack_policy": "explicit"}}).encode()
    await until(lambda: api(nc, f"$JS.API.CONSUMER.CREATE.{name}.D", consumer, 5.0), "consumer", DEADLINE_S)

    async def leader() -> str:
        info = await api(nc, f"$JS.API.STREAM.INFO.{name}")
        replicas = info.get("cluster", {}).get("replicas", [])
        return info["cluster"]["leader"] if len(replicas) == 2 and all(r["current"] for r in replicas) else ""
    return await until(leader, "stream leader with two current replicas", DEADLINE_S)


READS = ("info", "msg_get", "direct_get", "consumer_info")


def is_stale(kind: str, seen: Any) -> bool:
    """Whether a read of stream STALE missed the five messages committed without L."""
    return seen == 1 if kind in ("info", "consumer_info") else seen is False


async def read_once(nc: Any, stream: str, kind: str, seq: int) -> Any:
    """One read; what it saw as a comparable value (messages count, or whether `seq` exists)."""
    if kind == "info":
        return (await api(nc, f"$JS.API.STREAM.INFO.{stream}", timeout_s=READ_TIMEOUT_S))["state"]["messages"]
    if kind == "msg_get":
        got = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode(), READ_TIMEOUT_S)
        return "message" in got
    if kind == "direct_get":
        msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": seq}).encode(),
                               timeout=READ_TIMEOUT_S)
        return not (msg.headers or {}).get("Status")
    info = await api(nc, f"$JS.API.CONSUMER.INFO.{stream}.D", timeout_s=READ_TIMEOUT_S)
    return info["num_pending"] + info["num_ack_pending"]


def test_thawed_old_leader_answers_no_stale_read(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        helper = await nats.connect([n.url for n in cluster.values()])
        leader = await make_stream(helper, "STALE")
        await helper.close()
        old = cluster[leader]
        others = [n for n in cluster.values() if n is not old]
        near = await nats.connect(old.url, allow_reconnect=False)  # reads go through L's server
        far = await nats.connect(others[0].url)
        try:
            old.signal(signal.SIGSTOP)

            async def new_leader() -> str:
                info = await api(far, "$JS.API.STREAM.INFO.STALE")
                return info["cluster"]["leader"] if info["cluster"]["leader"] != leader else ""
            await until(new_leader, "a new stream leader", DEADLINE_S)
            js = far.jetstream()
            for i in range(5):
                await js.publish(f"STALE.b{i}", b"new")  # committed without L: messages 2..6
            reads = [asyncio.create_task(read_once(near, "STALE", kind, 6)) for kind in READS for _ in range(3)]
            await asyncio.sleep(0.2)  # let the requests reach L's (frozen) socket buffer
            old.signal(signal.SIGCONT)
            results = await asyncio.gather(*reads, return_exceptions=True)
            kinds = [kind for kind in READS for _ in range(3)]
            answered = [(k, r) for k, r in zip(kinds, results) if not isinstance(r, BaseException)]
            assert not [a for a in answered if is_stale(*a)], f"stale reads from the deposed leader: {results}"
            fresh: set[str] = set()
            stale_later: list[tuple[str, Any]] = []  # (`until` retries on exceptions: collect)

            async def all_fresh() -> bool:  # later reads through L's server: answered, never stale
                for kind in READS:
                    try:
                        got = await read_once(near, "STALE", kind, 6)
                    except NO_ANSWER:
                        continue
                    if is_stale(kind, got):
                        stale_later.append((kind, got))
                    else:
                        fresh.add(kind)
                return fresh == set(READS)
            await until(all_fresh, "fresh answers to every read through L's server", DEADLINE_S)
            assert not stale_later, f"stale reads through the old leader's server: {stale_later}"
        finally:
            old.signal(signal.SIGCONT)
            await near.close()
            await far.close()

    run(scenario())


def test_leader_without_quorum_answers_no_read(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        helper = await nats.connect([n.url for n in cluster.values()])
        leader = await make_stream(helper, "ALONE")
        await helper.close()
        followers = [n for n in cluster.values() if n.name != leader]
        nc = await nats.connect(cluster[leader].url, allow_reconnect=False)
        try:
            for node in followers:
                node.signal(signal.SIGSTOP)
            try:
                for kind in READS:
                    with pytest.raises(NO_ANSWER):  # no responders: it already stepped down
                        await read_once(nc, "ALONE", kind, 1)
            finally:
                for node in followers:
                    node.signal(signal.SIGCONT)
            assert await until(lambda: read_once(nc, "ALONE", "info", 1), "reads after the thaw", DEADLINE_S) == 1
        finally:
            await nc.close()

    run(scenario())


def test_thawed_old_meta_leader_answers_no_stale_list(cluster: dict[str, Node]) -> None:
    """The same for the meta leader: a stream created while it was frozen is in every
    STREAM.NAMES answer that reaches a client through the old meta leader's server."""
    async def scenario() -> None:
        helper = await nats.connect([n.url for n in cluster.values()])
        async def meta_leader() -> str:
            return (await api(helper, "$JS.API.INFO"))["meta_cluster"]["leader"]
        meta = await until(meta_leader, "a meta leader", DEADLINE_S)
        await helper.close()
        old = cluster[meta]
        near = await nats.connect(old.url, allow_reconnect=False)
        far = await nats.connect([n.url for n in cluster.values() if n is not old])
        try:
            old.signal(signal.SIGSTOP)

            async def created() -> dict[str, Any]:
                body = json.dumps({"name": "NEWS", "subjects": ["news.>"], "num_replicas": 1}).encode()
                got = await api(far, "$JS.API.STREAM.CREATE.NEWS", body, 3.0)
                return got if "error" not in got else {}
            await until(created, "NEWS created by a new meta leader", DEADLINE_S)
            names = [asyncio.create_task(api(near, "$JS.API.STREAM.NAMES", b"{}", READ_TIMEOUT_S)) for _ in range(6)]
            await asyncio.sleep(0.2)  # the requests wait in the frozen server's socket
            old.signal(signal.SIGCONT)
            results = await asyncio.gather(*names, return_exceptions=True)
            stale = [r for r in results if isinstance(r, dict) and "NEWS" not in (r.get("streams") or [])]
            assert not stale, f"stale STREAM.NAMES from the deposed meta leader: {stale}"

            async def listed() -> bool:
                got = await api(near, "$JS.API.STREAM.NAMES", b"{}", READ_TIMEOUT_S)
                return "NEWS" in (got.get("streams") or [])
            await until(listed, "NEWS listed through the old meta leader's server", DEADLINE_S)
        finally:
            old.signal(signal.SIGCONT)
            await near.close()
            await far.close()

    run(scenario())

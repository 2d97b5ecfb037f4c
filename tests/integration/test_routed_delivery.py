"""JetStream deliveries crossing a route show the client the stream subject, as nats-server does.

Three `jetraft server -js --cluster` processes and nats-py. An R3 stream's consumers run on the
stream leader; a client connected to another node gets its messages over a route (the RMSG is
addressed to the pull request's inbox or the push consumer's deliver subject, its reply carries
`<$JS.ACK reply>@<stream subject>`, and the client's node strips the suffix). The client must see
`msg.subject` equal to the published subject and a `$JS.ACK.` reply, and acking over that reply
must work (the consumer's ack-pending count drops). Every wait polls a condition against a
deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Iterator
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from cli.benchlib.launcher import LOOPBACK
from cli.cluster import stable_ports
from tests.cluster_support import ClusterNode, api, running_cluster, until

CLUSTER = "routed-delivery"
STREAM = "RDORDERS"
DEADLINE_S = 20.0
SCENARIO_TIMEOUT_S = 60.0


class Node(ClusterNode):
    def __init__(self, name: str, tmp: pathlib.Path) -> None:
        super().__init__(name, tmp, CLUSTER, client_port=stable_ports(1), cluster_port=stable_ports(2))

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))  # type: ignore[arg-type]


async def _meta_leader(nodes: dict[str, Node]) -> str:
    nc = await nats.connect(nodes["n1"].url)
    try:
        async def leader() -> str:
            return (await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"]
        return await until(leader, "a meta leader", DEADLINE_S)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("routed_delivery")
    nodes = {name: Node(name, tmp) for name in ("n1", "n2", "n3")}
    with running_cluster(nodes.values(), lambda: run(_meta_leader(nodes)), log_chars=6000):
        yield nodes


async def _stream_and_follower(nodes: dict[str, Node]) -> tuple[Any, str]:
    """Create the R3 stream (once); returns a connection to n1 and a node that is not its leader."""
    nc = await nats.connect(nodes["n1"].url)
    js = nc.jetstream()

    async def created() -> Any:
        try:
            return await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return await js.add_stream(name=STREAM, subjects=["orders.>"], num_replicas=3)
    await until(created, "the stream", DEADLINE_S)

    async def leader() -> str:
        return (await api(nc, f"$JS.API.STREAM.INFO.{STREAM}", timeout_s=1.0))["cluster"]["leader"]
    lead = await until(leader, "a stream leader", DEADLINE_S)
    follower = next(name for name in nodes if name != lead)
    return nc, follower


async def _ack_pending(js: Any, durable: str) -> int:
    return (await js.consumer_info(STREAM, durable)).num_ack_pending


def test_pull_fetch_on_a_follower_node_shows_the_stream_subject(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc1, follower = await _stream_and_follower(cluster)
        ncf = await nats.connect(cluster[follower].url)
        try:
            js1, jsf = nc1.jetstream(), ncf.jetstream()
            sent = [f"orders.k{i}" for i in range(5)]
            for i, subject in enumerate(sent):
                await js1.publish(subject, b"pull-%d" % i, timeout=5.0)
            await js1.add_consumer(STREAM, ConsumerConfig(durable_name="puller", ack_policy=AckPolicy.EXPLICIT,
                                                          filter_subject="orders.>"))
            sub = await jsf.pull_subscribe_bind("puller", stream=STREAM)
            got: list[Any] = []

            async def fetched() -> bool:
                got.extend(await sub.fetch(len(sent) - len(got), timeout=1.0))
                return len(got) >= len(sent)
            await until(fetched, "five messages fetched on a follower's node", DEADLINE_S)
            assert [m.subject for m in got] == sent
            assert [m.data for m in got] == [b"pull-%d" % i for i in range(5)]
            assert all(m.reply.startswith("$JS.ACK.") and "@" not in m.reply for m in got)
            assert [m.metadata.sequence.stream for m in got] == [1, 2, 3, 4, 5]
            assert await _ack_pending(js1, "puller") == 5
            await got[0].ack_sync(timeout=5.0)
            await got[1].ack_sync(timeout=5.0)
            assert await _ack_pending(js1, "puller") == 3
            for m in got[2:]:
                await m.ack_sync(timeout=5.0)

            async def drained() -> bool:
                return await _ack_pending(js1, "puller") == 0
            await until(drained, "every fetched message acked", DEADLINE_S)
        finally:
            await ncf.close()
            await nc1.close()
    run(scenario())


def test_push_subscriber_on_a_follower_node_sees_the_stream_subject(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc1, follower = await _stream_and_follower(cluster)
        ncf = await nats.connect(cluster[follower].url)
        try:
            js1, jsf = nc1.jetstream(), ncf.jetstream()
            received: asyncio.Queue[Any] = asyncio.Queue()

            async def on_msg(msg: Any) -> None:
                await received.put(msg)
            sub = await jsf.subscribe("orders.push.>", stream=STREAM, durable="pusher", cb=on_msg,
                                      manual_ack=True, config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
            info = await js1.consumer_info(STREAM, "pusher")
            assert info.config.deliver_subject  # a push consumer; its subscriber is on the follower
            sent = [f"orders.push.p{i}" for i in range(3)]
            for i, subject in enumerate(sent):
                await js1.publish(subject, b"push-%d" % i, timeout=5.0)
            got = [await asyncio.wait_for(received.get(), DEADLINE_S) for _ in sent]
            assert [m.subject for m in got] == sent
            assert all(m.reply.startswith("$JS.ACK.") and "@" not in m.reply for m in got)
            assert await _ack_pending(js1, "pusher") == 3
            for m in got:
                await m.ack_sync(timeout=5.0)

            async def acked() -> bool:
                return await _ack_pending(js1, "pusher") == 0
            await until(acked, "the push consumer's messages acked", DEADLINE_S)
            await sub.unsubscribe()
        finally:
            await ncf.close()
            await nc1.close()
    run(scenario())

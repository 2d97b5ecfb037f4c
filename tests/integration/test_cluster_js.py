"""Clustered JetStream end to end: three `jetraft server -js --cluster` processes and nats-py.

One cluster per module (each node has a client port, a cluster port P and the Raft port P+1;
every node is given all three route URLs). The scenarios run in order on the same cluster:
an R3 stream is created; messages published to one node are read from another; the stream
leader is SIGKILLed while a client holding all three URLs keeps publishing, and every
acknowledged message must be there after a new leader took over; the killed node restarts and
must catch up until all three replicas report the same content hash ($JSC.DIGEST); stream and
meta leader stepdowns move leadership; a durable pull consumer's AckSync'ed progress survives
a leader kill. The servers snapshot their stores and trim their Raft logs every 16 entries, so
the restarted node catches up through a snapshot as well as through the log. Every wait polls a condition against a deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from cli.benchlib.launcher import LOOPBACK
from cli.cluster import stable_ports
from tests.cluster_support import ClusterNode, api, running_cluster
from tests.cluster_support import until as poll_until

CLUSTER = "js-test"
DEADLINE_S = 20.0
SCENARIO_TIMEOUT_S = 60.0
STREAM = "ORDERS"
COMPACT_ENV = "JETRAFT_COMPACT_ENTRIES"
COMPACT_EVERY = 16
ROUNDS_DELETE = 10


class Node(ClusterNode):
    def __init__(self, name: str, tmp: pathlib.Path) -> None:
        # stable ports, below the ephemeral range: still free at restart (cluster port and Raft port)
        super().__init__(name, tmp, CLUSTER, client_port=stable_ports(1), cluster_port=stable_ports(2))

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("jscluster")
    nodes = {name: Node(name, tmp) for name in ("n1", "n2", "n3")}
    saved_env = os.environ.get(COMPACT_ENV)
    os.environ[COMPACT_ENV] = str(COMPACT_EVERY)  # snapshots often: restarts catch up through them
    try:
        with running_cluster(nodes.values(), lambda: run(wait_meta_leader(nodes)), log_chars=6000):
            yield nodes
    finally:
        if saved_env is None:
            os.environ.pop(COMPACT_ENV, None)
        else:
            os.environ[COMPACT_ENV] = saved_env


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))  # type: ignore[arg-type]


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = DEADLINE_S) -> Any:
    return await poll_until(check, what, timeout_s)


async def wait_meta_leader(nodes: dict[str, Node]) -> str:
    nc = await nats.connect(nodes["n1"].url)
    try:
        async def leader() -> str:
            info = await api(nc, "$JS.API.INFO", timeout_s=1.0)
            return info["meta_cluster"]["leader"]
        return await until(leader, "a meta leader")
    finally:
        await nc.close()


async def stream_leader(nc: Any) -> str:
    async def leader() -> str:
        info = await api(nc, f"$JS.API.STREAM.INFO.{STREAM}", timeout_s=1.0)
        return info["cluster"]["leader"]
    return await until(leader, "a stream leader")


async def digests(nc: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: await api(nc, f"$JSC.DIGEST.{n}.{STREAM}", timeout_s=1.0) for n in names}


async def connect_all(nodes: dict[str, Node], first: str | None = None) -> Any:
    urls = [nodes[first].url] if first else []
    urls += [n.url for name, n in nodes.items() if name != first]
    return await nats.connect(urls, dont_randomize=True, reconnect_time_wait=0.1,
                              max_reconnect_attempts=-1, connect_timeout=2)


async def publish_acked(js: Any, subject: str, payload: bytes, timeout_s: float = DEADLINE_S) -> Any:
    async def once() -> Any:
        return await js.publish(subject, payload, timeout=1.0)
    return await until(once, f"an ack for a publish to {subject}", timeout_s)


# -- scenarios, in order ------------------------------------------------------------------------
def test_r3_stream_publish_on_one_node_read_on_another(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc1, nc3 = await nats.connect(cluster["n1"].url), await nats.connect(cluster["n3"].url)
        js1, js3 = nc1.jetstream(), nc3.jetstream()
        info = await until(lambda: js1.add_stream(name=STREAM, subjects=["orders.>"], num_replicas=3),
                           "the stream to be created")
        assert info.config.num_replicas == 3
        for i in range(20):
            ack = await publish_acked(js1, f"orders.{i % 3}", b"msg-%d" % i)
            assert ack.seq == i + 1 and ack.stream == STREAM
        got = await js3.get_msg(STREAM, 7)
        assert got.data == b"msg-6"
        si = await js3.stream_info(STREAM)
        assert si.state.messages == 20 and si.state.last_seq == 20
        assert si.cluster.leader in cluster
        assert sorted(r.name for r in si.cluster.replicas) == sorted(set(cluster) - {si.cluster.leader})
        await until(lambda: _same_digest(nc3, list(cluster), 20), "equal replicas")
        await nc1.close()
        await nc3.close()
    run(scenario())


async def _same_digest(nc: Any, names: list[str], last_seq: int) -> bool:
    found = await digests(nc, names)
    return len({d["digest"] for d in found.values()}) == 1 and all(d["last_seq"] == last_seq for d in found.values())


def test_stream_leader_killed_new_leader_keeps_acked_and_restart_catches_up(cluster: dict[str, Node]) -> None:
    async def scenario() -> str:
        probe = await nats.connect(cluster["n1"].url)
        leader = await stream_leader(probe)
        await probe.close()
        nc = await connect_all(cluster, first=leader)  # starts on the node about to die
        js = nc.jetstream()
        acked = [(await publish_acked(js, "orders.k", b"before-%d" % i)).seq for i in range(30)]
        cluster[leader].kill()
        killed_at = time.monotonic()
        after = await publish_acked(js, "orders.k", b"after-kill")
        failover_s = time.monotonic() - killed_at
        acked.append(after.seq)
        # more than 2 * COMPACT_EVERY entries while it is down: its log position is gone
        acked += [(await publish_acked(js, "orders.k", b"after-%d" % i)).seq for i in range(3 * COMPACT_EVERY)]
        new_leader = await stream_leader(nc)
        assert new_leader != leader
        assert failover_s < 10.0, f"first ack {failover_s:.1f}s after the kill"
        for seq in acked:
            msg = await js.get_msg(STREAM, seq)
            assert msg.seq == seq
        si = await js.stream_info(STREAM)
        assert si.state.last_seq == acked[-1] and si.state.messages == 20 + len(acked)
        await nc.close()
        return leader

    killed = run(scenario())
    cluster[killed].start([n.route_url for n in cluster.values()])

    async def caught_up() -> None:
        nc = await nats.connect(cluster[killed].url)
        si = await nc.jetstream().stream_info(STREAM)
        await until(lambda: _same_digest(nc, list(cluster), si.state.last_seq), "the restarted replica to match")
        await nc.close()
    run(caught_up())
    restarted_log = cluster[killed].log_path.read_text(errors="replace")
    assert "stream.restored" in restarted_log.split("server.ready")[-1]  # it caught up from a snapshot


def test_stream_leader_stepdown_moves_leadership(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        before = await stream_leader(nc)
        reply = await until(lambda: api(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}", timeout_s=5.0),
                            "a stepdown reply")
        assert reply.get("success") is True, reply
        after = await until(lambda: _leader_other_than(nc, before), "a different stream leader")
        assert after != before
        ack = await publish_acked(nc.jetstream(), "orders.s", b"after-stepdown")
        assert ack.seq > 0
        await nc.close()
    run(scenario())


async def _leader_other_than(nc: Any, old: str) -> str | None:
    leader = (await api(nc, f"$JS.API.STREAM.INFO.{STREAM}", timeout_s=1.0))["cluster"]["leader"]
    return leader if leader and leader != old else None


def test_meta_leader_stepdown_moves_leadership(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        before = await wait_meta_leader(cluster)
        reply = await until(lambda: api(nc, "$JS.API.META.LEADER.STEPDOWN", timeout_s=5.0), "a stepdown reply")
        assert reply.get("success") is True, reply

        async def moved() -> str | None:
            leader = (await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"]
            return leader if leader and leader != before else None
        await until(moved, "a different meta leader")
        names = await until(lambda: _names(nc), "stream names from the new meta leader")
        assert names == [STREAM]
        await nc.close()
    run(scenario())


async def _names(nc: Any) -> list[str] | None:
    reply = await api(nc, "$JS.API.STREAM.NAMES", timeout_s=1.0)
    return reply.get("streams")


def test_durable_consumer_keeps_acked_progress_across_failover(cluster: dict[str, Node]) -> None:
    async def scenario() -> str:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        config = ConsumerConfig(durable_name="WORKER", ack_policy=AckPolicy.EXPLICIT, filter_subject="orders.k")
        await until(lambda: js.add_consumer(STREAM, config), "the consumer to be created")
        sub = await js.pull_subscribe_bind("WORKER", stream=STREAM)
        first = await sub.fetch(5, timeout=5)
        for msg in first:
            await msg.ack_sync(timeout=5)
        last_acked = first[-1].metadata.sequence.stream
        leader = await stream_leader(nc)
        cluster[leader].kill()

        async def next_one() -> Any:
            msgs = await sub.fetch(1, timeout=1)
            return msgs[0]
        msg = await until(next_one, "a delivery from the new leader")
        assert msg.metadata.sequence.stream > last_acked
        assert msg.metadata.num_delivered == 1
        await nc.close()
        return leader

    killed = run(scenario())
    cluster[killed].start([n.route_url for n in cluster.values()])


def test_update_purge_delete_and_kv_on_r3(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        # a meta leader may still be being elected after the previous test's kill
        await until(lambda: js.add_stream(name="U", subjects=["u.>"], num_replicas=3, max_msgs=5),
                    "the stream to be created")
        for i in range(8):
            await publish_acked(js, "u.a", b"%d" % i)
        assert (await js.stream_info("U")).state.messages == 5
        cfg = (await js.stream_info("U")).config
        cfg.max_msgs = 3
        updated = await js.update_stream(cfg)
        assert updated.config.max_msgs == 3 and updated.state.messages == 3
        assert await js.purge_stream("U")
        assert (await js.stream_info("U")).state.messages == 0
        await until(lambda: _same_digest_named(nc, "U"), "equal replicas of U after purge")
        assert await js.delete_stream("U")
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info("U")
        kv = await until(lambda: js.create_key_value(bucket="cfg", replicas=3), "the KV bucket")
        await kv.put("k", b"1")
        await kv.put("k", b"2")
        assert (await kv.get("k")).value == b"2"
        await nc.close()
    run(scenario())
    for node in cluster.values():  # only the committed delete removed U's data, everywhere
        assert not [p for p in (node.store_dir / "jetstream" / "streams").iterdir() if p.name.startswith("S-U-")]


async def _same_digest_named(nc: Any, stream: str) -> bool:
    found = [await api(nc, f"$JSC.DIGEST.{n}.{stream}", timeout_s=1.0) for n in ("n1", "n2", "n3")]
    return len({d["digest"] for d in found}) == 1


def test_r1_streams_are_placed_apart_and_reachable_from_every_node(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        conns = [await nats.connect(n.url) for n in cluster.values()]
        leaders = set()
        for i in range(3):
            js0 = conns[0].jetstream()
            info = await until(lambda: js0.add_stream(name=f"ONE{i}", subjects=[f"one.{i}"], num_replicas=1),
                               "the stream to be created")
            assert info.cluster.replicas in (None, [])
            leaders.add(info.cluster.leader)
            for nc in conns:  # publish through every node, read back through every node
                await publish_acked(nc.jetstream(), f"one.{i}", b"via")
            for nc in conns:
                assert (await nc.jetstream().stream_info(f"ONE{i}")).state.messages == 3
        assert len(leaders) >= 2  # placement spreads single-replica streams
        for nc in conns:
            await nc.close()
    run(scenario())


def test_push_consumer_delivers_to_a_client_on_another_node(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        probe = await nats.connect(cluster["n1"].url)
        leader = await stream_leader(probe)
        await probe.close()
        other = next(name for name in cluster if name != leader)
        nc = await nats.connect(cluster[other].url)  # not the stream leader's server
        js = nc.jetstream()
        sub = await until(lambda: js.subscribe("orders.push", durable="PUSHER", stream=STREAM), "a push consumer")
        await publish_acked(js, "orders.push", b"pushed")
        msg = await sub.next_msg(timeout=10)
        assert msg.data == b"pushed" and msg.metadata.stream == STREAM
        await msg.ack()
        await nc.close()
    run(scenario())


# -- durable consumers are meta assignments (meta/consumers.py, jetstream/cluster_consumers.py) ---
async def _account_consumers(nc: Any) -> int:
    return int((await api(nc, "$JS.API.INFO", timeout_s=1.0))["consumers"])


async def _consumer_names(nc: Any, stream: str) -> list[str]:
    reply = await api(nc, f"$JS.API.CONSUMER.NAMES.{stream}", timeout_s=1.0)
    assert "error" not in reply, reply
    return sorted(reply["consumers"])


async def _names_everywhere(cluster: dict[str, Node], stream: str, want: list[str]) -> bool:
    for node in cluster.values():
        nc = await nats.connect(node.url)
        try:
            if await _consumer_names(nc, stream) != want:
                return False
        finally:
            await nc.close()
    return True


def test_meta_consumers_assigned_listed_everywhere_and_kept_across_failovers(cluster: dict[str, Node]) -> None:
    async def scenario() -> str:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: js.add_stream(name="MC", subjects=["mc.>"], num_replicas=3), "stream MC")
        base = int((await until(lambda: api(nc, "$JS.API.INFO", timeout_s=1.0), "account info"))["consumers"])
        for name in ("A", "B"):
            cfg = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT)
            await until(lambda: js.add_consumer("MC", cfg), f"consumer {name}")
        assert await _account_consumers(nc) == base + 2  # counted from the meta state
        await until(lambda: _names_everywhere(cluster, "MC", ["A", "B"]), "A and B listed from every node")
        for i in range(4):
            await publish_acked(js, "mc.x", b"%d" % i)
        sub = await js.pull_subscribe_bind("B", stream="MC")
        for msg in await sub.fetch(2, timeout=5):
            await msg.ack_sync(timeout=5)

        # the meta leader changes: the assignments are in the replicated meta state
        before = await wait_meta_leader(cluster)
        reply = await until(lambda: api(nc, "$JS.API.META.LEADER.STEPDOWN", timeout_s=5.0), "a meta stepdown")
        assert reply.get("success") is True, reply

        async def new_meta_leader() -> str | None:
            leader = (await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"]
            return leader if leader and leader != before else None
        await until(new_meta_leader, "a new meta leader")
        assert await until(lambda: _account_consumers(nc), "account info") == base + 2

        # an updated config is the assigned one; a deleted durable stays deleted when the
        # stream's next leader starts its consumers
        updated = ConsumerConfig(durable_name="B", ack_policy=AckPolicy.EXPLICIT, description="updated")
        assert (await js.add_consumer("MC", updated)).config.description == "updated"
        await until(lambda: js.delete_consumer("MC", "A"), "deleting A")
        assert await _account_consumers(nc) == base + 1
        old = (await api(nc, "$JS.API.STREAM.INFO.MC", timeout_s=1.0))["cluster"]["leader"]
        await until(lambda: api(nc, "$JS.API.STREAM.LEADER.STEPDOWN.MC", timeout_s=5.0), "a stream stepdown")

        async def moved() -> str | None:
            leader = (await api(nc, "$JS.API.STREAM.INFO.MC", timeout_s=1.0))["cluster"]["leader"]
            return leader if leader and leader != old else None
        await until(moved, "a new MC leader")
        await until(lambda: _names_everywhere(cluster, "MC", ["B"]), "only B after the stepdown")
        assert (await js.consumer_info("MC", "B")).config.description == "updated"

        # the stream leader dies: the next one runs B from its replicated progress
        leader = (await api(nc, "$JS.API.STREAM.INFO.MC", timeout_s=1.0))["cluster"]["leader"]
        cluster[leader].kill()

        async def next_b() -> Any:
            return (await sub.fetch(1, timeout=1))[0]
        msg = await until(next_b, "a delivery of B from the next leader")
        assert msg.metadata.sequence.stream == 3 and msg.metadata.num_delivered == 1
        await nc.close()
        return leader

    killed = run(scenario())
    cluster[killed].start([n.route_url for n in cluster.values()])

    async def after_restart() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: _names_everywhere(cluster, "MC", ["B"]), "B listed after the restart")
        base = await _account_consumers(nc)
        await until(lambda: js.delete_stream("MC"), "deleting MC")
        assert await _account_consumers(nc) == base - 1  # the stream's assignments went with it
        await until(lambda: js.add_stream(name="MC", subjects=["mc.>"], num_replicas=3), "MC again")
        await until(lambda: _names_everywhere(cluster, "MC", []), "no consumers on the new MC")
        await js.delete_stream("MC")
        await nc.close()
    run(after_restart())


# -- interest / workqueue retention: acked messages leave every replica -------------------------
async def _digests_of(nc: Any, stream: str) -> list[dict[str, Any]]:
    return [await api(nc, f"$JSC.DIGEST.{n}.{stream}", timeout_s=1.0) for n in ("n1", "n2", "n3")]


@pytest.mark.parametrize("retention", ["interest", "workqueue"])
def test_interest_acked_messages_removed_on_every_replica(cluster: dict[str, Node], retention: str) -> None:
    stream = f"RET{retention.upper()}"

    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        body = json.dumps({"name": stream, "subjects": [f"{stream.lower()}.>"], "num_replicas": 3,
                           "retention": retention}).encode()
        created = await until(lambda: api(nc, f"$JS.API.STREAM.CREATE.{stream}", body, timeout_s=5.0),
                              f"stream {stream}")
        assert created["config"]["retention"] == retention, created
        names = ["W", "V"] if retention == "interest" else ["W"]  # a workqueue takes one unfiltered consumer
        for name in names:
            cfg = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT)
            await until(lambda: js.add_consumer(stream, cfg), f"consumer {name}")
        for i in range(10):
            await publish_acked(js, f"{stream.lower()}.a", b"%d" % i)

        async def messages_everywhere(count: int) -> bool:
            found = await _digests_of(nc, stream)
            return all(d["messages"] == count for d in found) and len({d["digest"] for d in found}) == 1

        for k, name in enumerate(names):
            sub = await js.pull_subscribe_bind(name, stream=stream)
            got = 0
            while got < 6:
                for msg in await sub.fetch(6 - got, timeout=5):
                    if k == 0:
                        await msg.ack_sync(timeout=5)
                    else:
                        await msg.ack()  # a plain ack: removed once the leader applied it
                    got += 1
            left = 4 if k == len(names) - 1 else 10  # interest: V still needs them after W acked
            await until(lambda: messages_everywhere(left), f"{left} messages on every replica, replicas equal")
        await js.delete_stream(stream)
        await nc.close()
    run(scenario())


# -- a deleted stream is gone everywhere once the delete is answered ------------------------------
def test_meta_deleted_stream_not_found_from_any_node_right_after_delete(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        conns = {name: await nats.connect(n.url) for name, n in cluster.items()}
        js = conns["n1"].jetstream()
        for round_ in range(ROUNDS_DELETE):
            info = await until(lambda: js.add_stream(name="GONE", subjects=["gone.>"], num_replicas=3), "GONE")
            await publish_acked(js, "gone.a", b"%d" % round_)
            # delete through a server that does not lead the stream, ask every server at once
            leader = info.cluster.leader or "n1"
            deleter = conns[next(n for n in conns if n != leader)]
            reply = await api(deleter, "$JS.API.STREAM.DELETE.GONE", timeout_s=10.0)
            assert reply.get("success") is True, reply
            answers = await asyncio.gather(*(api(nc, "$JS.API.STREAM.INFO.GONE", timeout_s=2.0)
                                             for nc in conns.values()))
            for answer in answers:  # the first answer each server's request got: never the stream
                assert answer.get("error", {}).get("err_code") == 10059, (round_, answer)
            for node in cluster.values():  # and its data is already gone everywhere
                streams_dir = node.store_dir / "jetstream" / "streams"
                assert not [p for p in streams_dir.iterdir() if p.name.startswith("S-GONE-")], node.name
        for nc in conns.values():
            await nc.close()
    run(scenario())


def test_interest_messages_nobody_wants_leave_every_replica(cluster: dict[str, Node]) -> None:
    """An interest stream keeps a message only while a consumer needs it (as the single server
    and nats-server do): the leader proposes its removal, so the replicas stay equal."""
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        body = json.dumps({"name": "NOINT", "subjects": ["noint.>"], "num_replicas": 3,
                           "retention": "interest"}).encode()
        await until(lambda: api(nc, "$JS.API.STREAM.CREATE.NOINT", body, timeout_s=5.0), "stream NOINT")

        async def messages_everywhere(count: int) -> bool:
            found = await _digests_of(nc, "NOINT")
            return all(d["messages"] == count for d in found) and len({d["digest"] for d in found}) == 1

        for i in range(5):  # no consumer: acknowledged, then removed everywhere
            assert (await publish_acked(js, "noint.a", b"%d" % i)).seq == i + 1
        await until(lambda: messages_everywhere(0), "no messages on any replica without consumers")
        cfg = ConsumerConfig(durable_name="ONLY_A", ack_policy=AckPolicy.EXPLICIT, filter_subject="noint.a")
        await until(lambda: js.add_consumer("NOINT", cfg), "consumer ONLY_A")
        for subject in ("noint.a", "noint.b", "noint.a", "noint.b", "noint.a"):
            await publish_acked(js, subject, b"x")
        await until(lambda: messages_everywhere(3), "only the 3 wanted messages on every replica")
        sub = await js.pull_subscribe_bind("ONLY_A", stream="NOINT")
        msgs = await sub.fetch(3, timeout=5)
        assert [m.metadata.sequence.stream for m in msgs] == [6, 8, 10]  # the noint.a ones
        for msg in msgs:
            await msg.ack_sync(timeout=5)
        await until(lambda: messages_everywhere(0), "nothing left once acked")
        await js.delete_stream("NOINT")
        await nc.close()
    run(scenario())


def test_meta_consumers_survive_a_restart_of_every_server(cluster: dict[str, Node]) -> None:
    async def create() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: js.add_stream(name="RS", subjects=["rs.>"], num_replicas=3), "stream RS")
        cfg = ConsumerConfig(durable_name="KEEP", ack_policy=AckPolicy.EXPLICIT)
        await until(lambda: js.add_consumer("RS", cfg), "consumer KEEP")
        await publish_acked(js, "rs.a", b"1")
        await nc.close()
    run(create())
    for node in cluster.values():
        node.stop()
    for node in cluster.values():
        node.start([n.route_url for n in cluster.values()])

    async def after() -> None:
        await wait_meta_leader(cluster)
        await until(lambda: _names_everywhere(cluster, "RS", ["KEEP"]), "KEEP listed from every node")
        nc = await connect_all(cluster)
        sub = await nc.jetstream().pull_subscribe_bind("KEEP", stream="RS")

        async def first() -> Any:
            return (await sub.fetch(1, timeout=1))[0]
        assert (await until(first, "a delivery of KEEP")).data == b"1"
        await nc.close()
    run(after())

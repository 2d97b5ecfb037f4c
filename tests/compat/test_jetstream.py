"""JetStream through the real nats-py client: streams, publish, pull and push consumers.

Every test runs against JetRaft and the reference nats-server (`-js -sd DIR`), so each assertion
is checked to be real JetStream behaviour. One server per kind per module; each test uses its
own stream names. No sleeps: waits are on conditions with deadlines (fetch timeouts, next_msg
timeouts, polling stream info).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from tests.compat.js_support import api, connect, js_server, run, wait_until
from tests.compat.servers import KINDS, ServerProcess


@pytest.fixture(scope="module", params=KINDS)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with js_server(request.param, tmp_path_factory.mktemp(f"js-{request.param}")) as proc:
        yield proc


def test_stream_lifecycle(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        info = await js.add_stream(name="LIFE", subjects=["life.>"], description="d")
        assert info.config.name == "LIFE" and info.state.messages == 0
        assert info.config.duplicate_window == 120.0 and info.config.max_msgs == -1
        again = await js.add_stream(name="LIFE", subjects=["life.>"], description="d")
        assert again.config.subjects == ["life.>"]
        with pytest.raises(nats.js.errors.BadRequestError) as exc:
            await js.add_stream(name="LIFE", subjects=["other.>"])
        assert exc.value.err_code == 10058
        with pytest.raises(nats.js.errors.BadRequestError) as exc:
            await js.add_stream(name="LIFE2", subjects=["life.a"])
        assert exc.value.err_code == 10065
        assert await js.find_stream_name_by_subject("life.x") == "LIFE"
        updated = await js.update_stream(StreamConfig(name="LIFE", subjects=["life.>", "more"], max_msgs=5))
        assert updated.config.max_msgs == 5 and updated.config.subjects == ["life.>", "more"]
        assert "LIFE" in [s.config.name for s in await js.streams_info()]
        assert await js.delete_stream("LIFE") is True
        with pytest.raises(nats.js.errors.NotFoundError) as exc:
            await js.stream_info("LIFE")
        assert exc.value.err_code == 10059

    run(scenario)


def test_publish_acks_dedup_and_expectations(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="PUB", subjects=["pub.*"])
        acks = [await js.publish(f"pub.{i % 3}", b"m%d" % i) for i in range(6)]
        assert [a.seq for a in acks] == [1, 2, 3, 4, 5, 6] and acks[0].stream == "PUB"
        first = await js.publish("pub.x", b"once", headers={"Nats-Msg-Id": "id-1"})
        dup = await js.publish("pub.x", b"twice", headers={"Nats-Msg-Id": "id-1"})
        assert dup.seq == first.seq == 7 and dup.duplicate
        with pytest.raises(nats.js.errors.APIError) as exc:
            await js.publish("pub.x", b"no", headers={"Nats-Expected-Last-Sequence": "3"})
        assert exc.value.err_code == 10071
        with pytest.raises(nats.js.errors.APIError) as exc:
            await js.publish("pub.x", b"no", headers={"Nats-Expected-Stream": "OTHER"})
        assert exc.value.err_code == 10060
        ok = await js.publish("pub.1", b"yes", headers={"Nats-Expected-Last-Subject-Sequence": "5"})
        assert ok.seq == 8
        info = await js.stream_info("PUB")
        assert (info.state.messages, info.state.last_seq) == (8, 8)
        msg = await js.get_msg("PUB", 7)
        assert msg.data == b"once" and msg.subject == "pub.x"
        last = await js.get_last_msg("PUB", "pub.1")
        assert last.seq == 8 and last.data == b"yes"
        assert await js.delete_msg("PUB", 2)
        with pytest.raises(nats.js.errors.APIError):
            await js.get_msg("PUB", 2)
        assert await js.purge_stream("PUB", subject="pub.0")
        info = await js.stream_info("PUB")
        assert (info.state.messages, info.state.first_seq) == (5, 3)  # 2 deleted, pub.0 (1, 4) purged

    run(scenario)


def test_pull_fetch_ack_nak_and_redelivery(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="PULL", subjects=["pull.>"])
        for i in range(10):
            await js.publish("pull.a", b"%d" % i)
        psub = await js.pull_subscribe("pull.>", durable="worker", config=ConsumerConfig(ack_wait=1.0))
        msgs = await psub.fetch(4, timeout=2)
        assert [m.data for m in msgs] == [b"0", b"1", b"2", b"3"]
        assert msgs[0].metadata.num_pending == 9 and msgs[3].metadata.sequence.consumer == 4
        for m in msgs[:3]:
            await m.ack()
        await msgs[3].nak()
        rest = []
        for _ in range(10):  # bounded: 7 messages are due (3 again, then 4..9)
            rest += await psub.fetch(7 - len(rest), timeout=2)
            if len(rest) >= 7:
                break
        assert sorted(m.data for m in rest) == [b"%d" % i for i in range(3, 10)]
        again = [m for m in rest if m.data == b"3"][0]
        assert again.metadata.num_delivered == 2
        for m in rest:
            if m.data != b"4":
                await m.ack()
        # rest[0] is never acked: after ack_wait (1 s) it comes back.
        redelivered = await psub.fetch(1, timeout=5)
        assert redelivered[0].data == b"4" and redelivered[0].metadata.num_delivered == 2
        assert redelivered[0].metadata.sequence.stream == 5
        await redelivered[0].ack_sync()
        with pytest.raises(asyncio.TimeoutError):  # nats-py raises either TimeoutError
            await psub.fetch(1, timeout=0.5)
        info = await js.consumer_info("PULL", "worker")
        assert info.num_pending == 0 and info.num_ack_pending == 0
        assert info.delivered.stream_seq == 10 and info.ack_floor.stream_seq == 10

    run(scenario)


def test_push_ephemeral_durable_and_queue(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="PUSH", subjects=["push.>"])
        for i in range(5):
            await js.publish(f"push.{i}", b"%d" % i)
        eph = await js.subscribe("push.>")
        got = [await eph.next_msg(timeout=2) for _ in range(5)]
        assert [m.subject for m in got] == [f"push.{i}" for i in range(5)]
        for m in got:
            await m.ack()
        dur = await js.subscribe("push.3", durable="d3", manual_ack=True)
        m = await dur.next_msg(timeout=2)
        assert m.data == b"3" and m.metadata.consumer == "d3"
        await m.ack_sync()
        await js.publish("push.3", b"later")
        m = await dur.next_msg(timeout=2)
        assert m.data == b"later" and m.metadata.sequence.stream == 6
        await m.ack_sync()
        info = await js.consumer_info("PUSH", "d3")
        assert info.push_bound and info.num_ack_pending == 0 and info.delivered.stream_seq == 6

    run(scenario)


def test_push_queue_group_splits_messages(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="QG", subjects=["qg.>"])
        received: list[tuple[int, bytes]] = []

        def handler(worker: int):  # noqa: ANN202
            async def cb(msg) -> None:  # noqa: ANN001
                received.append((worker, msg.data))
                await msg.ack()
            return cb

        await js.subscribe("qg.>", queue="workers", cb=handler(1))
        await js.subscribe("qg.>", queue="workers", cb=handler(2))
        for i in range(40):
            await js.publish("qg.x", b"%d" % i)

        async def all_received() -> bool:
            return len(received) >= 40

        await wait_until(all_received, what="40 queue deliveries")
        assert sorted(data for _, data in received) == sorted(b"%d" % i for i in range(40))
        info = await js.consumer_info("QG", "workers")
        assert info.config.deliver_group == "workers" and info.num_pending == 0

    run(scenario)


def test_ordered_consumer_and_deliver_policies(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="ORD", subjects=["ord.>"])
        for i in range(20):
            await js.publish(f"ord.{i % 4}", b"%d" % i)
        sub = await js.subscribe("ord.>", ordered_consumer=True)
        seen = [await sub.next_msg(timeout=2) for _ in range(20)]
        assert [m.data for m in seen] == [b"%d" % i for i in range(20)]
        assert [m.metadata.sequence.consumer for m in seen] == list(range(1, 21))
        assert seen[-1].metadata.num_pending == 0
        last = await js.subscribe("ord.>", deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                                  config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        tail = sorted([(await last.next_msg(timeout=2)).data for _ in range(4)])
        assert tail == sorted([b"16", b"17", b"18", b"19"])
        new = await js.subscribe("ord.>", deliver_policy=DeliverPolicy.NEW)
        await js.publish("ord.9", b"fresh")
        assert (await new.next_msg(timeout=2)).data == b"fresh"

    run(scenario)


def test_fetch_on_empty_consumer_times_out_quickly(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="EMPTY", subjects=["empty"])
        psub = await js.pull_subscribe("empty", durable="e")
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(asyncio.TimeoutError):  # nats-py raises either TimeoutError
            await psub.fetch(3, timeout=0.5)
        assert loop.time() - start < 3.0
        await js.publish("empty", b"now")
        msgs = await psub.fetch(3, timeout=2)
        assert [m.data for m in msgs] == [b"now"]
        info = await js.consumer_info("EMPTY", "e")
        assert info.num_ack_pending == 1

    run(scenario)


def test_raw_pull_statuses(srv: ServerProcess) -> None:
    """no_wait on an empty consumer answers 404; an expiring request answers 408."""

    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="RAW", subjects=["raw"])
        await js.add_consumer("RAW", ConsumerConfig(durable_name="r", ack_policy=AckPolicy.EXPLICIT))
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.RAW.r", b'{"batch":1,"no_wait":true}', reply=inbox)
        status = await sub.next_msg(timeout=2)
        assert status.headers and status.headers.get("Status") == "404"
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.RAW.r", b'{"batch":2,"expires":200000000}', reply=inbox)
        status = await sub.next_msg(timeout=3)
        assert status.headers.get("Status") == "408"
        info = await api(nc, "$JS.API.CONSUMER.INFO.RAW.r")
        assert info["num_waiting"] == 0

    run(scenario)


def test_max_msgs_limit_and_workqueue(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="LIM", subjects=["lim"], max_msgs=3)
        for i in range(5):
            await js.publish("lim", b"%d" % i)
        info = await js.stream_info("LIM")
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (3, 3, 5)
        await js.add_stream(name="NEWLIM", subjects=["newlim"], max_msgs=2, discard="new")
        await js.publish("newlim", b"1")
        await js.publish("newlim", b"2")
        with pytest.raises(nats.js.errors.APIError) as exc:
            await js.publish("newlim", b"3")
        assert exc.value.err_code == 10077
        await js.add_stream(name="WQ", subjects=["wq"], retention="workqueue")
        for i in range(3):
            await js.publish("wq", b"%d" % i)
        psub = await js.pull_subscribe("wq", durable="wq")
        for m in await psub.fetch(3, timeout=2):
            await m.ack_sync()

        async def drained() -> bool:
            return (await js.stream_info("WQ")).state.messages == 0

        await wait_until(drained, what="workqueue messages removed after ack")

    run(scenario)

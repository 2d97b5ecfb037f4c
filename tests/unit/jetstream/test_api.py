"""The $JS.API handlers, publish path and delivery, in process (no sockets, no subprocess).

Time-dependent behaviour (ack_wait redelivery, pull request expiry, idle heartbeats, ephemeral
reaping) runs under pytest-trio's autojump MockClock: JetStream's clock is trio's clock, so the
tests advance time instead of sleeping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from jetstream.api import decode_json, lookup, require_empty
from jetstream.errors import JsApiException
from jetstream.headers import encode_headers
from jetstream.info import rfc3339_ns
from tests.unit.jetstream.js_harness import BASE_NS, Harness, running_js

MEM = {"storage": "memory"}


async def make_stream(h: Harness, name: str, subjects: list[str], **extra: object) -> dict:
    resp = await h.api(f"STREAM.CREATE.{name}", {"name": name, "subjects": subjects, **MEM, **extra})
    assert "error" not in resp, resp
    return resp


async def publish(h: Harness, subject: str, payload: bytes, headers: bytes | None = None) -> dict:
    return (await h.request(subject, payload, headers)).json()


def test_router_table() -> None:
    assert lookup(["STREAM", "CREATE", "S"])[1] == "stream_create_response"
    assert lookup(["STREAM", "MSG", "GET", "S"])[1] == "stream_msg_get_response"
    assert lookup(["CONSUMER", "CREATE", "S", "c", "a", "b"])[1] == "consumer_create_response"
    assert lookup(["CONSUMER", "DURABLE", "CREATE", "S", "c"])[1] == "consumer_create_response"
    assert lookup(["STREAM", "CREATE"])[0] is None  # missing the stream token
    assert lookup(["STREAM", "INFO", "S", "extra"])[0] is None
    assert lookup(["NOPE"])[0] is None


def test_request_decoding() -> None:
    assert decode_json(b"") == {}
    assert decode_json(b' {"a": 1} ', frozenset({"a"})) == {"a": 1}
    for body, code in ((b"{x", 10025), (b"[]", 10025), (b'{"b": 1}', 10025)):
        with pytest.raises(JsApiException) as exc:
            decode_json(body, frozenset({"a"}))
        assert exc.value.error.err_code == code
    require_empty(b"  ")
    require_empty(b"{}")
    with pytest.raises(JsApiException) as exc:
        require_empty(b'{"a": 1}')
    assert exc.value.error.err_code == 10038


async def test_unknown_subject_and_api_level(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        resp = await h.api("BOGUS.THING")
        assert resp["type"].endswith("system_response") and resp["error"]["err_code"] == 10003
        high = encode_headers([("Nats-Required-Api-Level", "99")])
        resp = await h.api("INFO", b"", high)
        assert resp["error"]["err_code"] == 10185 and resp["error"]["code"] == 412
        info = await h.api("INFO")
        assert info["streams"] == 0 and info["api"]["total"] >= 3 and info["api"]["errors"] >= 2


async def test_publish_ack_dedup_and_rejections(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "P", ["p.>"], max_msg_size=64)
        assert await publish(h, "p.a", b"one") == {"stream": "P", "seq": 1}
        msg_id = encode_headers([("Nats-Msg-Id", "x")])
        assert await publish(h, "p.a", b"two", msg_id) == {"stream": "P", "seq": 2}
        assert await publish(h, "p.b", b"dup", msg_id) == {"stream": "P", "seq": 2, "duplicate": True}
        too_big = await publish(h, "p.a", b"x" * 65)
        assert too_big["error"]["err_code"] == 10054 and too_big["seq"] == 0
        wrong = await publish(h, "p.a", b"3", encode_headers([("Nats-Expected-Last-Sequence", "1")]))
        assert wrong["error"]["err_code"] == 10071 and wrong["error"]["description"] == "wrong last sequence: 2"
        info = await h.api("STREAM.INFO.P")
        assert (info["state"]["messages"], info["state"]["last_seq"]) == (2, 2)


async def test_group_commit_acks_every_publish_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many publishes queued at once are committed in batches; every one gets its own ack."""
    from jetstream.runtime import StreamRuntime

    batches: list[int] = []
    original = StreamRuntime.apply_batch

    async def counting(self: StreamRuntime, cmds: list) -> list:
        batches.append(len(cmds))
        return await original(self, cmds)

    monkeypatch.setattr(StreamRuntime, "apply_batch", counting)
    async with running_js(tmp_path) as h:
        await h.api("STREAM.CREATE.G", {"name": "G", "subjects": ["g"]})  # file storage (SQLite)
        inbox = h.inbox()
        for i in range(500):
            h.publish("g", b"%d" % i, inbox.subject)
        acks = [(await inbox.next()).json() for _ in range(500)]
        assert sorted(a["seq"] for a in acks) == list(range(1, 501))
        assert sum(batches) == 500 and len(batches) < 10  # one commit (fsync) for many publishes
        got = await h.api("STREAM.MSG.GET.G", {"seq": 321})
        assert got["message"]["subject"] == "g"
        assert await h.request("$JS.API.DIRECT.GET.G", b'{"seq": 1}') is not None


async def test_direct_get_forms_and_statuses(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "D", ["d.>"], allow_direct=True)
        await publish(h, "d.k", b"v1", encode_headers([("X", "1")]))
        await publish(h, "d.k", b"v2")
        last = await h.request("$JS.API.DIRECT.GET.D.d.k")
        assert last.payload == b"v2" and last.header("Nats-Sequence") == "2"
        assert last.header("Nats-Subject") == "d.k" and last.header("Nats-Stream") == "D"
        first = await h.request("$JS.API.DIRECT.GET.D", b'{"seq": 1}')
        assert first.payload == b"v1" and first.header("X") == "1" and first.header("Nats-Time-Stamp")
        missing = await h.request("$JS.API.DIRECT.GET.D", b'{"seq": 9}')
        assert missing.status == 404 and missing.payload == b""
        empty = await h.request("$JS.API.DIRECT.GET.D", b"")
        assert empty.status == 408


async def test_pull_redelivery_after_ack_wait(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "R", ["r"])
        await publish(h, "r", b"m")
        cfg = {"durable_name": "c", "ack_policy": "explicit", "ack_wait": 2_000_000_000}
        assert "error" not in await h.api("CONSUMER.CREATE.R.c", {"stream_name": "R", "config": cfg})
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.R.c", b'{"batch": 2, "expires": 10000000000}', inbox.subject)
        first = await inbox.next()
        start = trio.current_time()
        again = await inbox.next()
        assert first.payload == again.payload == b"m"
        assert first.reply.split(".")[4] == "1" and again.reply.split(".")[4] == "2"  # delivery count
        assert 2.0 <= trio.current_time() - start < 2.5
        h.publish(again.reply, b"+ACK")
        info = await h.api("CONSUMER.INFO.R.c")
        assert info["num_ack_pending"] == 0 and info["num_redelivered"] == 1


async def test_pull_expiry_no_wait_and_heartbeat(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "E", ["e"])
        await h.api("CONSUMER.CREATE.E.c", {"stream_name": "E", "config": {"durable_name": "c", "ack_policy": "explicit"}})
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.E.c", b'{"batch": 1, "no_wait": true}', inbox.subject)
        assert (await inbox.next()).status == 404
        body = b'{"batch": 3, "expires": 3000000000, "idle_heartbeat": 1000000000}'
        h.publish("$JS.API.CONSUMER.MSG.NEXT.E.c", body, inbox.subject)
        beats = [await inbox.next(), await inbox.next()]
        assert [m.status for m in beats] == [100, 100]
        done = await inbox.next()
        assert done.status == 408 and done.header("Nats-Pending-Messages") == "3"
        bad = b'{"batch": 1, "expires": 1000000000, "idle_heartbeat": 900000000}'
        h.publish("$JS.API.CONSUMER.MSG.NEXT.E.c", bad, inbox.subject)
        assert (await inbox.next()).status == 400


async def test_push_heartbeat_flow_control_and_reaping(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "F", ["f"])
        for i in range(3):
            await publish(h, "f", b"%d" % i)
        deliver = h.inbox()
        cfg = {"deliver_subject": deliver.subject, "ack_policy": "none", "flow_control": True,
               "idle_heartbeat": 1_000_000_000, "inactive_threshold": 3_000_000_000}
        created = await h.api("CONSUMER.CREATE.F", {"stream_name": "F", "config": cfg})
        name = created["name"]
        msgs = [await deliver.next() for _ in range(3)]
        assert [m.payload for m in msgs] == [b"0", b"1", b"2"] and msgs[2].reply.endswith(".0")
        beat = await deliver.next()
        assert beat.status == 100 and beat.header("Nats-Last-Consumer") == "3"
        assert beat.header("Nats-Last-Stream") == "3"
        deliver.close()  # interest gone: the ephemeral consumer is reaped after inactive_threshold
        with trio.fail_after(10):
            while name in (await h.api("CONSUMER.NAMES.F"))["consumers"]:
                await trio.sleep(0.5)


async def test_ack_all_and_term(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "A", ["a"])
        for i in range(4):
            await publish(h, "a", b"%d" % i)
        await h.api("CONSUMER.CREATE.A.c", {"stream_name": "A", "config": {"durable_name": "c", "ack_policy": "all"}})
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.A.c", b"4", inbox.subject)
        msgs = [await inbox.next() for _ in range(4)]
        ack_reply = await h.request(msgs[2].reply, b"+ACK")  # acks 1..3, answers the ack request
        assert ack_reply.payload == b""
        info = await h.api("CONSUMER.INFO.A.c")
        assert info["num_ack_pending"] == 1 and info["ack_floor"]["stream_seq"] == 3
        h.publish(msgs[3].reply, b"+TERM")
        info = await h.api("CONSUMER.INFO.A.c")
        assert info["num_ack_pending"] == 0


async def test_interest_retention_keeps_messages_until_every_consumer_acked(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "I", ["i"], retention="interest")
        for name in ("c1", "c2"):
            cfg = {"durable_name": name, "ack_policy": "explicit"}
            assert "error" not in await h.api(f"CONSUMER.CREATE.I.{name}", {"stream_name": "I", "config": cfg})
        await publish(h, "i", b"m")
        replies = {}
        for name in ("c1", "c2"):
            inbox = h.inbox()
            h.publish(f"$JS.API.CONSUMER.MSG.NEXT.I.{name}", b"1", inbox.subject)
            replies[name] = (await inbox.next()).reply
        await h.request(replies["c1"], b"+ACK")
        # Barrier: c1's task answers this no_wait pull only after handling the removal.
        barrier = await h.request("$JS.API.CONSUMER.MSG.NEXT.I.c1", b'{"no_wait": true}')
        assert barrier.status == 404
        assert (await h.api("STREAM.INFO.I"))["state"]["messages"] == 1  # c2 still needs it
        await h.request(replies["c2"], b"+ACK")
        with trio.fail_after(5):
            while (await h.api("STREAM.INFO.I"))["state"]["messages"] != 0:
                await trio.sleep(0.01)


async def test_pull_request_of_a_departed_client_gets_no_messages(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "G2", ["g2"])
        await h.api("CONSUMER.CREATE.G2.c", {"stream_name": "G2", "config": {"durable_name": "c", "ack_policy": "explicit"}})
        gone = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.G2.c", b'{"batch": 1, "expires": 60000000000}', gone.subject)
        assert (await h.api("CONSUMER.INFO.G2.c"))["num_waiting"] == 1
        gone.close()
        with trio.fail_after(5):  # the consumer notices on its next timer pass (<= 1 s)
            while (await h.api("CONSUMER.INFO.G2.c"))["num_waiting"] != 0:
                await trio.sleep(0.05)
        await publish(h, "g2", b"m")
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.G2.c", b"1", inbox.subject)
        msg = await inbox.next()
        assert msg.payload == b"m" and msg.reply.split(".")[4] == "1"  # first delivery, not a redelivery


async def test_max_age_expires_old_messages(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "AGE", ["age"], max_age=3_000_000_000)
        await publish(h, "age", b"old")
        await trio.sleep(2)
        await publish(h, "age", b"newer")
        with trio.fail_after(10):
            while (await h.api("STREAM.INFO.AGE"))["state"]["messages"] != 1:
                await trio.sleep(0.5)
        assert (await h.api("STREAM.INFO.AGE"))["state"]["first_seq"] == 2


async def test_pause_holds_delivery_and_reset_redelivers(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "PZ", ["pz"])
        for i in range(3):
            await publish(h, "pz", b"%d" % i)
        await h.api("CONSUMER.CREATE.PZ.c", {"stream_name": "PZ", "config": {"durable_name": "c", "ack_policy": "explicit"}})
        until = rfc3339_ns(BASE_NS + int((trio.current_time() + 5) * 1e9))
        paused = await h.api("CONSUMER.PAUSE.PZ.c", {"pause_until": until})
        assert paused["paused"] and paused["pause_remaining"] > 0
        inbox = h.inbox()
        start = trio.current_time()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.PZ.c", b'{"batch": 3, "expires": 30000000000}', inbox.subject)
        first = await inbox.next()
        assert trio.current_time() - start >= 4.9 and first.payload == b"0"
        rest = [await inbox.next() for _ in range(2)]
        h.publish(first.reply, b"+ACK")
        reset = await h.api("CONSUMER.RESET.PZ.c", b"")
        assert reset["reset_seq"] == 2 and reset["num_ack_pending"] == 0 and reset["num_pending"] == 2
        h.publish("$JS.API.CONSUMER.MSG.NEXT.PZ.c", b"2", inbox.subject)
        again = [await inbox.next() for _ in range(2)]
        assert [m.payload for m in again] == [m.payload for m in rest] == [b"1", b"2"]
        assert again[0].reply.split(".")[6] == "1"  # consumer sequence restarted


async def test_a_crashing_consumer_task_is_contained_and_restarted(
    tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jetstream.delivery import ConsumerRuntime

    original = ConsumerRuntime._deliver_some
    failures = []

    async def flaky(self: ConsumerRuntime) -> bool:
        if not failures:
            failures.append(1)
            raise RuntimeError("injected bug")
        return await original(self)

    monkeypatch.setattr(ConsumerRuntime, "_deliver_some", flaky)
    async with running_js(tmp_path) as h:
        await make_stream(h, "X", ["x"])
        await publish(h, "x", b"m")
        await h.api("CONSUMER.CREATE.X.c", {"stream_name": "X", "config": {"durable_name": "c", "ack_policy": "explicit"}})
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.X.c", b'{"batch": 1, "expires": 10000000000}', inbox.subject)
        msg = await inbox.next()
        assert msg.payload == b"m" and failures == [1]
        assert (await h.api("STREAM.INFO.X"))["state"]["messages"] == 1


async def test_per_message_ttl_expires(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with running_js(tmp_path) as h:
        await make_stream(h, "TTL", ["ttl.>"], allow_msg_ttl=True)
        assert (await publish(h, "ttl.a", b"short", encode_headers([("Nats-TTL", "2s")])))["seq"] == 1
        assert (await publish(h, "ttl.b", b"forever"))["seq"] == 2
        start = trio.current_time()
        with trio.fail_after(10):
            while (await h.api("STREAM.INFO.TTL"))["state"]["messages"] != 1:
                await trio.sleep(0.25)
        assert trio.current_time() - start >= 1.5
        assert (await h.api("STREAM.MSG.GET.TTL", {"seq": 2}))["message"]["subject"] == "ttl.b"


async def test_server_storage_limit(tmp_path: Path) -> None:
    async with running_js(tmp_path, max_file_store_bytes=2000) as h:
        too_big = await h.api("STREAM.CREATE.BIG", {"name": "BIG", "subjects": ["big"], "max_bytes": 5000})
        assert too_big["error"]["err_code"] == 10047
        await h.api("STREAM.CREATE.L", {"name": "L", "subjects": ["l"]})
        acks = [await publish(h, "l", b"x" * 200) for _ in range(15)]
        stored = [a["seq"] for a in acks if "error" not in a]
        rejected = [a for a in acks if "error" in a]
        assert stored == list(range(1, len(stored) + 1)) and 5 <= len(stored) < 15
        assert rejected and all(a["error"]["err_code"] == 10047 for a in rejected)
        info = await h.api("STREAM.INFO.L")
        assert info["state"]["messages"] == len(stored) and info["state"]["bytes"] >= 2000

"""Differential test of the $JS.API: the same request script against JetRaft and nats-server.

The script (js_requests.py) mixes valid requests with malformed JSON, unknown and wrongly typed
fields, invalid names and subjects, mismatches and missing streams/consumers. For every step
the two responses must agree on `type`, on the error's `code` and `err_code`, on the
description (except for JSON decoding errors, whose text is Go's decoder message), and both
must carry the listed payload keys. The message data must be untouched by every rejected
request: a final stream info compares message counts.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from tests.compat.js_requests import PUB_STREAMS, PUBLISHES, STEPS
from tests.compat.js_support import api, connect, js_server, run

INVALID_JSON = 10025


async def replay(url: str) -> list[dict[str, Any]]:
    nc = await connect(url)
    return [await api(nc, "$JS.API." + subject, body) for subject, body, _ in STEPS]


def responses(kind: str, tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    with js_server(kind, tmp_path / kind) as server:
        return run(replay, server.url)


def summary(resp: dict[str, Any]) -> tuple[Any, ...]:
    err = resp.get("error") or {}
    description = err.get("description") if err.get("err_code") != INVALID_JSON else "<json error>"
    return resp.get("type"), err.get("code"), err.get("err_code"), description


def test_api_responses_match_nats_server(tmp_path: pathlib.Path) -> None:
    (tmp_path / "jetraft").mkdir()
    (tmp_path / "nats-server").mkdir()
    ours = responses("jetraft", tmp_path)
    theirs = responses("nats-server", tmp_path)
    mismatches = []
    for (subject, body, keys), a, b in zip(STEPS, ours, theirs):
        if summary(a) != summary(b):
            mismatches.append(f"{subject} {body!r}: jetraft={summary(a)} nats-server={summary(b)}")
        for key in keys:
            if key not in a or key not in b:
                mismatches.append(f"{subject}: key {key!r} jetraft={key in a} nats-server={key in b}")
    assert not mismatches, "\n".join(mismatches)
    errors = sum(1 for r in theirs if "error" in r)
    assert errors >= 30  # the script really exercises the error paths


def test_rejected_requests_leave_data_untouched(tmp_path: pathlib.Path) -> None:
    """Publish, then send a burst of bad requests; the stream's messages are unchanged."""

    async def scenario(url: str) -> tuple[int, int, bytes]:
        nc = await connect(url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"], max_msg_size=64)
        for i in range(5):
            await js.publish(f"keep.{i}", b"v%d" % i)
        bad = [
            ("STREAM.CREATE.KEEP", b'{"name":"KEEP","subjects":["keep.>"],"max_msgs":"x"}'),
            ("STREAM.UPDATE.KEEP", b'{"name":"KEEP","subjects":["keep.>"],"nope":true}'),
            ("STREAM.UPDATE.KEEP", b'{"name":"KEEP","subjects":["keep.>"],"storage":"memory"}'),
            ("STREAM.PURGE.KEEP", b'{"filter": 7}'),
            ("STREAM.PURGE.KEEP", b"{broken"),
            ("STREAM.DELETE.KEEP", b'{"really": true}'),
            ("STREAM.MSG.DELETE.KEEP", b'{"seq": "one"}'),
            ("CONSUMER.CREATE.KEEP.x", b'{"stream_name":"KEEP","config":{"name":"x","ack_policy":"maybe"}}'),
        ]
        for subject, body in bad:
            assert "error" in await api(nc, "$JS.API." + subject, body), subject
        try:
            await js.publish("keep.big", b"x" * 100)
            raise AssertionError("oversized publish was accepted")
        except Exception as exc:  # noqa: BLE001 - nats-py raises APIError
            assert getattr(exc, "err_code", None) == 10054
        nc2 = await connect(url)
        await nc2.publish("$JS.ACK.KEEP.nobody.1.99.99.0.0", b"+ACK")  # ack for unknown seq/consumer
        await nc2.flush()
        info = await js.stream_info("KEEP")
        last = await js.get_msg("KEEP", 5)
        return info.state.messages, info.state.last_seq, last.data

    for kind in ("jetraft", "nats-server"):
        with js_server(kind, tmp_path, store_name=f"keep-{kind}") as server:
            assert run(scenario, server.url) == (5, 5, b"v4"), kind


def test_pub_acks_match_nats_server(tmp_path: pathlib.Path) -> None:
    """Dedup, expected-* headers, rollups, TTL, size and discard-new limits: same PubAcks."""

    async def replay_publishes(url: str) -> list[tuple[Any, ...]]:
        nc = await connect(url)
        for cfg in PUB_STREAMS:
            assert "error" not in await api(nc, f"$JS.API.STREAM.CREATE.{cfg['name']}", cfg)
        out = []
        for subject, headers, payload in PUBLISHES:
            msg = await nc.request(subject, payload, timeout=5, headers=headers)
            ack = json.loads(msg.data)
            err = ack.get("error") or {}
            out.append((ack.get("stream"), ack.get("seq"), ack.get("duplicate", False), err.get("err_code"),
                        err.get("description")))
        for cfg in PUB_STREAMS:
            info = await api(nc, f"$JS.API.STREAM.INFO.{cfg['name']}")
            state = info["state"]
            out.append((cfg["name"], state["messages"], state["first_seq"], state["last_seq"]))
        return out

    results = {}
    for kind in ("jetraft", "nats-server"):
        with js_server(kind, tmp_path, store_name=f"pub-{kind}") as server:
            results[kind] = run(replay_publishes, server.url)
    steps = [f"{s} {h}" for s, h, _ in PUBLISHES] + [f"state {c['name']}" for c in PUB_STREAMS]
    diffs = [f"{step}: jetraft={a} nats-server={b}"
             for step, a, b in zip(steps, results["jetraft"], results["nats-server"]) if a != b]
    assert not diffs, "\n".join(diffs)


def test_pull_request_outcomes_match_nats_server(tmp_path: pathlib.Path) -> None:
    """Raw pull requests: the messages and status lines on the reply inbox are the same."""

    async def pulls(url: str) -> list[tuple[Any, ...]]:
        nc = await connect(url)
        await api(nc, "$JS.API.STREAM.CREATE.PL", {"name": "PL", "subjects": ["pl.>"]})
        pull = {"durable_name": "c", "ack_policy": "explicit", "max_batch": 5}
        push = {"durable_name": "p", "ack_policy": "explicit", "deliver_subject": "push.inbox"}
        for name, cfg in (("c", pull), ("p", push)):
            assert "error" not in await api(nc, f"$JS.API.CONSUMER.CREATE.PL.{name}", {"stream_name": "PL", "config": cfg})
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[tuple[Any, ...]] = []

        async def request(consumer: str, body: bytes, answers: int) -> None:
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.PL.{consumer}", body, reply=inbox)
            for _ in range(answers):
                msg = await sub.next_msg(timeout=3)
                headers = msg.headers or {}
                if headers.get("Status"):
                    out.append((body, headers.get("Status"), headers.get("Description"),
                                headers.get("Nats-Pending-Messages")))
                else:
                    out.append((body, msg.subject, msg.data, msg.reply.split(".")[4:7]))

        await request("c", b'{"batch": 1, "no_wait": true}', 1)
        await request("c", b'{"batch": 2, "expires": 200000000}', 1)
        await request("c", b'{"batch": 1, "expires": 1000000000, "idle_heartbeat": 900000000}', 1)
        await request("c", b'{"batch": 9}', 1)
        await request("p", b'{"batch": 1}', 1)
        for i in range(3):
            await nc.request(f"pl.{i}", b"m%d" % i, timeout=5)
        await request("c", b'{"batch": 1, "max_bytes": 10}', 1)
        await request("c", b'{"batch": 5, "no_wait": true}', 4)
        for i in range(3, 5):
            await nc.request(f"pl.{i}", b"m%d" % i, timeout=5)
        # no_wait with expires: what is there, then 404; when nothing is there, wait for expiry
        await request("c", b'{"batch": 5, "no_wait": true, "expires": 500000000}', 3)
        await request("c", b'{"batch": 5, "no_wait": true, "expires": 500000000}', 1)
        return out

    results = {}
    for kind in ("jetraft", "nats-server"):
        with js_server(kind, tmp_path, store_name=f"pull-{kind}") as server:
            results[kind] = run(pulls, server.url)
    diffs = [f"jetraft={a} nats-server={b}" for a, b in zip(results["jetraft"], results["nats-server"]) if a != b]
    assert len(results["jetraft"]) == len(results["nats-server"]) == 14
    assert not diffs, "\n".join(diffs)


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    out = set()
    for key, inner in value.items():
        out.add(prefix + key)
        out |= _key_paths(inner, prefix + key + ".")
    return out


def test_response_fields_match_nats_server(tmp_path: pathlib.Path) -> None:
    """Account, stream and consumer info, message get and purge carry the same JSON fields
    (nats-server's own `_nats.*` config metadata aside, and `allow_msg_ttl`, which JetRaft
    omits when false: reporting it made nats-py send it back on updates, which the clustered
    update path does not take yet)."""

    async def shapes(url: str) -> dict[str, set[str]]:
        nc = await connect(url)
        await api(nc, "$JS.API.STREAM.CREATE.SH", {"name": "SH", "subjects": ["sh"]})
        await nc.request("sh", b"x", timeout=5)
        pull = {"stream_name": "SH", "config": {"durable_name": "c", "ack_policy": "explicit"}}
        push = {"stream_name": "SH", "config": {"durable_name": "p", "ack_policy": "explicit", "deliver_subject": "x.y"}}
        responses = {
            "account": await api(nc, "$JS.API.INFO"),
            "stream": await api(nc, "$JS.API.STREAM.INFO.SH"),
            "pull consumer": await api(nc, "$JS.API.CONSUMER.CREATE.SH.c", pull),
            "push consumer": await api(nc, "$JS.API.CONSUMER.CREATE.SH.p", push),
            "msg get": await api(nc, "$JS.API.STREAM.MSG.GET.SH", {"seq": 1}),
            "purge": await api(nc, "$JS.API.STREAM.PURGE.SH", {}),
        }
        ignored = ("config.metadata", "config.allow_msg_ttl")
        return {name: {k for k in _key_paths(r) if not k.startswith(ignored)} for name, r in responses.items()}

    results = {}
    for kind in ("jetraft", "nats-server"):
        with js_server(kind, tmp_path, store_name=f"shape-{kind}") as server:
            results[kind] = run(shapes, server.url)
    diffs = [f"{name}: only jetraft {sorted(ours - results['nats-server'][name])}, "
             f"only nats-server {sorted(results['nats-server'][name] - ours)}"
             for name, ours in results["jetraft"].items() if ours != results["nats-server"][name]]
    assert not diffs, "\n".join(diffs)

"""The $JS.API request script replayed against both servers by test_js_differential.py.

Each step is (subject, body, keys): `body` is sent as is when bytes, else as JSON; `keys` are
top-level response keys that must be present (besides `type` and the error code, which are
always compared). The steps build on each other (create S, then use it), so both servers go
through the same states. Valid requests, malformed JSON, unknown and wrongly typed fields,
invalid names and subjects, name mismatches and missing objects are all covered.
"""

from __future__ import annotations

from typing import Any

S_CFG = {"name": "S", "subjects": ["s.>"]}
STEPS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("INFO", b"", ("memory", "storage", "streams", "consumers", "limits", "api")),
    ("STREAM.CREATE.S", S_CFG, ("config", "state", "created", "did_create")),
    ("STREAM.CREATE.S", S_CFG, ("config", "state")),
    ("STREAM.CREATE.S", {"name": "S", "subjects": ["other"]}, ()),
    ("STREAM.CREATE.T", b"{not json", ()),
    ("STREAM.CREATE.T", b"[1, 2]", ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "bogus_field": 1}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": "t"}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "max_msgs": "many"}, ()),
    ("STREAM.CREATE.T", {"name": "X", "subjects": ["t"]}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["s.a"]}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "max_age": 1000}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "num_replicas": 3}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["a..b"]}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "retention": "sometimes"}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "sealed": True}, ()),
    ("STREAM.CREATE.T", {"name": "T", "subjects": ["t"], "deny_purge": True, "allow_rollup_hdrs": True}, ()),
    ("STREAM.INFO.NOPE", b"", ()),
    ("STREAM.INFO.S", b"", ("config", "state", "created")),
    ("STREAM.NAMES", b"", ("streams", "total", "offset", "limit")),
    ("STREAM.NAMES", {"subject": "s.x"}, ("streams", "total")),
    ("STREAM.LIST", b"", ("streams", "total", "offset", "limit")),
    ("STREAM.UPDATE.S", {"name": "S", "subjects": ["s.>"], "storage": "memory"}, ()),
    ("STREAM.UPDATE.NOPE", {"name": "NOPE", "subjects": ["nope"]}, ()),
    ("STREAM.UPDATE.S", {"name": "S", "subjects": ["s.>", "s2"], "max_msgs": 100}, ("config", "state")),
    ("STREAM.MSG.GET.S", {"seq": 1}, ()),
    ("STREAM.MSG.GET.S", {"last_by_subj": "s.none"}, ()),
    ("STREAM.MSG.GET.S", b"{oops", ()),
    ("STREAM.MSG.GET.NOPE", {"seq": 1}, ()),
    ("STREAM.PURGE.S", b"", ("success", "purged")),
    ("STREAM.PURGE.S", {"filter": "s.a", "keep": 1}, ("success", "purged")),
    ("STREAM.PURGE.NOPE", b"", ()),
    ("CONSUMER.CREATE.S.c1", {"stream_name": "S", "config": {"durable_name": "c2", "ack_policy": "explicit"}}, ()),
    ("CONSUMER.DURABLE.CREATE.S.c1", {"stream_name": "S", "config": {"ack_policy": "explicit"}}, ()),
    ("CONSUMER.CREATE.S.c1.s.a", {"stream_name": "S", "config": {"name": "c1", "filter_subject": "s.b"}}, ()),
    ("CONSUMER.CREATE.S.c1", {"stream_name": "S", "config": {"name": "c1", "bogus": 1}}, ()),
    ("CONSUMER.CREATE.S.c1", {"stream_name": "S", "config": {"name": "c1", "ack_wait": "soon"}}, ()),
    ("CONSUMER.CREATE.S.c1", b"not json", ()),
    ("CONSUMER.CREATE.S.c3", {"stream_name": "S", "config": {"name": "c3", "deliver_policy": "by_start_sequence"}}, ()),
    ("CONSUMER.CREATE.S.c4", {"stream_name": "S", "config": {"name": "c4", "filter_subject": "zzz"}}, ()),
    ("CONSUMER.CREATE.NOPE.c1", {"stream_name": "NOPE", "config": {"name": "c1"}}, ()),
    ("CONSUMER.CREATE.S.c1", {"stream_name": "S", "config": {"durable_name": "c1", "ack_policy": "explicit"}},
     ("name", "stream_name", "config", "created", "delivered", "ack_floor", "num_pending")),
    ("CONSUMER.CREATE.S.c1", {"stream_name": "S", "action": "create",
                              "config": {"durable_name": "c1", "ack_policy": "none"}}, ()),
    ("CONSUMER.CREATE.S.c9", {"stream_name": "S", "action": "update",
                              "config": {"durable_name": "c9", "ack_policy": "explicit"}}, ()),
    ("CONSUMER.DURABLE.CREATE.S.d1", {"stream_name": "S", "config": {"durable_name": "d1", "ack_policy": "explicit"}},
     ("name", "config")),
    ("CONSUMER.INFO.S.nope", b"", ()),
    ("CONSUMER.INFO.S.c1", b"", ("name", "config", "delivered", "ack_floor", "num_pending", "num_waiting")),
    ("CONSUMER.NAMES.S", b"", ("consumers", "total", "offset", "limit")),
    ("CONSUMER.LIST.S", b"", ("consumers", "total", "offset", "limit")),
    ("CONSUMER.DELETE.S.nope", b"", ()),
    ("CONSUMER.DELETE.S.c1", b"", ("success",)),
    ("STREAM.MSG.DELETE.S", {"seq": 99}, ()),
    ("STREAM.MSG.DELETE.S", {"seq": 0}, ()),
    ("STREAM.DELETE.NOPE", b"", ()),
    ("STREAM.DELETE.S", b"", ("success",)),
]


# Publishes replayed against both servers: (subject, headers or None, payload). The streams are
# created first from PUB_STREAMS; every PubAck (or its error) is compared.
PUB_STREAMS: list[dict[str, Any]] = [
    {"name": "P", "subjects": ["p.>"], "max_msg_size": 100},
    {"name": "R", "subjects": ["r.>"], "allow_rollup_hdrs": True},
    {"name": "N", "subjects": ["n.>"], "discard": "new", "max_msgs_per_subject": 1,
     "discard_new_per_subject": True},
    {"name": "M", "subjects": ["m.>"], "max_msgs": 2, "discard": "new"},
]
PUBLISHES: list[tuple[str, dict[str, str] | None, bytes]] = [
    ("p.a", None, b"1"),
    ("p.a", {"Nats-Msg-Id": "x"}, b"2"),
    ("p.b", {"Nats-Msg-Id": "x"}, b"dup"),
    ("p.a", {"Nats-Expected-Last-Msg-Id": "x"}, b"3"),
    ("p.a", {"Nats-Expected-Last-Msg-Id": "nope"}, b"4"),
    ("p.a", {"Nats-Expected-Last-Sequence": "3"}, b"5"),
    ("p.a", {"Nats-Expected-Last-Sequence": "1"}, b"6"),
    ("p.c", {"Nats-Expected-Last-Subject-Sequence": "0"}, b"7"),
    ("p.c", {"Nats-Expected-Last-Subject-Sequence": "0"}, b"8"),
    ("p.a", {"Nats-Expected-Stream": "P"}, b"9"),
    ("p.a", {"Nats-Expected-Stream": "Q"}, b"10"),
    ("p.a", {"Nats-Rollup": "sub"}, b"11"),
    ("p.a", {"Nats-TTL": "10s"}, b"12"),
    ("p.a", None, b"x" * 101),
    ("p.a", {"Nats-Expected-Last-Subject-Sequence-Subject": "p.c"}, b"13"),
    ("r.a", None, b"1"),
    ("r.a", None, b"2"),
    ("r.b", None, b"3"),
    ("r.a", {"Nats-Rollup": "sub"}, b"4"),
    ("r.a", {"Nats-Rollup": "bogus"}, b"5"),
    ("r.c", {"Nats-Rollup": "all"}, b"6"),
    ("n.a", None, b"1"),
    ("n.a", None, b"2"),
    ("n.b", None, b"3"),
    ("m.a", None, b"1"),
    ("m.b", None, b"2"),
    ("m.c", None, b"3"),
]

"""Garbage in, nats-server-shaped errors out: random bodies on every $JS.API endpoint.

Hypothesis sends arbitrary JSON values (objects with known and unknown keys of any type, lists,
scalars) and raw bytes to every API subject of an in-process server that holds a stream with
messages and a consumer. Every request must get an answer (no handler crash), every error must
be exactly `{code, err_code, description}`, and the stored messages must be unchanged unless the
request was a valid mutating one (checked by requiring the original data be intact afterwards
for a stream the fuzzer never names). Bodies use each endpoint's own keys so they get past the
strict key check into the handlers.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.jetstream.js_harness import running_js

CONSUMER_KEYS = ["durable_name", "name", "deliver_policy", "ack_policy", "ack_wait", "max_deliver",
                 "filter_subject", "deliver_subject", "opt_start_seq", "backoff", "max_waiting", "bogus"]
# subject -> the keys its handler knows (plus one it does not), so bodies reach deep code paths
KEYS_BY_SUBJECT: dict[str, list[str]] = {
    "INFO": ["bogus"],
    "STREAM.CREATE.F": ["name", "subjects", "max_msgs", "max_age", "storage", "retention", "discard",
                        "num_replicas", "no_ack", "metadata", "sealed", "bogus"],
    "STREAM.UPDATE.F": ["name", "subjects", "max_msgs", "max_bytes", "storage", "deny_delete", "bogus"],
    "STREAM.INFO.F": ["deleted_details", "subjects_filter", "offset", "bogus"],
    "STREAM.NAMES": ["offset", "subject", "bogus"],
    "STREAM.LIST": ["offset", "subject", "bogus"],
    "STREAM.PURGE.F": ["filter", "seq", "keep", "bogus"],
    "STREAM.MSG.GET.F": ["seq", "last_by_subj", "next_by_subj", "bogus"],
    "STREAM.MSG.DELETE.F": ["seq", "no_erase", "bogus"],
    "STREAM.DELETE.F": ["bogus"],
    "CONSUMER.CREATE.F": ["stream_name", "config", "action", "bogus"],
    "CONSUMER.CREATE.F.c": ["stream_name", "config", "action", "bogus"],
    "CONSUMER.CREATE.F.c.f.a": ["stream_name", "config", "action", "bogus"],
    "CONSUMER.DURABLE.CREATE.F.c": ["stream_name", "config", "action", "bogus"],
    "CONSUMER.INFO.F.c": ["bogus"],
    "CONSUMER.NAMES.F": ["offset", "bogus"],
    "CONSUMER.LIST.F": ["offset", "bogus"],
    "CONSUMER.DELETE.F.c": ["bogus"],
    "CONSUMER.PAUSE.F.c": ["pause_until", "bogus"],
    "CONSUMER.RESET.F.c": ["seq", "bogus"],
    "NOT.A.THING": ["bogus"],
}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8),
                    st.sampled_from(["F", "c", "f.>", "f.a", "all", "explicit", "limits", "memory", ">", "*",
                                     "2099-01-01T00:00:00Z"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)
CONSUMER_CONFIGS = st.dictionaries(st.sampled_from(CONSUMER_KEYS), st.one_of(SCALARS, VALUES), max_size=4)


def bodies_for(subject: str) -> st.SearchStrategy[bytes]:
    keys = KEYS_BY_SUBJECT[subject]
    value = st.one_of(SCALARS, VALUES, CONSUMER_CONFIGS) if "config" in keys else st.one_of(SCALARS, VALUES)
    objects = st.dictionaries(st.sampled_from(keys), value, max_size=4)
    return st.one_of(objects.map(lambda v: json.dumps(v).encode()),
                     VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=24))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_request_gets_a_well_formed_answer(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    subject = data.draw(st.sampled_from(sorted(KEYS_BY_SUBJECT)))
    bodies = data.draw(st.lists(bodies_for(subject), min_size=1, max_size=12))
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")

    async def scenario() -> None:
        async with running_js(tmp_path) as h:
            await h.api("STREAM.CREATE.KEEP", {"name": "KEEP", "subjects": ["keep"], "storage": "memory"})
            await h.api("STREAM.CREATE.F", {"name": "F", "subjects": ["f.>"], "storage": "memory"})
            await h.api("CONSUMER.CREATE.F.c", {"stream_name": "F", "config": {"durable_name": "c"}})
            for i in range(3):
                await h.request("keep", b"%d" % i)
            for body in bodies:
                resp = await h.api(subject, body)
                assert resp["type"].startswith("io.nats.jetstream.api.v1.")
                if "error" in resp:
                    assert set(resp["error"]) == {"code", "err_code", "description"}
                    assert isinstance(resp["error"]["err_code"], int)
            info = await h.api("STREAM.INFO.KEEP")
            assert (info["state"]["messages"], info["state"]["last_seq"]) == (3, 3)
            assert (await h.api("STREAM.MSG.GET.KEEP", {"seq": 2}))["message"]["data"] == "MQ=="

    trio.run(scenario)

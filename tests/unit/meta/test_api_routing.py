"""Which `$JS.API` requests the meta leader answers, and which it leaves to stream leaders."""

from __future__ import annotations

import types

import pytest

from meta.api import is_mine, stream_of
from meta.assignments import CreateStream, MetaState


@pytest.mark.parametrize(
    ("subject", "stream"),
    [
        ("$JS.API.STREAM.INFO.ORDERS", "ORDERS"),
        ("$JS.API.STREAM.MSG.GET.ORDERS", "ORDERS"),
        ("$JS.API.STREAM.LEADER.STEPDOWN.ORDERS", "ORDERS"),
        ("$JS.API.DIRECT.GET.ORDERS.some.subject", "ORDERS"),
        ("$JS.API.CONSUMER.CREATE.ORDERS.C.filter", "ORDERS"),
        ("$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.C", "ORDERS"),
        ("$JS.API.CONSUMER.MSG.NEXT.ORDERS.C", "ORDERS"),
        ("$JS.API.CONSUMER.NAMES.ORDERS", "ORDERS"),
        ("$JS.API.INFO", None),
        ("$JS.API.STREAM.NAMES", None),
    ],
)
def test_stream_of(subject: str, stream: str | None) -> None:
    assert stream_of(subject.split(".")[2:]) == stream


def _svc_with(*names: str) -> object:
    state = MetaState()
    for i, name in enumerate(names, start=1):
        state.apply(CreateStream(name, {"name": name, "subjects": [name.lower()]}, ("n1",), 0), i)
    return types.SimpleNamespace(state=state)


def test_meta_leader_answers_cluster_requests_and_unknown_streams_only() -> None:
    svc = _svc_with("ORDERS")
    for subject in ("$JS.API.INFO", "$JS.API.STREAM.CREATE.X", "$JS.API.STREAM.UPDATE.ORDERS",
                    "$JS.API.STREAM.DELETE.ORDERS", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
                    "$JS.API.META.LEADER.STEPDOWN", "$JS.API.STREAM.INFO.NOPE",
                    "$JS.API.CONSUMER.INFO.NOPE.C", "$JS.API.NOT.A.THING"):
        assert is_mine(svc, subject), subject
    for subject in ("$JS.API.STREAM.INFO.ORDERS", "$JS.API.STREAM.MSG.GET.ORDERS",
                    "$JS.API.CONSUMER.CREATE.ORDERS.C", "$JS.API.CONSUMER.MSG.NEXT.NOPE.C",
                    "$JS.API.STREAM.LEADER.STEPDOWN.ORDERS"):
        assert not is_mine(svc, subject), subject

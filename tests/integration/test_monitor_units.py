"""The pure parts of monitoring: Go-style formats, config keys, $SYS options, replica verdicts."""

from __future__ import annotations

import datetime
import re
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.monitoring import CURRENT_LAG_MAX_ENTRIES, Histogram, JsMonitor, StreamView
from natsd.config import options_from_mapping
from natsd.monitor_format import flag, go_duration, number, rfc3339, uptime
from natsd.sysreq import _options

UPTIME_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(\d+)s$")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4_000_000_000), st.integers(0, 999_999_999))
def test_rfc3339_is_utc_with_nanoseconds(whole_s: int, nanos: int) -> None:
    text = rfc3339(whole_s + nanos / 1e9)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z", text)
    parsed = datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    assert abs(parsed.timestamp() + int(text[20:29]) / 1e9 - (whole_s + nanos / 1e9)) < 1e-5


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10 * 365 * 86400))
def test_uptime_components_add_up(seconds: int) -> None:
    match = UPTIME_RE.fullmatch(uptime(seconds))
    assert match is not None
    days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
    assert days * 86400 + hours * 3600 + minutes * 60 + secs == seconds
    assert hours < 24 and minutes < 60 and secs < 60


def test_go_durations_and_query_options() -> None:
    assert [go_duration(x) for x in (0, 850e-9, 0.0015, 2.5)] == ["0s", "850ns", "1.5ms", "2.5s"]
    assert flag({"subs": "1"}, "subs") and flag({"subs": "true"}, "subs") and flag({"subs": ""}, "subs")
    assert not flag({"subs": "0"}, "subs") and not flag({}, "subs")
    assert number({"limit": "5"}, "limit", 10) == 5
    assert number({"limit": "x"}, "limit", 10) == 10
    assert number({"limit": "-3"}, "limit", 10, lo=1) == 1


def test_monitoring_config_keys() -> None:
    fields, unknown = options_from_mapping({"http": "127.0.0.1:8333"})
    assert (fields, unknown) == ({"http_port": 8333, "http_host": "127.0.0.1"}, [])
    fields, unknown = options_from_mapping({
        "http_port": 8222, "system_account": "SYS",
        "accounts": {"SYS": {"users": [{"user": "admin", "password": "a"}]},
                     "APP": {"jetstream": "enabled", "users": [{"user": "app", "password": "b"}],
                             "odd": 1}},
    })
    assert fields["http_port"] == 8222 and fields["system_users"] == ("admin",)
    assert [u.name for u in fields["auth_users"]] == ["admin", "app"]
    assert unknown == ["accounts.APP.odd"]
    default_sys = options_from_mapping({"accounts": {"$SYS": {"users": [{"user": "s", "password": "x"}]}}})
    assert default_sys[0]["system_users"] == ("s",)
    with pytest.raises(ValueError):
        options_from_mapping({"http_port": 70000})


def test_sys_request_options_become_query_options() -> None:
    assert _options(b'{"subscriptions": true, "limit": 5, "streams": false}') == {
        "subs": "true", "limit": "5", "streams": "false"}
    assert _options(b"") == {} and _options(b"not json") == {} and _options(b"[1]") == {}


def _verdict(view: StreamView, lag: int, offline: bool = False) -> bool:
    mon = JsMonitor(SimpleNamespace(server=SimpleNamespace(server_name="n3")))
    cluster = {"replicas": [{"name": "n3", "lag": lag, "offline": offline}, {"name": "n2", "lag": 0}]}
    mon.judge_leader_view("S", view, cluster)
    return view.current


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3 * CURRENT_LAG_MAX_ENTRIES), max_size=20))
def test_replica_becomes_current_only_without_lag(lags: list[int]) -> None:
    view = StreamView()
    was = False
    for lag in lags:
        now = _verdict(view, lag)
        if not was:
            assert now == (lag == 0)  # catching up: only "no lag at all" counts
        else:
            assert now == (lag <= CURRENT_LAG_MAX_ENTRIES)  # current: small lag tolerated
        was = now
    assert _verdict(view, 0, offline=True) is False


def test_no_leader_answer_keeps_the_verdict() -> None:
    mon = JsMonitor(SimpleNamespace(server=SimpleNamespace(server_name="n3")))
    view = StreamView(current=True)
    mon.judge_leader_view("S", view, None)
    assert view.current is True


def test_histogram_is_cumulative() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        hist.observe(value)
    family = hist.family("x_seconds", "doc")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.1": 1, "1.0": 2, "+Inf": 3}


class _FakeMeta:
    def __init__(self, streams: dict) -> None:
        self.node_id = "n3"
        self.state = SimpleNamespace(streams=streams)

    def peer_name(self, node_id: str) -> str:
        return node_id


def test_assigned_but_not_running_streams_are_reported() -> None:
    meta = _FakeMeta({
        "A": SimpleNamespace(name="A", group="g-a", peers=("n1", "n2", "n3")),
        "B": SimpleNamespace(name="B", group="g-b", peers=("n1", "n2")),
        "C": SimpleNamespace(name="C", group="g-c", peers=("n3",)),
    })
    meta_node = SimpleNamespace(applied_index=7, commit_index=7)
    host = SimpleNamespace(groups=lambda: ["_meta_"], node=lambda group: meta_node)
    js = SimpleNamespace(server=SimpleNamespace(server_name="n3"), peer_name=meta.peer_name,
                         host=host, by_group={"g-c": object()})
    assert JsMonitor(js).assignment_problems() == [
        "JetStream stream 'A' is assigned here but not running yet"]
    meta_node.applied_index = 5
    assert "JetStream meta group is not current (applying)" in JsMonitor(js).assignment_problems()
    no_meta = SimpleNamespace(server=js.server, peer_name=lambda n: n, host=host, by_group={})
    assert JsMonitor(no_meta).assignment_problems() == []

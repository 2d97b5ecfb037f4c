"""Route protocol parser/encoder cases and the pure route decisions.

Every parser case is fed whole, one byte at a time, and followed by trailing data (a PING that
must still come out after it); hypothesis splits encoded frames at random points. The frame
forms follow protocol.md 2.2 (checked against nats-server 2.15 by tests/integration/
test_routes.py, which routes between a jetraft node and the reference binary).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsd import route_protocol as rp
from natsd.protocol import OK, PING, PONG, Connect, Err, Info, ProtocolError
from natsd.route_protocol import RouteMsg, RouteParser, RouteSub, RouteUnsub, flatten_route

HDR = b"NATS/1.0\r\nk: v\r\n\r\n"

CASES: list[tuple[str, bytes, list]] = [
    ("ping", b"PING\r\n", [PING]),
    ("pong_lower", b"pong\r\n", [PONG]),
    ("ok", b"+OK\r\n", [OK]),
    ("err", b"-ERR 'Unknown Protocol Operation'\r\n", [Err("Unknown Protocol Operation")]),
    ("connect", b'CONNECT {"name":"N1","cluster":"c"}\r\n', [Connect({"name": "N1", "cluster": "c"})]),
    ("info", b'INFO {"server_id":"N2"}\r\n', [Info({"server_id": "N2"})]),
    ("rs_plus", b"RS+ $G foo.bar\r\n", [RouteSub("$G", "foo.bar")]),
    ("rs_plus_queue", b"RS+ $G foo.* workers 3\r\n", [RouteSub("$G", "foo.*", "workers", 3)]),
    ("rs_plus_tabs", b"rs+\t$G  foo\r\n", [RouteSub("$G", "foo")]),
    ("rs_plus_queue_no_weight", b"RS+ $G foo q\r\n", [RouteSub("$G", "foo", "q", 1)]),
    ("rs_minus", b"RS- $G foo.>\r\n", [RouteUnsub("$G", "foo.>")]),
    ("rs_minus_queue", b"RS- $G foo q\r\n", [RouteUnsub("$G", "foo", "q")]),
    ("ls_plus", b"LS+ leafc $G foo q 2\r\n", [RouteSub("$G", "foo", "q", 2)]),
    ("ls_minus", b"LS- leafc $G foo\r\n", [RouteUnsub("$G", "foo")]),
    ("rmsg", b"RMSG $G foo 5\r\nhello\r\n", [RouteMsg("$G", "foo", None, (), None, b"hello")]),
    ("rmsg_reply", b"RMSG $G foo _INBOX.1 2\r\nhi\r\n",
     [RouteMsg("$G", "foo", "_INBOX.1", (), None, b"hi")]),
    ("rmsg_empty", b"RMSG $G foo 0\r\n\r\n", [RouteMsg("$G", "foo", None, (), None, b"")]),
    ("rmsg_crlf_payload", b"RMSG $G foo 4\r\na\r\nb\r\n",
     [RouteMsg("$G", "foo", None, (), None, b"a\r\nb")]),
    ("rmsg_queue_reply", b"RMSG $G foo + r q1 q2 1\r\nx\r\n",
     [RouteMsg("$G", "foo", "r", ("q1", "q2"), None, b"x")]),
    ("rmsg_queue_no_reply", b"RMSG $G foo | q1 1\r\nx\r\n",
     [RouteMsg("$G", "foo", None, ("q1",), None, b"x")]),
    ("hmsg", b"HMSG $G foo %d %d\r\n" % (len(HDR), len(HDR) + 2) + HDR + b"hi\r\n",
     [RouteMsg("$G", "foo", None, (), HDR, b"hi")]),
    ("hmsg_queue", b"HMSG $G foo + r q %d %d\r\n" % (len(HDR), len(HDR)) + HDR + b"\r\n",
     [RouteMsg("$G", "foo", "r", ("q",), HDR, b"")]),
    ("lmsg", b"LMSG leafc $G foo 1\r\nx\r\n", [RouteMsg("$G", "foo", None, (), None, b"x")]),
    ("two_msgs", b"RMSG $G a 1\r\nx\r\nRMSG $G b 1\r\ny\r\n",
     [RouteMsg("$G", "a", None, (), None, b"x"), RouteMsg("$G", "b", None, (), None, b"y")]),
    ("bare_lf", b"RS+ $G foo\n", [RouteSub("$G", "foo")]),
    ("unknown_op", b"PUB foo 1\r\nx\r\n", [ProtocolError(rp.ERR_UNKNOWN_OP)]),
    ("payload_too_long", b"RMSG $G foo 1\r\nxy\r\n", [ProtocolError(rp.ERR_UNKNOWN_OP)]),
    ("bad_size", b"RMSG $G foo x\r\n", [ProtocolError(None)]),
    ("rmsg_too_few_args", b"RMSG $G 1\r\n", [ProtocolError(None)]),
    ("queue_marker_without_queue", b"RMSG $G foo | 1\r\n", [ProtocolError(None)]),
    ("reply_marker_without_queue", b"RMSG $G foo + r 1\r\n", [ProtocolError(None)]),
    ("hsize_over_total", b"HMSG $G foo 5 3\r\n", [ProtocolError(None)]),
    ("rs_plus_bad_weight", b"RS+ $G foo q w\r\n", [ProtocolError(None)]),
    ("rs_plus_one_arg", b"RS+ $G\r\n", [ProtocolError(None)]),
    ("info_not_object", b"INFO [1]\r\n", [ProtocolError(None)]),
    ("connect_bad_json", b"CONNECT {\r\n", [ProtocolError(None)]),
]


def _feed(data: bytes, parser: RouteParser | None = None) -> list:
    return flatten_route((parser or RouteParser()).feed(data))


def _feed_bytewise(data: bytes) -> list:
    parser = RouteParser()
    out: list = []
    for i in range(len(data)):
        out.extend(parser.feed(data[i : i + 1]))
    return flatten_route(out)


@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case_whole_bytewise_and_trailing(name: str, data: bytes, expected: list) -> None:
    assert _feed(data) == expected
    assert _feed_bytewise(data) == expected
    closes = any(isinstance(op, ProtocolError) for op in expected)
    trailing = _feed(data + b"PING\r\n")
    assert trailing == (expected if closes else expected + [PING])


def test_identical_frames_come_out_as_one_run_with_the_client_tail() -> None:
    frame = b"RMSG $G foo r 2\r\nhi\r\n"
    ops = RouteParser().feed(frame * 3 + b"RMSG $G bar 1\r\nx\r\n")
    assert ops == [
        ("$G", "foo", "r", (), None, [b"hi", b"hi", b"hi"], b" r 2\r\n"),
        ("$G", "bar", None, (), None, [b"x"], b" 1\r\n"),
    ]
    headed = RouteParser().feed(b"HMSG $G foo | q 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    assert headed == [("$G", "foo", None, ("q",), b"NATS/1.0\r\n\r\n", [b"hi"], b" 12 14\r\n")]


def test_run_stops_at_a_broken_frame() -> None:
    ops = RouteParser().feed(b"RMSG $G a 1\r\nx\r\nRMSG $G a 1\r\nxy\r\n")
    assert flatten_route(ops) == [RouteMsg("$G", "a", None, (), None, b"x"),
                                  ProtocolError(rp.ERR_UNKNOWN_OP)]


def test_large_payload_in_many_reads() -> None:
    payload = bytes(range(256)) * 4096
    data = b"RMSG $G big %d\r\n" % len(payload) + payload + b"\r\n"
    parser = RouteParser()
    out: list = []
    for i in range(0, len(data), 1000):
        out.extend(parser.feed(data[i : i + 1000]))
    assert flatten_route(out) == [RouteMsg("$G", "big", None, (), None, payload)]


def test_nothing_after_a_protocol_error() -> None:
    parser = RouteParser()
    assert parser.feed(b"BOGUS\r\n") == [ProtocolError(rp.ERR_UNKNOWN_OP)]
    assert parser.closed
    assert parser.feed(b"PING\r\n") == []


def test_control_line_limit_without_newline() -> None:
    parser = RouteParser(max_control_line=64)
    assert parser.feed(b"RS+ $G " + b"a" * 40) == []
    assert parser.feed(b"b" * 40) == [ProtocolError(rp.ERR_MAX_CONTROL_LINE)]


def test_payload_limit() -> None:
    parser = RouteParser(max_payload=10)
    assert parser.feed(b"RMSG $G foo 11\r\n") == [ProtocolError(None)]


# -- encoder round trips ------------------------------------------------------------------------

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
SUBJECT = st.lists(TOKEN, min_size=1, max_size=4).map(".".join)


@st.composite
def route_ops(draw: st.DrawFn) -> tuple[bytes, object]:
    kind = draw(st.sampled_from(["sub", "qsub", "unsub", "qunsub", "msg", "ping"]))
    subject = draw(SUBJECT)
    if kind == "sub":
        return rp.encode_rs_plus("$G", subject), RouteSub("$G", subject)
    if kind == "qsub":
        queue, weight = draw(TOKEN), draw(st.integers(1, 1000))
        return rp.encode_rs_plus("$G", subject, queue, weight), RouteSub("$G", subject, queue, weight)
    if kind == "unsub":
        return rp.encode_rs_minus("$G", subject), RouteUnsub("$G", subject)
    if kind == "qunsub":
        queue = draw(TOKEN)
        return rp.encode_rs_minus("$G", subject, queue), RouteUnsub("$G", subject, queue)
    if kind == "ping":
        return b"PING\r\n", PING
    reply = draw(st.none() | SUBJECT)
    queues = tuple(draw(st.lists(TOKEN, max_size=3)))
    headers = draw(st.none() | st.just(HDR))
    payload = draw(st.binary(max_size=64))
    msg = RouteMsg("$G", subject, reply, queues, headers, payload)
    return rp.encode_route_msg(msg), msg


@settings(max_examples=200, deadline=None)
@given(st.lists(route_ops(), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_encoded_frames_parse_back_at_any_split(frames: list, rnd: random.Random) -> None:
    data = b"".join(encoded for encoded, _ in frames)
    expected = [op for _, op in frames]
    parser = RouteParser()
    out: list = []
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, max(1, len(data) // 3))
        out.extend(parser.feed(data[pos : pos + step]))
        pos += step
    assert flatten_route(out) == expected


def test_rmsg_head_forms() -> None:
    assert rp.rmsg_head("$G", "s", None, (), False) == b"RMSG $G s"
    assert rp.rmsg_head("$G", "s", "r", (), False) == b"RMSG $G s r"
    assert rp.rmsg_head("$G", "s", "r", ("q1", "q2"), True) == b"HMSG $G s + r q1 q2"
    assert rp.rmsg_head("$G", "s", None, ("q1",), False) == b"RMSG $G s | q1"


def test_msg_tail() -> None:
    assert rp.msg_tail(None, None, b"abc") == b" 3\r\n"
    assert rp.msg_tail("r", HDR, b"ab") == b" r %d %d\r\n" % (len(HDR), len(HDR) + 2)


# -- pure decisions -----------------------------------------------------------------------------

def test_check_connect() -> None:
    assert rp.check_connect({"name": "N1", "cluster": "c"}, "c", False) is None
    assert rp.check_connect({"lang": "python3"}, "c", False) is rp.Rejection.CLIENT_ON_ROUTE_PORT
    assert rp.check_connect({"cluster": "other"}, "c", False) is rp.Rejection.CLUSTER_NAME
    assert rp.check_connect({"cluster": "other"}, "c", True) is None  # we have no fixed name
    assert rp.check_connect({"cluster": "other", "cluster_dynamic": True}, "c", False) is None


def test_check_info() -> None:
    assert rp.check_info({"server_id": "N2", "cluster": "c"}, "N1", "c", False) is None
    assert rp.check_info({"server_id": "N1", "cluster": "c"}, "N1", "c", False) is rp.Rejection.SELF
    assert rp.check_info({"cluster": "c"}, "N1", "c", False) is rp.Rejection.NO_SERVER_ID
    assert rp.check_info({"server_id": "N2", "cluster": "x"}, "N1", "c", False) is rp.Rejection.CLUSTER_NAME


@given(st.text(min_size=1, max_size=4), st.text(min_size=1, max_size=4), st.booleans())
def test_both_ends_keep_the_same_duplicate(a: str, b: str, a_dialled_first: bool) -> None:
    """A has connection X (dialled by A) and Y (dialled by B); B sees the mirror image.
    Whatever order each end registered them in, both keep the same one."""
    if a == b:
        return
    # at A: existing/new solicited flags for X (A dialled) and Y (B dialled)
    def kept(local: str, peer: str, first_local_dialled: bool) -> str:
        new_local_dialled = not first_local_dialled
        keep_new = rp.keep_new_connection(local, peer, first_local_dialled, new_local_dialled)
        first = "X" if first_local_dialled == (local == a) else "Y"
        second = "Y" if first == "X" else "X"
        return second if keep_new else first

    at_a = kept(a, b, a_dialled_first)
    at_b = kept(b, a, not a_dialled_first)
    assert at_a == at_b
    assert at_a == ("X" if min(a, b) == a else "Y")


def test_same_dialler_keeps_existing() -> None:
    assert rp.keep_new_connection("A", "B", True, True) is False
    assert rp.keep_new_connection("A", "B", False, False) is False


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5), st.lists(st.integers(1, 5), max_size=4), st.floats(0, 0.999999))
def test_pick_weighted_returns_a_member(local: int, weights: list[int], draw: float) -> None:
    remote = [(f"r{i}", w) for i, w in enumerate(weights)]
    if local == 0 and not remote:
        return
    choice = rp.pick_weighted(local, remote, draw)
    if choice is None:
        assert local > 0
    else:
        assert choice in {k for k, _ in remote}


def test_pick_weighted_proportions() -> None:
    rnd = random.Random(7)
    counts = {None: 0, "r1": 0, "r2": 0}
    for _ in range(6000):
        counts[rp.pick_weighted(1, [("r1", 2), ("r2", 3)], rnd.random())] += 1
    assert 800 < counts[None] < 1200
    assert 1700 < counts["r1"] < 2300
    assert 2600 < counts["r2"] < 3400


@pytest.mark.parametrize(("url", "expected"), [
    ("nats-route://127.0.0.1:6222/", ("127.0.0.1", 6222)),
    ("nats://user:pw@host.example:7000", ("host.example", 7000)),
    ("10.0.0.1:1", ("10.0.0.1", 1)),
    ("nats://[::1]:6222", ("::1", 6222)),
])
def test_parse_route_url(url: str, expected: tuple[str, int]) -> None:
    assert rp.parse_route_url(url) == expected


def test_parse_route_url_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        rp.parse_route_url("nats://host")


ROUTE_WORDS = [b"RS+ ", b"RS- ", b"RMSG ", b"HMSG ", b"LS+ ", b"LMSG ", b"INFO ", b"CONNECT ",
               b"PING", b"PONG", b"+OK", b"-ERR ", b"$G ", b"foo ", b"| ", b"+ ", b"3", b"12 ",
               b"\r\n", b"\n", b"{}", b"abc", b" "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ROUTE_WORDS) | st.binary(max_size=6), max_size=40),
       st.integers(1, 16))
def test_any_bytes_never_raise_and_nothing_follows_an_error(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    parser = RouteParser(max_control_line=64, max_payload=64)
    out: list = []
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    errors = [i for i, op in enumerate(out) if isinstance(op, ProtocolError)]
    assert errors in ([], [len(out) - 1])
    assert parser.closed == bool(errors)
    whole = RouteParser(max_control_line=64, max_payload=64).feed(data)
    assert flatten_route(whole) == flatten_route(out)


def test_route_authorization() -> None:
    creds = ("ruser", "s3cret")
    good = {"name": "N1", "user": "ruser", "pass": "s3cret"}
    assert rp.check_connect(good, "c", False, creds) is None
    assert rp.check_connect({**good, "pass": "nope"}, "c", False, creds) is rp.Rejection.AUTHORIZATION
    assert rp.check_connect({"name": "N1"}, "c", False, creds) is rp.Rejection.AUTHORIZATION
    assert rp.check_connect({"name": "N1"}, "c", False, None) is None
    assert rp.route_credentials("nats-route://ruser:s3cret@h:1/") == creds
    assert rp.route_credentials("nats://h:1") is None


# -- one-off (`_INBOX.`) RMSG lines: a fast path that must agree with the general parser ------

ONE_OFF_WORDS = [b"RMSG", b"rmsg", b"HMSG", b"$G", b"_INBOX.", b"_INBOX.a.1", b"lt.s", b"+", b"|",
                 b"q", b"3", b"16", b"-1", b"99999999999", b"\xff", b"\xef\xbc\x93"]
ONE_OFF_SEPS = [b" ", b" ", b" ", b"  ", b"\t", b"\x0b", b"\r"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ONE_OFF_WORDS), st.sampled_from(ONE_OFF_SEPS)),
                min_size=1, max_size=7), st.booleans())
def test_one_off_fast_path_agrees_with_the_general_parser(words: list, cr: bool) -> None:
    line = b"".join(w + s for w, s in words[:-1]) + words[-1][0] + (b"\r" if cr else b"")
    fast = RouteParser()._one_off_rmsg(line)
    general: list = []
    slow = RouteParser()._control_line(line, general)
    if fast is not None:
        assert fast == slow
        assert general == []


def test_one_off_lines_parse_like_others_but_stay_out_of_the_line_cache() -> None:
    parser = RouteParser()
    data = b"".join(rp.encode_rmsg("$G", f"_INBOX.x.{i}", None, (), None, b"ack") +
                    rp.encode_rmsg("$G", "lt.s", f"_INBOX.x.{i}", (), None, b"pub")
                    for i in range(50))
    out = flatten_route(parser.feed(data))
    assert out[0] == RouteMsg("$G", "_INBOX.x.0", None, (), None, b"ack")
    assert out[99] == RouteMsg("$G", "lt.s", "_INBOX.x.49", (), None, b"pub")
    assert len(out) == 100
    assert parser._cache == {}
    # the general path still caches repeating lines and handles queue forms with an inbox
    out = flatten_route(parser.feed(rp.encode_rmsg("$G", "a", "_INBOX.r", ("q",), None, b"x") +
                                    rp.encode_rmsg("$G", "a", None, (), None, b"y")))
    assert out == [RouteMsg("$G", "a", "_INBOX.r", ("q",), None, b"x"),
                   RouteMsg("$G", "a", None, (), None, b"y")]
    assert len(parser._cache) == 1


@settings(max_examples=200, deadline=None)
@given(SUBJECT, st.none() | st.just("") | SUBJECT, st.lists(TOKEN, max_size=2),
       st.none() | st.just(HDR), st.binary(max_size=32))
def test_encode_rmsg_equals_head_plus_sizes(subject: str, reply: str | None, queues: list,
                                            headers: bytes | None, payload: bytes) -> None:
    head = rp.rmsg_head("$G", subject, reply, queues, headers is not None)
    if headers is None:
        expected = head + b" %d\r\n" % len(payload) + payload + b"\r\n"
    else:
        expected = head + b" %d %d\r\n" % (len(headers), len(headers) + len(payload)) + headers + payload + b"\r\n"
    assert rp.encode_rmsg("$G", subject, reply, queues, headers, payload) == expected

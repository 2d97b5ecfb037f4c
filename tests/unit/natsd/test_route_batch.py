"""Batched forwarding across routes agrees with the one-message-at-a-time paths.

- the route parser's run of one-off RMSG frames (`_one_off_run`) gives the very messages and
  client tails the general parser gives, for any mix of frames fed whole or split anywhere;
- `Cluster.remote_msgs` (a read's messages, matched once per subject, usual ones inline) leaves
  the same bytes in every client's buffer and makes the same internal calls as `remote_msg`
  per message;
- `Cluster.forward_internal_many` (PubAcks of a commit) queues the same bytes on every route as
  `forward_internal` per message, and one write per route;
- `Cluster._plain_frames` (a client's publish run forwarded by its tail) equals the frames built
  from `rmsg_head` + sizes.
No sockets: servers, routes and clients are built in memory.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from natsd import protocol as p
from natsd import route_protocol as rp
from natsd.client import ClientConnection
from natsd.cluster import Cluster
from natsd.config import ServerOptions
from natsd.route import QueueWeight, RouteConnection, RouteState, plain_marker
from natsd.server import Server


class _NoStream:
    pass


def _server(seed: int = 1) -> Server:
    server = Server(ServerOptions(cluster_port=0, seed=seed))
    server.cluster = Cluster(server)
    return server


def _route(server: Server, peer: str, plain: list[str], queues: list[tuple[str, str]] = ()) -> RouteConnection:
    assert server.cluster is not None
    conn = RouteConnection(server.cluster, _NoStream(), solicited=True)
    conn.state = RouteState.REGISTERED
    conn.peer_id = peer
    for subject in plain:
        conn.remote.insert(subject, None, plain_marker)
    for subject, queue in queues:
        entry = conn.queue_weights[(subject, queue)] = QueueWeight(2)
        conn.remote.insert(subject, queue, entry)
    server.cluster.routes[peer] = conn
    server.cluster_active = server.cluster
    return conn


def _client(server: Server, cid: int, headers: bool = True) -> ClientConnection:
    c = ClientConnection(server, _NoStream(), cid, "127.0.0.1")
    c.verbose = c.pedantic = False
    c.headers = headers
    server.clients[cid] = c
    return c


# -- the parser's one-off run -------------------------------------------------------------------

def _messages(ops: list) -> list:
    """One entry per message (runs expanded), client tail included; other ops as they are."""
    out: list = []
    for op in ops:
        if type(op) is tuple:
            account, subject, reply, queues, headers, payloads, tail = op
            out.extend((account, subject, reply, queues, headers, bytes(pl), tail) for pl in payloads)
        else:
            out.append(op)
    return out


def _general_parser(**limits: int) -> rp.RouteParser:
    parser = rp.RouteParser(**limits)
    parser._one_off_run = lambda buf, pos, ops: pos  # type: ignore[method-assign]
    return parser


LINE_WORDS = [b"RMSG", b"$G", b"ACC", b"_INBOX.a.1", b"_INBOX.b.22", b"js.x", b"lt.s", b"+", b"|",
              b"q", b"\xff", b"\xef\xbc\x93"]
SEPS = [b" ", b" ", b" ", b" ", b"  ", b"\t", b"\x0b"]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["ack", "pub", "ack", "pub", "odd", "other", "ping", "broken"]))
    payload = draw(st.binary(max_size=12))
    size = b"%d" % len(payload)
    if draw(st.integers(0, 9)) == 0:
        size = b"0" + size  # leading zero: the general path's tail
    if kind == "ack":
        return b"RMSG $G _INBOX.%s.%d %s\r\n%s\r\n" % (draw(st.sampled_from([b"a", b"b"])),
                                                      draw(st.integers(0, 999)), size, payload)
    if kind == "pub":
        subject = draw(st.sampled_from([b"js.x", b"js.y", b"\xff.z"]))
        account = draw(st.sampled_from([b"$G", b"$G", b"ACC"]))
        return b"RMSG %s %s _INBOX.c.%d %s\r\n%s\r\n" % (account, subject, draw(st.integers(0, 99)),
                                                         size, payload)
    if kind == "odd":  # words and separators around an inbox: the fast path must agree or step aside
        words = draw(st.lists(st.tuples(st.sampled_from(LINE_WORDS), st.sampled_from(SEPS)),
                              min_size=2, max_size=5))
        line = b"".join(w + s for w, s in words) + size
        end = draw(st.sampled_from([b"\r\n", b"\n"]))
        return line + end + payload + b"\r\n"
    if kind == "other":
        return rp.encode_rmsg("$G", "lt.s", "_INBOX.q", ("grp",), None, payload) + b"RS+ $G x.y\r\n"
    if kind == "ping":
        return b"PING\r\n"
    return b"RMSG $G _INBOX.a.1 %d\r\n%sXX" % (len(payload), payload)  # bad frame end


@settings(max_examples=300, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=12), st.randoms(use_true_random=False),
       st.sampled_from([{}, {"max_control_line": 24}, {"max_control_line": 30, "max_payload": 6}]))
def test_one_off_run_agrees_with_the_general_parser(parts: list[bytes], rnd: random.Random,
                                                     limits: dict) -> None:
    data = b"".join(parts)
    whole = _messages(rp.RouteParser(**limits).feed(data))
    assert whole == _messages(_general_parser(**limits).feed(data))
    split: list = []
    parser = rp.RouteParser(**limits)
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, max(1, len(data) // 3))
        split.extend(parser.feed(data[pos:pos + step]))
        pos += step
    assert _messages(split) == whole


def test_one_off_run_takes_a_read_of_requests_and_acks_in_one_pass() -> None:
    data = b"".join(b"RMSG $G js.x _INBOX.c.%d 2\r\nhi\r\n" % i for i in range(3))
    data += b"".join(b'RMSG $G _INBOX.c.%d 9\r\n{"seq":%d}\r\n' % (i, i) for i in range(2))
    data += b"RMSG $G js.x _INBOX.c.9 2\r\nh"  # incomplete: kept for the next read
    parser = rp.RouteParser()
    ops = parser.feed(data)
    assert ops == [("$G", "js.x", f"_INBOX.c.{i}", (), None, [b"hi"], b" _INBOX.c.%d 2\r\n" % i)
                   for i in range(3)] + [
        ("$G", f"_INBOX.c.{i}", None, (), None, [b'{"seq":%d}' % i], b" 9\r\n") for i in range(2)]
    assert parser.feed(b"i\r\n") == [("$G", "js.x", "_INBOX.c.9", (), None, [b"hi"], b" _INBOX.c.9 2\r\n")]
    assert parser._cache == {}


# -- delivery of a read's messages ----------------------------------------------------------------

SUBJECTS = ["js.x", "js.y", "_INBOX.a.1", "_INBOX.a.2", "_INBOX.b.1", "other"]
SUB_PATTERNS = ["js.x", "js.*", "_INBOX.a.*", "_INBOX.>", "_INBOX.b.1", "other", "nobody"]


@st.composite
def route_msgs(draw: st.DrawFn) -> tuple:
    subject = draw(st.sampled_from(SUBJECTS))
    reply = draw(st.none() | st.sampled_from(["_INBOX.r.1", "_INBOX.r.2"]))
    queues = tuple(draw(st.lists(st.sampled_from(["g1", "g2"]), max_size=1)))
    headers = draw(st.none() | st.none() | st.just(b"NATS/1.0\r\nA: b\r\n\r\n"))
    payloads = draw(st.lists(st.binary(max_size=8), min_size=1, max_size=3))
    account = draw(st.sampled_from(["$G", "$G", "$G", "OTHER"]))
    hsize = -1 if headers is None else len(headers)
    size = len(payloads[0]) + (0 if headers is None else len(headers))
    payloads = [payloads[0]] * len(payloads) if headers is None else payloads[:1]
    return (account, subject, reply, queues, headers, payloads, rp.msg_tail_sizes(reply, hsize, size))


@st.composite
def subscriptions(draw: st.DrawFn) -> list:
    return draw(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(SUB_PATTERNS),
                                   st.none() | st.sampled_from(["g1", "g2"]), st.integers(0, 3)),
                         max_size=8))


def _node(subs: list, seed: int) -> tuple[Server, list, list]:
    server = _server(seed)
    conn = _route(server, "P1", [])
    clients = [_client(server, 1), _client(server, 2, headers=False)]
    calls: list = []
    for i, (who, pattern, queue, max_msgs) in enumerate(subs):
        if who == 2:
            server.subscribe_internal(pattern, queue, lambda *args, i=i: calls.append((i, *args)))
            continue
        sub = server.add_subscription(clients[who], pattern, queue, str(i))
        clients[who].subs[str(i)] = sub
        sub.max_msgs = max_msgs
    return server, [conn], clients + [calls]


@settings(max_examples=300, deadline=None)
@given(subscriptions(), st.lists(route_msgs(), min_size=1, max_size=10), st.integers(0, 3))
def test_remote_msgs_delivers_like_remote_msg_one_by_one(subs: list, ops: list, seed: int) -> None:
    batched, (conn_b,), (c1, c2, calls_b) = _node(subs, seed)
    single, (conn_s,), (d1, d2, calls_s) = _node(subs, seed)
    assert batched.cluster is not None and single.cluster is not None
    batched.cluster.remote_msgs(conn_b, ops)
    for op in ops:
        single.cluster.remote_msg(conn_s, op)
    assert (bytes(c1.out), bytes(c2.out)) == (bytes(d1.out), bytes(d2.out))
    assert calls_b == calls_s
    assert (c1.out_msgs, c2.out_msgs) == (d1.out_msgs, d2.out_msgs)
    delivered = [[s.delivered for s in c.subs.values()] for c in (c1, c2)]
    assert delivered == [[s.delivered for s in d.subs.values()] for d in (d1, d2)]


# -- PubAcks of one commit over the routes --------------------------------------------------------

ACK_SUBJECTS = ["_INBOX.a.1", "_INBOX.a.2", "_INBOX.b.7", "_INBOX.q.1", "$JS.ACK.S.C.1.1.1.1.0", "x.y"]


def _ack_node(seed: int) -> tuple[Server, list[RouteConnection]]:
    server = _server(seed)
    r1 = _route(server, "P1", ["_INBOX.a.*", "x.y"])
    r2 = _route(server, "P2", ["_INBOX.>"], [("_INBOX.q.*", "grp"), ("x.y", "w")])
    r3 = _route(server, "P3", [], [("_INBOX.q.*", "grp")])
    for conn in (r1, r2, r3):
        conn.out = bytearray()
    return server, [r1, r2, r3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACK_SUBJECTS), st.binary(max_size=8)), max_size=12),
       st.integers(0, 3))
def test_forward_internal_many_queues_what_forward_internal_queues(msgs: list, seed: int) -> None:
    many, routes_m = _ack_node(seed)
    one, routes_o = _ack_node(seed)
    assert many.cluster is not None and one.cluster is not None
    many.cluster.forward_internal_many(msgs)
    for subject, payload in msgs:
        one.cluster.forward_internal(subject, None, None, payload)
    assert [bytes(c.out) for c in routes_m] == [bytes(c.out) for c in routes_o]


def test_pubacks_of_a_commit_leave_as_one_write_per_route_at_the_flush() -> None:
    server, (r1, r2, r3) = _ack_node(1)
    assert server.cluster is not None
    server.publish_internal_many([(f"_INBOX.a.{i}", b"ack") for i in range(1, 3)] +
                                 [(f"_INBOX.b.{i}", b"ack") for i in range(3)])
    # no socket in memory: flush_now hands the bytes to the writer task in one piece
    assert bytes(r1.out) == b"".join(rp.encode_rmsg("$G", f"_INBOX.a.{i}", None, (), None, b"ack")
                                     for i in range(1, 3))
    assert bytes(r2.out) == bytes(r1.out) + b"".join(
        rp.encode_rmsg("$G", f"_INBOX.b.{i}", None, (), None, b"ack") for i in range(3))
    assert r3.out == b""
    assert not server.dirty and not r1.dirty and not r2.dirty


# -- a client's publish run forwarded by its tail ---------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["js.x", "a.\xff", "b"]), st.none() | st.sampled_from(["_INBOX.r.1", "r"]),
       st.booleans(), st.lists(st.binary(max_size=6), min_size=1, max_size=4), st.booleans())
def test_forwarded_publish_frames_equal_head_plus_sizes(subject: str, reply: str | None, headers: bool,
                                                        payloads: list, same: bool) -> None:
    if same:
        payloads = [payloads[0]] * len(payloads)
    hdr = b"NATS/1.0\r\nK: v\r\n\r\n"
    data = b"".join(p.encode_hpub(subject, reply, hdr, pl) if headers else p.encode_pub(subject, reply, pl)
                    for pl in payloads)
    parser = p.Parser(server_side=True)
    ops = parser.feed(data)
    server = _server()
    assert server.cluster is not None
    got = b"".join(server.cluster._plain_frames(subj, hd, pls, tail) for subj, _, hd, pls, tail in ops)
    expected = b"".join(rp.encode_rmsg("$G", subject, reply, (), hdr if headers else None, pl) for pl in payloads)
    assert got == expected


def test_a_failing_ingest_callback_is_logged_and_the_rest_of_the_read_still_delivered() -> None:
    server = _server()
    assert server.cluster is not None
    conn = _route(server, "P1", [])
    got: list = []

    def ingest(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("boom")
        got.append((subject, reply, payload))

    server.subscribe_internal("js.>", None, ingest)
    ops = rp.RouteParser().feed(b"".join(rp.encode_rmsg("$G", "js.x", f"_INBOX.c.{i}", (), None, pl)
                                         for i, pl in enumerate([b"a", b"bad", b"c"])))
    server.cluster.remote_msgs(conn, ops)
    assert got == [("js.x", "_INBOX.c.0", b"a"), ("js.x", "_INBOX.c.2", b"c")]


# -- one-off subjects: the remote interest kept per stem ----------------------------------------

STEM_PATTERNS = ["_INBOX.a.*", "_INBOX.a.5", "_INBOX.*.5", "_INBOX.>", "_INBOX.a.>", "_INBOX.a.5.x",
                 "_INBOX.b.*", "x.y.z", "_INBOX.*.*", "*.a.*", "*.a.5", "*.*.5", ">", "q.a.5"]
STEM_SUBJECTS = ["_INBOX.a.1", "_INBOX.a.5", "_INBOX.b.5", "_INBOX.b.7", "_INBOX.a.", "_INBOX..1",
                 "_INBOX.a.5.x", "_INBOX", "_INBOX.", "_INBOX.a.*", "q.a.1", "q.a.5", "_INBOX.*.5"]


def _as_sets(result: object) -> tuple:
    return (len(result.plain), {id(x) for x in result.plain},  # type: ignore[attr-defined]
            {(n, frozenset(id(m) for m in g))
             for n, g in zip(result.queue_names, result.queues, strict=True)})  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("sub"), st.sampled_from(STEM_PATTERNS), st.none() | st.just("g")),
    st.tuples(st.just("unsub"), st.sampled_from(STEM_PATTERNS), st.none() | st.just("g")),
    st.tuples(st.just("ask"), st.sampled_from(STEM_SUBJECTS), st.none())), max_size=30))
def test_interest_kept_per_stem_equals_a_fresh_walk(steps: list) -> None:
    server = _server()
    conn = _route(server, "P1", [])
    for kind, subject, queue in steps:
        if kind == "sub":
            conn._remote_sub(rp.RouteSub("$G", subject, queue, 1 if queue else 0))
        elif kind == "unsub":
            conn._remote_unsub(rp.RouteUnsub("$G", subject, queue))
        else:
            assert _as_sets(conn.interest_result_once(subject)) == _as_sets(conn.remote.match_once(subject))
            assert conn.interest(subject, once=True) == conn.interest(subject)


def test_a_requesters_inbox_stem_is_walked_once_until_interest_changes() -> None:
    server = _server()
    conn = _route(server, "P1", [])
    conn._remote_sub(rp.RouteSub("$G", "_INBOX.abc.*"))
    assert all(conn.interest_result_once(f"_INBOX.abc.{i}").plain for i in range(100))
    assert conn.one_off_stems.stems() == ["_INBOX.abc"]
    conn._remote_sub(rp.RouteSub("$G", "_INBOX.abc.7"))  # a literal end of three tokens: walk
    assert conn.one_off_stems.stems() == []
    assert len(conn.interest_result_once("_INBOX.abc.7").plain) == 2
    assert len(conn.interest_result_once("_INBOX.abc.8").plain) == 1
    assert conn.one_off_stems.stems() == []
    conn._remote_unsub(rp.RouteUnsub("$G", "_INBOX.abc.7"))
    assert len(conn.interest_result_once("_INBOX.abc.7").plain) == 1
    assert conn.one_off_stems.stems() == ["_INBOX.abc"]
    conn._remote_unsub(rp.RouteUnsub("$G", "_INBOX.abc.*"))  # the requester went away
    assert not conn.interest_result_once("_INBOX.abc.9").plain


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("sub"), st.sampled_from(STEM_PATTERNS), st.none() | st.just("g")),
    st.tuples(st.just("unsub"), st.integers(0, 30), st.none()),
    st.tuples(st.just("ask"), st.sampled_from(STEM_SUBJECTS), st.none())), max_size=30))
def test_local_one_off_match_per_stem_equals_a_fresh_walk(steps: list) -> None:
    server = _server()
    client = _client(server, 1)
    subs: list = []
    for kind, arg, queue in steps:
        if kind == "sub":
            subs.append(server.add_subscription(client, arg, queue, str(len(subs))))
        elif kind == "unsub":
            if subs:
                server.remove_subscription(subs.pop(arg % len(subs)))
        else:
            assert _as_sets(server.match_one_off(arg)) == _as_sets(server.sublist.match_once(arg))


def test_ack_subjects_with_unique_middle_tokens_keep_no_stems() -> None:
    server = _server()
    server.subscribe_internal("$JS.ACK.S.>", None, lambda *a: None)
    for i in range(50):
        assert server.match_one_off(f"$JS.ACK.S.C.1.{i}.{i}.0.0").plain
    assert len(server.one_off_stems) == 0


# -- a client's publishes to a repeating subject go straight to its routes ---------------------------

PUB_PATTERNS = ["js.x", "js.*", "js.>", "other"]
PUB_SUBJECTS = ["js.x", "js.y", "other", "nobody"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("sub"), st.integers(0, 1), st.sampled_from(PUB_PATTERNS)),
    st.tuples(st.just("unsub"), st.integers(0, 1), st.sampled_from(PUB_PATTERNS)),
    st.tuples(st.just("pub"), st.integers(1, 3), st.sampled_from(PUB_SUBJECTS))), max_size=25))
def test_publishes_reach_exactly_the_routes_with_interest_across_interest_changes(steps: list) -> None:
    server = _server()
    assert server.cluster is not None
    routes = [_route(server, "P1", []), _route(server, "P2", [])]
    client = _client(server, 1)
    expected = [bytearray(), bytearray()]
    for n, (kind, arg, subject) in enumerate(steps):
        if kind == "sub":
            routes[arg]._remote_sub(rp.RouteSub("$G", subject))
        elif kind == "unsub":
            routes[arg]._remote_unsub(rp.RouteUnsub("$G", subject))
        else:
            payloads = [b"p%d" % n] * arg
            ops = client.parser.feed(b"".join(p.encode_pub(subject, f"_INBOX.r.{n}", pl) for pl in payloads))
            for _, reply, headers, pls, tail in ops:
                server.cluster.publish(client, (), subject, reply, headers, pls, tail)
            for i, conn in enumerate(routes):
                if conn.interest(subject)[0]:
                    expected[i] += b"".join(rp.encode_rmsg("$G", subject, f"_INBOX.r.{n}", (), None, pl)
                                            for pl in payloads)
    assert [bytes(c.out) for c in routes] == [bytes(e) for e in expected]


def test_replies_to_inboxes_fill_no_forwarding_cache() -> None:
    server = _server()
    assert server.cluster is not None
    conn = _route(server, "P1", ["_INBOX.r.*", "svc"])
    client = _client(server, 1)
    data = b"".join(p.encode_pub(f"_INBOX.r.{i}", None, b"ok") + p.encode_pub("svc", f"_INBOX.r.{i}", b"q")
                    for i in range(20))
    for subject, reply, headers, pls, tail in client.parser.feed(data):
        server.cluster.publish(client, (), subject, reply, headers, pls, tail)
    assert bytes(conn.out) == b"".join(rp.encode_rmsg("$G", f"_INBOX.r.{i}", None, (), None, b"ok") +
                                       rp.encode_rmsg("$G", "svc", f"_INBOX.r.{i}", (), None, b"q")
                                       for i in range(20))
    assert list(server.cluster._heads) == ["svc"] and list(server.cluster._plain_targets) == ["svc"]

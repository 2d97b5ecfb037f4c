"""JetStream deliveries to a client behind a route: `<ack reply>@<stream subject>`.

- `encode_deliver_reply` / `split_deliver_reply` round-trip for any names and subjects (both may
  contain `@`), and nothing the encoder did not produce is ever split (a bare ack reply, a
  client's reply with an `@`);
- the stream leader's `RoutedServer.deliver` sends the RMSG on the deliver subject with the
  suffixed reply; the receiving server's `Cluster.remote_msgs` matches the deliver subject and
  shows its client the stream subject with the bare ack reply (RMSG and HMSG), as a local
  delivery would.
No sockets: servers, routes and clients are built in memory.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.cluster_routing import RoutedServer
from natsd import route_protocol as rp
from natsd.client import ClientConnection
from natsd.cluster import Cluster
from natsd.config import ServerOptions
from natsd.route import RouteConnection, RouteState, plain_marker
from natsd.server import Server

_TOKEN_CHARS = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                             blacklist_characters=".*>")
names = st.text(_TOKEN_CHARS, min_size=1, max_size=6)  # stream/consumer names: no dots
numbers = st.integers(0, 2**63)
subjects = st.lists(st.text(st.sampled_from("ab@k1$_-"), min_size=1, max_size=5),
                    min_size=1, max_size=4).map(".".join)


@st.composite
def ack_replies(draw: st.DrawFn) -> str:
    stream, consumer = draw(names), draw(names)
    nums = [draw(numbers) for _ in range(5)]
    return f"$JS.ACK.{stream}.{consumer}." + ".".join(map(str, nums))


@settings(max_examples=500, deadline=None)
@given(ack_replies(), subjects)
def test_encoded_reply_splits_back_into_subject_and_bare_reply(reply: str, subject: str) -> None:
    assert rp.split_deliver_reply(reply) is None  # a bare ack reply is never split
    encoded = rp.encode_deliver_reply(reply, subject)
    assert encoded == f"{reply}@{subject}"
    assert rp.split_deliver_reply(encoded) == (subject, reply)


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("$JSACK.@1xy_"), max_size=30), subjects)
def test_anything_not_an_ack_reply_is_neither_encoded_nor_split(reply: str, subject: str) -> None:
    parts = reply.split(".")
    shaped = (reply.startswith("$JS.ACK.") and len(parts) == 9 and all(parts[2:4])
              and all(t.isdigit() for t in parts[4:]))
    if not shaped:
        assert rp.encode_deliver_reply(reply, subject) is None
    if "@" not in reply:
        assert rp.split_deliver_reply(reply) is None


def test_split_refuses_suffixes_it_did_not_make() -> None:
    for reply in ["_INBOX.a@orders.k", "$JS.ACK.S.C.1.2.3.4@x", "$JS.ACK.S.C.1.2.3.4.x@y",
                  "$JS.ACK.S.C.1.2.3.4.5@", "$JS.ACK.S.C.1.2.3.4.@y", "$JS.ACK..C.1.2.3.4.5@y",
                  "$JS.ACK.S.C.1.2@3.4.5.6@y", "$JS.FC.S.x@y"]:
        assert rp.split_deliver_reply(reply) is None, reply
    assert rp.encode_deliver_reply(None, "orders.k") is None
    assert rp.encode_deliver_reply("$JS.ACK.S.C.1.2.3.4.5", "") is None
    assert rp.split_deliver_reply("$JS.ACK.S@1.C@2.1.2.3.4.5@a@b.c") == ("a@b.c", "$JS.ACK.S@1.C@2.1.2.3.4.5")


# -- the two ends --------------------------------------------------------------------------------

class _NoStream:
    pass


def _server() -> Server:
    server = Server(ServerOptions(cluster_port=0, seed=1))
    server.cluster = Cluster(server)
    return server


def _route(server: Server, peer: str, plain: list[str]) -> RouteConnection:
    assert server.cluster is not None
    conn = RouteConnection(server.cluster, _NoStream(), solicited=True)
    conn.state = RouteState.REGISTERED
    conn.peer_id = peer
    for subject in plain:
        conn.remote.insert(subject, None, plain_marker)
    server.cluster.routes[peer] = conn
    server.cluster_active = server.cluster
    conn.out = bytearray()
    return conn


def _client(server: Server, cid: int) -> ClientConnection:
    c = ClientConnection(server, _NoStream(), cid, "127.0.0.1")
    c.verbose = c.pedantic = False
    c.headers = True
    server.clients[cid] = c
    return c


ACK = "$JS.ACK.ORDERS.puller.1.7.3.1700000000000000000.0"
HDR = b"NATS/1.0\r\nk: v\r\n\r\n"


def test_leader_sends_the_deliver_subject_with_the_stream_subject_in_the_reply() -> None:
    leader = _server()
    conn = _route(leader, "B", ["_INBOX.req.*"])
    routed = RoutedServer(leader)
    route = routed.route_for("_INBOX.req.1")
    routed.deliver(None, route, "orders.k", ACK, None, [b"hello"], b"")
    routed.deliver(None, route, "orders.k", ACK, HDR, [b"hi"], b"")
    routed.deliver(None, route, "_INBOX.req.1", None, HDR, [b""], b"")  # a status: unchanged
    assert bytes(conn.out) == (
        b"RMSG $G _INBOX.req.1 " + ACK.encode() + b"@orders.k 5\r\nhello\r\n"
        + b"HMSG $G _INBOX.req.1 " + ACK.encode() + b"@orders.k %d %d\r\n" % (len(HDR), len(HDR) + 2)
        + HDR + b"hi\r\n"
        + b"HMSG $G _INBOX.req.1 %d %d\r\n" % (len(HDR), len(HDR)) + HDR + b"\r\n")


def _receiver() -> tuple[Server, RouteConnection, ClientConnection]:
    server = _server()
    conn = _route(server, "A", [])
    client = _client(server, 1)
    client.subs["9"] = server.add_subscription(client, "_INBOX.req.*", None, "9")
    return server, conn, client


def test_receiver_shows_the_stream_subject_and_the_bare_ack_reply() -> None:
    leader = _server()
    out = _route(leader, "B", ["_INBOX.req.*"])
    routed = RoutedServer(leader)
    route = routed.route_for("_INBOX.req.1")
    routed.deliver(None, route, "orders.k", ACK, None, [b"hello"], b"")
    routed.deliver(None, route, "orders.k", ACK, HDR, [b"hi"], b"")
    server, conn, client = _receiver()
    ops = rp.RouteParser().feed(bytes(out.out))
    assert server.cluster is not None
    server.cluster.remote_msgs(conn, ops)
    assert bytes(client.out) == (
        b"MSG orders.k 9 " + ACK.encode() + b" 5\r\nhello\r\n"
        + b"HMSG orders.k 9 " + ACK.encode() + b" %d %d\r\n" % (len(HDR), len(HDR) + 2) + HDR + b"hi\r\n")
    assert client.out_msgs == 2


@settings(max_examples=200, deadline=None)
@given(ack_replies(), subjects, st.binary(max_size=20), st.booleans())
def test_routed_delivery_equals_a_local_delivery(reply: str, subject: str, payload: bytes,
                                                 headers: bool) -> None:
    hdrs = HDR if headers else None
    leader = _server()
    out = _route(leader, "B", ["_INBOX.req.*"])
    routed = RoutedServer(leader)
    routed.deliver(None, routed.route_for("_INBOX.req.1"), subject, reply, hdrs, [payload], b"")
    server, conn, client = _receiver()
    assert server.cluster is not None
    server.cluster.remote_msgs(conn, rp.RouteParser().feed(bytes(out.out)))
    local, _, local_client = _receiver()
    local.deliver(None, local.route_for("_INBOX.req.1"), subject, reply, hdrs, [payload],
                  rp.msg_tail(reply, hdrs, payload))
    assert bytes(client.out) == bytes(local_client.out)


def test_a_reply_with_an_at_sign_that_is_not_ours_is_delivered_unchanged() -> None:
    server, conn, client = _receiver()
    assert server.cluster is not None
    for reply in ("_INBOX.x@orders.k", "$JS.ACK.S.C.1.2@orders.k"):
        client.out = bytearray()
        ops = rp.RouteParser().feed(rp.encode_rmsg("$G", "_INBOX.req.1", reply, (), None, b"x"))
        server.cluster.remote_msgs(conn, ops)
        assert bytes(client.out) == b"MSG _INBOX.req.1 9 " + reply.encode() + b" 1\r\nx\r\n"


def test_a_clients_own_publish_is_never_stripped() -> None:
    server = _server()
    client = _client(server, 1)
    client.subs["9"] = server.add_subscription(client, "_INBOX.req.*", None, "9")
    reply = ACK + "@orders.k"
    server.deliver(None, server.route_for("_INBOX.req.1"), "_INBOX.req.1", reply, None, [b"x"],
                   rp.msg_tail(reply, None, b"x"))
    assert bytes(client.out) == b"MSG _INBOX.req.1 9 " + reply.encode() + b" 1\r\nx\r\n"

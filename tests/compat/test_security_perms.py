"""Authorization and limits against jetraft and the reference nats-server (same config).

Raw-socket sessions pin nats-server's exact `Permissions Violation ...` texts, that the denied
message is dropped (nobody receives it), that the connection stays open (a PONG follows), the
delivery filter for wildcard subscriptions overlapping a deny list, allow_responses for
request/reply, JetStream API subjects under the same rules, and max_subscriptions. nats-py runs
the request/reply case end to end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import nats
import pytest

from tests.compat.servers import KINDS
from tests.compat.test_security_support import SecureServer, arun, secure_server

PASSWORD = "pw"
CONF = {
    "max_subscriptions": 5,
    "authorization": {"users": [
        {"user": "root", "password": PASSWORD},
        {"user": "limited", "password": PASSWORD, "permissions": {
            "publish": {"allow": ["foo.>", "_INBOX.>", "$JS.API.INFO"], "deny": ["foo.secret"]},
            "subscribe": {"allow": ["bar.>", "foo.*", "_INBOX.>"], "deny": ["foo.x"]},
        }},
        {"user": "wild", "password": PASSWORD, "permissions": {"subscribe": {"allow": ["foo.>", "bar.*"]}}},
        {"user": "queues", "password": PASSWORD, "permissions": {"subscribe": {
            "allow": ["foo q1", "baz.* q.*", "bar", "bar q9"], "deny": ["bar q1", "zed"]}}},
        {"user": "qdeny", "password": PASSWORD, "permissions": {"subscribe": {
            "deny": ["bar", "bar q1", "zed q1"]}}},
        {"user": "responder", "password": PASSWORD, "permissions": {
            "subscribe": ["svc.>"], "allow_responses": True}},
        {"user": "responder2", "password": PASSWORD, "permissions": {
            "subscribe": ["svc.>"], "allow_responses": {"max": 2}}},
    ]},
}


def pub_denied(subject: str) -> str:
    return f"-ERR 'Permissions Violation for Publish to \"{subject}\"'"


def sub_denied(subject: str, queue: str | None = None) -> str:
    text = f"Permissions Violation for Subscription to \"{subject}\""
    return f"-ERR '{text}'" if queue is None else f"-ERR '{text} using queue \"{queue}\"'"


class Session:
    """One raw connection: `say(bytes)` then read up to the PING barrier's PONG."""

    def __init__(self, port: int, user: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        assert self._line().startswith(b"INFO ")
        creds = {"user": user, "pass": PASSWORD, "verbose": False, "pedantic": False}
        assert self.say(b"CONNECT " + json.dumps(creds).encode() + b"\r\n") == []

    def _line(self) -> bytes:
        deadline = time.monotonic() + 5
        while b"\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError(self.buf)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; had {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def say(self, data: bytes) -> list[str]:
        """Send `data` + PING; return every line before the PONG (MSG payloads included)."""
        self.sock.sendall(data + b"PING\r\n")
        seen = []
        for _ in range(1000):
            line = self._line()
            if line == b"PONG":
                return seen
            seen.append(line.decode())
        raise AssertionError("no PONG")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module", params=KINDS)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    with secure_server(request.param, tmp_path_factory.mktemp("perms"), CONF) as server:
        yield server


@pytest.fixture
def session(srv: SecureServer) -> Iterator:
    opened: list[Session] = []

    def make(user: str) -> Session:
        opened.append(Session(srv.port, user))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def test_publish_permissions(session) -> None:
    watcher, limited = session("root"), session("limited")
    assert watcher.say(b"SUB > 1\r\n") == []
    said = limited.say(b"PUB foo.secret 1\r\na\r\nPUB baz 1\r\nb\r\nPUB foo.ok 1\r\nc\r\n"
                       b"PUB $JS.API.STREAM.DELETE.S 0\r\n\r\nPUB $JS.API.INFO 0\r\n\r\n")
    assert said == [pub_denied("foo.secret"), pub_denied("baz"), pub_denied("$JS.API.STREAM.DELETE.S")]
    assert watcher.say(b"") == ["MSG foo.ok 1 1", "c", "MSG $JS.API.INFO 1 0", ""]


def test_subscribe_permissions_and_delivery_filter(session) -> None:
    limited, root = session("limited"), session("root")
    said = limited.say(b"SUB foo.x 1\r\nSUB foo.x q 2\r\nSUB zzz q 3\r\nSUB foo.* 4\r\nSUB bar.> q 5\r\n")
    assert said == [sub_denied("foo.x"), sub_denied("foo.x", "q"), sub_denied("zzz", "q")]
    assert root.say(b"PUB foo.x 1\r\nx\r\nPUB foo.y 1\r\ny\r\nPUB bar.z 1\r\nz\r\n") == []
    assert limited.say(b"") == ["MSG foo.y 4 1", "y", "MSG bar.z 5 1", "z"]


def test_wildcard_subscriptions_against_allow_list(session) -> None:
    said = session("wild").say(b"SUB bar.> 1\r\nSUB bar.* 2\r\nSUB > 3\r\nSUB foo.* 4\r\nSUB * 5\r\n"
                               b"SUB bar.*.x 6\r\nSUB foo.> q 7\r\n")
    assert said == [sub_denied(">"), sub_denied("*"), sub_denied("bar.*.x")]


def test_queue_group_permissions(session) -> None:
    """Entries naming a queue group (`"foo q1"`, wildcard queue patterns) decide queue SUBs."""
    said = session("queues").say(
        b"SUB foo 1\r\nSUB foo q1 2\r\nSUB foo q2 3\r\nSUB bar 4\r\nSUB bar q1 5\r\nSUB bar q2 6\r\n"
        b"SUB baz.x q.a 7\r\nSUB baz.x q 8\r\nSUB baz.x 9\r\nSUB bar q9 10\r\nSUB zed 11\r\n")
    assert said == [sub_denied("foo"), sub_denied("foo", "q2"), sub_denied("bar", "q1"),
                    sub_denied("bar", "q2"), sub_denied("baz.x", "q"), sub_denied("baz.x"),
                    sub_denied("zed")]
    said = session("qdeny").say(b"SUB bar 1\r\nSUB bar q1 2\r\nSUB bar q2 3\r\n"
                                b"SUB zed 4\r\nSUB zed q1 5\r\nSUB zed q2 6\r\n")
    assert said == [sub_denied("bar"), sub_denied("bar", "q1"), sub_denied("bar", "q2"),
                    sub_denied("zed", "q1")]


@pytest.mark.parametrize(("user", "answers"), [("responder", 1), ("responder2", 2)])
def test_allow_responses(session, user: str, answers: int) -> None:
    responder, requester = session(user), session("root")
    assert responder.say(b"SUB svc.a 1\r\n") == []
    assert requester.say(b"SUB _INBOX.r1 9\r\nPUB svc.a _INBOX.r1 1\r\nq\r\n") == []
    got = responder.say(b"PUB _INBOX.r1 2\r\nok\r\nPUB _INBOX.r1 2\r\nok\r\nPUB _INBOX.r1 2\r\nok\r\n"
                        b"PUB _INBOX.r2 2\r\nno\r\nPUB svc.a 2\r\nno\r\n")
    assert got == ["MSG svc.a 1 _INBOX.r1 1", "q", *[pub_denied("_INBOX.r1")] * (3 - answers),
                   pub_denied("_INBOX.r2"), pub_denied("svc.a")]
    assert requester.say(b"") == ["MSG _INBOX.r1 9 2", "ok"] * answers


def test_max_subscriptions_keeps_connection_open(session) -> None:
    root = session("root")
    said = root.say(b"".join(b"SUB s.%d %d\r\n" % (i, i) for i in range(7)))
    assert said == ["-ERR 'maximum subscriptions exceeded'"] * 2
    assert root.say(b"PUB s.4 1\r\nk\r\nPUB s.5 1\r\nk\r\n") == ["MSG s.4 4 1", "k"]


async def _request_reply(url: str) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    responder = await nats.connect(url, user="responder", password=PASSWORD, error_cb=on_error,
                                   allow_reconnect=False)
    requester = await nats.connect(url, user="root", password=PASSWORD, allow_reconnect=False)
    try:
        async def answer(msg) -> None:
            await msg.respond(b"pong:" + msg.data)
            await msg.respond(b"again")  # only one response is allowed

        await responder.subscribe("svc.echo", cb=answer)
        await responder.flush()
        reply = await requester.request("svc.echo", b"hi", timeout=3)
        assert reply.data == b"pong:hi"
        await responder.publish("svc.echo", b"not allowed")
        await responder.flush()
        for _ in range(100):  # the async -ERRs arrive after the flush's PONG at the latest
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.02)
        assert any("permissions violation for publish" in e and "_inbox." in e for e in errors)
        assert any('permissions violation for publish to "svc.echo"' in e for e in errors)
        assert responder.is_connected
    finally:
        await responder.close()
        await requester.close()


def test_request_reply_with_nats_py(srv: SecureServer) -> None:
    arun(_request_reply(srv.url))

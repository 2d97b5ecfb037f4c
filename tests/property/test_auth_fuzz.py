"""Fuzz the security paths: random and mutated protocol bytes on an auth-required server.

Each example runs one in-process `Server` (users with permissions) under trio's MockClock
(autojump: auth timeouts and pings take no wall time) over in-memory streams. Honest clients
log in and subscribe: `spy` may subscribe to `>` but is denied `secret.>`, `watcher` may only
subscribe to `public.>`. A fuzzer connection then sends hypothesis-built bytes: fragments of
real operations (good and bad CONNECTs, PUB/HPUB/SUB on allowed and forbidden subjects, PINGs)
mixed with random bytes, byte-mutated, cut into random chunks, starting before any CONNECT.
Afterwards a trusted `root` publishes on secret and public subjects. Half the examples also
configure a `no_auth_user` (a restricted guest), so a CONNECT without credentials logs in.

Properties: the server never logs a crash or an error; every connection finishes within a
(virtual) deadline once its peer hangs up; no MSG on a forbidden subject reaches `spy`,
`watcher` or the fuzzer; an unauthenticated fuzzer never gets any MSG and never owns a
subscription; and the honest clients still get exactly the public messages.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsd import protocol as p
from natsd.auth import parse_users
from natsd.client import ClientConnection
from natsd.config import ServerOptions
from natsd.server import Server
from natsd.subjects import subject_matches

PASSWORD = "pw"
USERS = parse_users([
    {"user": "root", "password": PASSWORD},
    {"user": "spy", "password": PASSWORD, "permissions": {"subscribe": {"allow": [">"], "deny": ["secret.>"]}}},
    {"user": "watcher", "password": PASSWORD, "permissions": {"subscribe": ["public.>", "_INBOX.>"]}},
    {"user": "mallory", "password": PASSWORD, "permissions": {
        "publish": {"deny": ["secret.>"]}, "subscribe": {"deny": ["secret.>"]}}},
    {"user": "guest", "password": PASSWORD, "permissions": {
        "publish": ["public.>"], "subscribe": ["public.>"]}},
])


def _connect(user: str, password: str = PASSWORD, **extra: Any) -> bytes:
    opts = {"user": user, "pass": password, "verbose": False, "pedantic": False, **extra}
    return b"CONNECT " + json.dumps(opts).encode() + b"\r\n"


FRAGMENTS = [
    _connect("mallory"), _connect("mallory", "wrong"), _connect("root", "nope"), _connect("spy", ""),
    _connect("mallory", headers=True), b'CONNECT {"user":"root"}\r\n', b"CONNECT {\r\n", b"CONNECT []\r\n",
    b'CONNECT {"verbose":false,"pedantic":false}\r\n',
    b"PUB secret.a 1\r\nx\r\n", b"PUB public.a 1\r\ny\r\n", b"PUB public.a secret.r 1\r\nz\r\n",
    b"HPUB secret.h 12 13\r\nNATS/1.0\r\n\r\nh\r\n", b"SUB > 1\r\n", b"SUB secret.> 2\r\n",
    b"SUB secret.* q 3\r\n", b"SUB public.> 4\r\n", b"SUB * 5\r\n", b"UNSUB 1\r\n", b"PING\r\n",
    b"PONG\r\n", b"+OK\r\n", b"MSG a 1 1\r\nx\r\n", b"PUB a 99999999999\r\n", b"\r\n", b" ",
]
OPS = st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=24))


@st.composite
def fuzz_bytes(draw: Any) -> tuple[bytes, list[int]]:
    data = bytearray(b"".join(draw(st.lists(OPS, max_size=14))))
    for _ in range(draw(st.integers(0, 4))):  # mutations: flip, delete or insert a byte
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "del", "ins"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "del":
            del data[at]
        else:
            data.insert(at, draw(st.integers(0, 255)))
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(data), 1)), max_size=5))))
    return bytes(data), cuts


class Log:
    """A structlog stand-in that records events (to prove nothing crashed)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def bind(self, **_: Any) -> Log:
        return self

    def _record(self, level: str) -> Any:
        return lambda event, **_: self.events.append((level, event))

    def __getattr__(self, level: str) -> Any:
        return self._record(level)


class Peer:
    """The test's end of an in-memory connection, with a client-side parser."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parser = p.Parser(server_side=False, max_payload=1 << 24)
        self.ops: list = []

    async def until_pong(self) -> None:
        with trio.fail_after(30):
            while True:
                data = await self.stream.receive_some(65536)
                assert data, f"closed early: {self.ops!r}"
                self.ops.extend(self.parser.feed(data))
                if p.PONG in self.ops:
                    self.ops.remove(p.PONG)
                    return

    async def drain(self) -> None:
        """Collect everything until the server hangs up."""
        with trio.fail_after(30):
            while data := await self.stream.receive_some(65536):
                self.ops.extend(self.parser.feed(data))

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server already closed this connection

    def msgs(self) -> list:
        return [op for op in self.ops if type(op).__name__ == "Msg"]


async def _open(server: Server, nursery: trio.Nursery, cid: int) -> tuple[Peer, ClientConnection]:
    ours, theirs = trio.testing.memory_stream_pair()
    client = ClientConnection(server, theirs, cid, "127.0.0.1")
    server.clients[cid] = client
    nursery.start_soon(client.run)
    return Peer(ours), client


async def _login(server: Server, nursery: trio.Nursery, cid: int, user: str, subs: bytes) -> Peer:
    peer, _ = await _open(server, nursery, cid)
    await peer.stream.send_all(_connect(user) + subs + b"PING\r\n")
    await peer.until_pong()
    return peer


async def _scenario(data: bytes, cuts: list[int], guest: bool = False) -> None:
    log = Log()
    server = Server(ServerOptions(host="127.0.0.1", port=0, seed=1, auth_users=USERS,
                                  auth_timeout_s=1.0, max_subscriptions=8,
                                  no_auth_user="guest" if guest else None), log=log)
    async with trio.open_nursery() as nursery:
        spy = await _login(server, nursery, 1, "spy", b"SUB > 1\r\nSUB secret.a 2\r\n")
        watcher = await _login(server, nursery, 2, "watcher", b"SUB public.> 1\r\nSUB > 2\r\n")
        fuzzer, fuzz_client = await _open(server, nursery, 3)
        nursery.start_soon(fuzzer.drain)
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        with trio.fail_after(30):
            for piece in pieces:
                if piece and not fuzz_client.closing:
                    await fuzzer.send(piece)
                    await trio.testing.wait_all_tasks_blocked()
        authed = fuzz_client.authorized
        assert authed or not fuzz_client.subs  # no subscription without a login
        root = await _login(server, nursery, 4, "root", b"PUB secret.a 1\r\ns\r\nPUB public.b 1\r\np\r\n")
        for peer in (spy, watcher):
            await peer.send(b"PING\r\n")
            await peer.until_pong()
        clients = list(server.clients.values())
        for peer in (spy, watcher, root, fuzzer):
            with trio.move_on_after(1):
                await peer.stream.send_eof()
        with trio.fail_after(30):  # every connection ends once its peer hung up: no hang
            for client in clients:
                await client.finished.wait()
        nursery.cancel_scope.cancel()
    assert not [e for e in log.events if e[0] in ("error", "critical", "exception")], log.events
    for peer in (spy, watcher):
        assert not [m for m in peer.msgs() if subject_matches("secret.>", m.subject)]
    assert all(subject_matches("public.>", m.subject) for m in watcher.msgs())
    assert ("public.b", b"p") in [(m.subject, m.payload) for m in watcher.msgs()]
    assert ("public.b", b"p") in [(m.subject, m.payload) for m in spy.msgs()]
    fuzz_msgs = [m for m in fuzzer.ops if type(m).__name__ == "Msg"]
    fuzzer_subjects = [m.subject for m in fuzz_msgs]
    assert not [s for s in fuzzer_subjects if subject_matches("secret.>", s)]
    if not authed:
        assert fuzz_msgs == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_bytes(), st.booleans())
def test_fuzzed_bytes_never_crash_hang_or_leak(case: tuple[bytes, list[int]], guest: bool) -> None:
    """`guest`: a no_auth_user exists, so a CONNECT without credentials logs in (restricted)."""
    data, cuts = case
    trio.run(_scenario, data, cuts, guest, clock=trio.testing.MockClock(autojump_threshold=0))

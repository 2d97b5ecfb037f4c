"""In-process JetStream for unit tests: a natsd `Server` (no sockets) plus `JetStream`, talked
to through the server's internal client API.

`Inbox` is an internal subscription that queues what it receives; `request()` publishes with a
reply inbox and waits (with a deadline) for the answer. The JetStream clock follows trio's
clock, so a test using pytest-trio's `autojump_clock` drives ack_wait, pull expiry and
heartbeats without sleeping. Streams created with `"storage": "memory"` never touch a worker
thread after creation, which keeps MockClock runs exact.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from jetstream.headers import parse_headers
from jetstream.service import JetStream
from natsd.config import ServerOptions
from natsd.server import Server

BASE_NS = 1_700_000_000_000_000_000
REPLY_TIMEOUT_S = 10.0


@attrs.frozen
class Msg:
    subject: str
    reply: str | None
    headers: bytes | None
    payload: bytes

    @property
    def status(self) -> int | None:
        return parse_headers(self.headers).status if self.headers else None

    def header(self, key: str) -> str | None:
        return parse_headers(self.headers).get(key)

    def json(self) -> Any:
        return json.loads(self.payload)


class Inbox:
    def __init__(self, server: Server, subject: str, queue: str | None = None) -> None:
        self.subject = subject
        self.send, self.recv = trio.open_memory_channel[Msg](10_000)
        self.sub = server.subscribe_internal(subject, queue, self._on_msg)

    def _on_msg(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        self.send.send_nowait(Msg(subject, reply, headers, bytes(payload)))

    async def next(self, timeout_s: float = REPLY_TIMEOUT_S) -> Msg:
        with trio.fail_after(timeout_s):
            return await self.recv.receive()

    def pending(self) -> list[Msg]:
        out = []
        while True:
            try:
                out.append(self.recv.receive_nowait())
            except trio.WouldBlock:
                return out

    def close(self) -> None:
        self.sub.unsubscribe()


@attrs.define
class Harness:
    server: Server
    js: JetStream
    counter: int = 0

    def inbox(self, queue: str | None = None) -> Inbox:
        self.counter += 1
        return Inbox(self.server, f"_INBOX.test.{self.counter}", queue)

    def publish(self, subject: str, payload: bytes = b"", reply: str | None = None,
                headers: bytes | None = None) -> None:
        self.server.publish_internal(subject, reply, headers, payload)

    async def request(self, subject: str, body: Any = b"", headers: bytes | None = None) -> Msg:
        inbox = self.inbox()
        try:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.publish(subject, payload, inbox.subject, headers)
            return await inbox.next()
        finally:
            inbox.close()

    async def api(self, subject: str, body: Any = b"", headers: bytes | None = None) -> dict[str, Any]:
        """An API request; under a MockClock the clock stands still meanwhile, because stream
        creation waits on a worker thread and autojump would otherwise fire the deadline."""
        with frozen_mock_clock():
            return (await self.request("$JS.API." + subject, body, headers)).json()


@contextlib.contextmanager
def frozen_mock_clock() -> Iterator[None]:
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        yield
        return
    old = clock.autojump_threshold
    clock.autojump_threshold = math.inf
    try:
        yield
    finally:
        clock.autojump_threshold = old


@contextlib.asynccontextmanager
async def running_js(tmp_path: Path, **options: Any) -> AsyncIterator[Harness]:
    server = Server(ServerOptions(jetstream=True, store_dir=str(tmp_path), seed=7, **options))

    def clock_ns() -> int:
        return BASE_NS + int(trio.current_time() * 1e9)

    js = JetStream(server, clock_ns=clock_ns, seed=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(js.run)
        try:
            yield Harness(server, js)
        finally:
            nursery.cancel_scope.cancel()

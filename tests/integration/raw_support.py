"""The raw-socket NATS client base of the in-process server tests: send bytes, read the server's
operations decoded by the client-side protocol parser, each read bounded by a deadline."""

from __future__ import annotations

from typing import Any

import trio

from natsd import protocol as p


class RawBase:
    """Subclasses set `deadline_s` (how long one `op()` may wait) and `max_payload`."""

    deadline_s: float = 5
    max_payload: int = 1 << 30

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parser = p.Parser(server_side=False, max_payload=self.max_payload)
        self.pending: list = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def op(self, timeout_s: float | None = None) -> Any:
        with trio.fail_after(self.deadline_s if timeout_s is None else timeout_s):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

# pure-core
"""NATS protocol operations as values, and the exact error texts nats-server uses.

Every operation the parser returns (except the hot-path PUB/HPUB tuple, see protocol.py) is a
frozen attrs value defined here, so the parser, the encoder and the server shell share one
vocabulary. `ProtocolError.message` is the -ERR text to send, or None for nats-server's silent
close on malformed arguments.
"""

from __future__ import annotations

import attrs

ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_MAX_PAYLOAD = "Maximum Payload Violation"
ERR_MAX_CONTROL_LINE = "maximum control line exceeded"

@attrs.frozen
class Connect:
    options: dict


@attrs.frozen
class Info:
    info: dict


@attrs.frozen
class Sub:
    subject: str
    queue: str | None
    sid: str


@attrs.frozen
class Unsub:
    sid: str
    max_msgs: int | None = None


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


@attrs.frozen
class Ok:
    pass


@attrs.frozen
class Err:
    text: str


@attrs.frozen
class Msg:
    subject: str
    sid: str
    reply: str | None
    headers: bytes | None
    payload: bytes


@attrs.frozen
class ProtocolError:
    message: str | None  # exact -ERR text, or None to close without one
    close: bool = True
    # the subject of the PUB/HPUB whose frame was broken (nats-server checks a pedantic
    # client's publish subject at the control line, so that -ERR comes first)
    subject: str | None = attrs.field(default=None, eq=False)


PING = Ping()
PONG = Pong()
OK = Ok()


class PayloadRun:
    """The payloads of `count` consecutive PUB frames with one identical control line, kept in
    the received buffer and sliced only when someone needs them (a publish nobody subscribed to
    costs no slicing at all). Behaves as a read-only sequence of payloads: len, iteration,
    indexing, slicing, and equality with a list. `fanout(pre_tail)` builds
    `pre_tail + payload + CRLF` for every payload in one `bytes.join` (measured faster than
    `bytes.replace` of the frame heads)."""

    __slots__ = ("buf", "start", "frame_len", "head_len", "size", "count", "_payloads")

    def __init__(self, buf: bytes, start: int, frame_len: int, head_len: int, count: int) -> None:
        self.buf = buf
        self.start = start
        self.frame_len = frame_len
        self.head_len = head_len
        self.size = frame_len - head_len - 2
        self.count = count
        self._payloads: list[bytes] | None = None

    def payloads(self) -> list[bytes]:
        if self._payloads is None:
            buf, size, step = self.buf, self.size, self.frame_len
            first = self.start + self.head_len
            self._payloads = [buf[i : i + size] for i in range(first, first + self.count * step, step)]
        return self._payloads

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.payloads())

    def __getitem__(self, index):
        return self.payloads()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PayloadRun | list | tuple):
            return self.payloads() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PayloadRun({self.payloads()!r})"

    def fanout(self, pre_tail: bytes) -> bytes:
        """`pre_tail + payload + CRLF` for every payload, as one bytes object."""
        return pre_tail + (b"\r\n" + pre_tail).join(self.payloads()) + b"\r\n"

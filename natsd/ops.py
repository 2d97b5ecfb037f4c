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


PING = Ping()
PONG = Pong()
OK = Ok()

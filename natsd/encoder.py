# pure-core
"""Encoder: NATS operations to wire bytes.

Server operations (INFO, MSG, HMSG, -ERR, PING/PONG/+OK) are what the shell writes; client
operations (CONNECT, PUB, HPUB, SUB, UNSUB) serve tests and benchmark clients. `encode(op)`
handles any operation value or a flattened `(subject, reply, headers, payload)` publish;
`flatten(ops)` expands the parser's PUB runs into one tuple per message.
"""

from __future__ import annotations

import json

from natsd.ops import Connect, Err, Info, Msg, Ok, Ping, Pong, Sub, Unsub

PING_BYTES = b"PING\r\n"
PONG_BYTES = b"PONG\r\n"
OK_BYTES = b"+OK\r\n"
CRLF = b"\r\n"


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_info(info: dict) -> bytes:
    return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b" \r\n"


def encode_connect(options: dict) -> bytes:
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + b"\r\n"


def encode_err(text: str) -> bytes:
    return b"-ERR '" + _b(text) + b"'\r\n"


def encode_msg(subject: str, sid: str, reply: str | None, payload: bytes) -> bytes:
    rep = b" " + _b(reply) if reply else b""
    head = b"MSG " + _b(subject) + b" " + _b(sid) + rep + b" %d\r\n" % len(payload)
    return head + payload + CRLF


def encode_hmsg(subject: str, sid: str, reply: str | None, headers: bytes, payload: bytes) -> bytes:
    rep = b" " + _b(reply) if reply else b""
    sizes = b" %d %d\r\n" % (len(headers), len(headers) + len(payload))
    return b"HMSG " + _b(subject) + b" " + _b(sid) + rep + sizes + headers + payload + CRLF


def encode_pub(subject: str, reply: str | None, payload: bytes) -> bytes:
    rep = b" " + _b(reply) if reply else b""
    return b"PUB " + _b(subject) + rep + b" %d\r\n" % len(payload) + payload + CRLF


def encode_hpub(subject: str, reply: str | None, headers: bytes, payload: bytes) -> bytes:
    rep = b" " + _b(reply) if reply else b""
    sizes = b" %d %d\r\n" % (len(headers), len(headers) + len(payload))
    return b"HPUB " + _b(subject) + rep + sizes + headers + payload + CRLF


def encode_sub(subject: str, queue: str | None, sid: str) -> bytes:
    q = b" " + _b(queue) if queue else b""
    return b"SUB " + _b(subject) + q + b" " + _b(sid) + CRLF


def encode_unsub(sid: str, max_msgs: int | None = None) -> bytes:
    tail = b" %d" % max_msgs if max_msgs is not None else b""
    return b"UNSUB " + _b(sid) + tail + CRLF


def flatten(ops: list) -> list:
    """Expand PUB runs into one `(subject, reply, headers, payload)` tuple per message."""
    out: list = []
    for op in ops:
        if type(op) is tuple:
            out.extend((op[0], op[1], op[2], payload) for payload in op[3])
        else:
            out.append(op)
    return out


def encode(op) -> bytes:
    """Encode an operation value, or a flattened `(subject, reply, headers, payload)`."""
    if type(op) is tuple:
        subject, reply, headers, payload = op
        if headers is None:
            return encode_pub(subject, reply, payload)
        return encode_hpub(subject, reply, headers, payload)
    return _ENCODERS[type(op)](op)


_ENCODERS = {
    Connect: lambda op: encode_connect(op.options),
    Info: lambda op: encode_info(op.info),
    Sub: lambda op: encode_sub(op.subject, op.queue, op.sid),
    Unsub: lambda op: encode_unsub(op.sid, op.max_msgs),
    Ping: lambda op: PING_BYTES,
    Pong: lambda op: PONG_BYTES,
    Ok: lambda op: OK_BYTES,
    Err: lambda op: encode_err(op.text),
    Msg: lambda op: (
        encode_msg(op.subject, op.sid, op.reply, op.payload)
        if op.headers is None
        else encode_hmsg(op.subject, op.sid, op.reply, op.headers, op.payload)
    ),
}


def no_responders_headers(subject: str) -> bytes:
    """Header block of the 503 status sent when a request has no subscribers."""
    return b"NATS/1.0 503\r\nNats-Subject: " + _b(subject) + b"\r\n\r\n"

# pure-core
"""The client side of the NATS wire protocol, as much as the raw JetStream load generator needs.

`ReplyParser` is incremental: `feed(bytes)` returns the complete frames it now holds (MSG, HMSG,
PING, PONG, +OK, -ERR, INFO) and keeps the rest for the next call, so a frame may be cut anywhere
between reads. Frames are plain tuples `(op, subject, sid, reply, header, payload)` because the
publisher parses one per acknowledged message and a tuple is the cheapest record CPython builds.
`puback_outcome` reads the stored sequence (or the error) out of a PubAck body without a full JSON
decode on the happy path; `status_code` reads the status of an HMSG header block (`NATS/1.0 408`);
`ack_stream_seq` reads the stream sequence out of a `$JS.ACK...` reply subject.

No I/O, no clock: jsload.py owns the socket.
"""

from __future__ import annotations

import json
import re

CONTROL_LINE_BYTES_MAX = 4096
BUFFER_BYTES_MAX = 64 * 1024 * 1024

Frame = tuple  # (op: str, subject: bytes, sid: bytes, reply: bytes | None, header: bytes, payload: bytes)

PUBACK_SEQ = re.compile(rb'"seq"\s*:\s*(\d+)')


class ProtocolError(ValueError):
    """The byte stream is not a valid sequence of server frames."""


class ReplyParser:
    """Incremental parser of what a NATS server sends to a client."""

    def __init__(self, buffer_bytes_max: int = BUFFER_BYTES_MAX) -> None:
        self._pending = b""
        self._buffer_bytes_max = buffer_bytes_max

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._pending + data if self._pending else bytes(data)
        out: list[Frame] = []
        pos = 0
        size = len(buf)
        while pos < size:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if size - pos > CONTROL_LINE_BYTES_MAX:
                    raise ProtocolError(f"control line longer than {CONTROL_LINE_BYTES_MAX} bytes")
                break
            head = buf[pos:pos + 4]
            if head == b"MSG ":
                end = _msg(buf, pos + 4, eol, out)
            elif head == b"HMSG":
                end = _hmsg(buf, pos + 5, eol, out)
            else:
                end = _other(buf, pos, eol, out)
            if end < 0:
                break  # the payload has not fully arrived yet
            pos = end
        self._pending = buf[pos:]
        if len(self._pending) > self._buffer_bytes_max:
            raise ProtocolError(f"more than {self._buffer_bytes_max} bytes buffered")
        return out


def _msg(buf: bytes, start: int, eol: int, out: list[Frame]) -> int:
    """`MSG <subject> <sid> [reply] <#bytes>`; returns the end of the frame, or -1 if incomplete."""
    parts = buf[start:eol].split()
    if len(parts) == 4:
        subject, sid, reply, length = parts
    elif len(parts) == 3:
        subject, sid, length = parts
        reply = None
    else:
        raise ProtocolError(f"bad MSG line {buf[start - 4:eol]!r}")
    body = eol + 2
    end = body + _int(length)
    if end + 2 > len(buf):
        return -1
    if buf[end:end + 2] != b"\r\n":
        raise ProtocolError(f"MSG payload not followed by CRLF: {buf[start - 4:eol]!r}")
    out.append(("MSG", subject, sid, reply, b"", buf[body:end]))
    return end + 2


def _hmsg(buf: bytes, start: int, eol: int, out: list[Frame]) -> int:
    """`HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>`."""
    if buf[start - 1:start] != b" ":
        raise ProtocolError(f"bad HMSG line {buf[start - 5:eol]!r}")
    parts = buf[start:eol].split()
    if len(parts) == 5:
        subject, sid, reply, hlen, tlen = parts
    elif len(parts) == 4:
        subject, sid, hlen, tlen = parts
        reply = None
    else:
        raise ProtocolError(f"bad HMSG line {buf[start - 5:eol]!r}")
    header_bytes, total_bytes = _int(hlen), _int(tlen)
    if header_bytes > total_bytes:
        raise ProtocolError(f"HMSG header longer than the message: {buf[start - 5:eol]!r}")
    body = eol + 2
    end = body + total_bytes
    if end + 2 > len(buf):
        return -1
    if buf[end:end + 2] != b"\r\n":
        raise ProtocolError(f"HMSG payload not followed by CRLF: {buf[start - 5:eol]!r}")
    out.append(("HMSG", subject, sid, reply, buf[body:body + header_bytes], buf[body + header_bytes:end]))
    return end + 2


def _other(buf: bytes, pos: int, eol: int, out: list[Frame]) -> int:
    line = buf[pos:eol]
    upper = line[:5].upper()
    if upper.startswith(b"PING"):
        out.append(("PING", b"", b"", None, b"", b""))
    elif upper.startswith(b"PONG"):
        out.append(("PONG", b"", b"", None, b"", b""))
    elif upper.startswith(b"+OK"):
        out.append(("OK", b"", b"", None, b"", b""))
    elif upper.startswith(b"-ERR"):
        out.append(("ERR", b"", b"", None, b"", line[4:].strip()))
    elif upper.startswith(b"INFO"):
        out.append(("INFO", b"", b"", None, b"", line[4:].strip()))
    else:
        raise ProtocolError(f"unknown operation {line[:40]!r}")
    return eol + 2


def _int(token: bytes) -> int:
    if not token.isdigit():
        raise ProtocolError(f"bad size {token!r}")
    return int(token)


# -- JetStream replies ------------------------------------------------------------------------------
def status_code(header: bytes) -> int | None:
    """The status of an HMSG header block (`NATS/1.0 503` -> 503), or None if it has none."""
    if not header.startswith(b"NATS/1.0"):
        return None
    line = header.split(b"\r\n", 1)[0]
    token = line[8:].strip()[:3]
    return int(token) if token.isdigit() else None


def puback_outcome(header: bytes, payload: bytes) -> tuple[int | None, str | None]:
    """(stream sequence, None) for a PubAck, or (None, reason) for an error reply or a status
    reply (503 no responders: no stream or no leader for the subject)."""
    code = status_code(header) if header else None
    if code is not None and code >= 300:
        first_line = header.split(b"\r\n", 1)[0].decode(errors="replace")
        return None, f"status {code}: {first_line}"
    if b'"error"' in payload:
        return None, _error_text(payload)
    found = PUBACK_SEQ.search(payload)
    if found is None:
        return None, f"no seq in PubAck {payload[:200]!r}"
    return int(found.group(1)), None


def _error_text(payload: bytes) -> str:
    try:
        error = json.loads(payload).get("error", {})
        return f"{error.get('code')} err_code {error.get('err_code')}: {error.get('description')}"
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")


def ack_stream_seq(reply: bytes) -> int | None:
    """The stream sequence of a delivered message from its `$JS.ACK` reply subject (both the
    9-token form and the 12-token form with domain and account hash)."""
    tokens = reply.split(b".")
    if len(tokens) == 9 and tokens[1] == b"ACK":
        token = tokens[5]
    elif len(tokens) >= 11 and tokens[1] == b"ACK":
        token = tokens[7]
    else:
        return None
    return int(token) if token.isdigit() else None


def pub_frame(subject: bytes, reply: bytes, payload: bytes) -> bytes:
    return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(payload), payload)


def pub_frames(subject: bytes, inbox: bytes, payload: bytes, first: int, count: int) -> tuple[bytes, list[int]]:
    """Frames for messages first..first+count-1, each replying to `<inbox>.<n>`, as one buffer and
    the offset where each frame starts (plus the end), so any run of frames is one slice."""
    head = b"PUB " + subject + b" " + inbox + b"."
    tail = b" %d\r\n%s\r\n" % (len(payload), payload)
    frames = [head + str(n).encode() + tail for n in range(first, first + count)]
    offsets = [0] * (count + 1)
    total = 0
    for i, frame in enumerate(frames):
        total += len(frame)
        offsets[i + 1] = total
    return b"".join(frames), offsets

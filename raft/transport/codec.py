# pure-core
"""Binary codec for Raft messages on the TCP transport.

Frames: a 4-byte big-endian length, then one frame-type byte and a body.
- HELLO: protocol version, the sender's node id. First frame on every connection.
- BATCH: src, dst, count, then `count` messages without src/dst (the batch header carries them).
  A transport sends all heartbeats queued for one peer in one BATCH, so a thousand idle groups
  cost one frame per tick per peer pair, not a thousand.

A message: type byte, a presence bitmap (varint), group, term, then only the fields whose bit is
set, in a fixed order. Heartbeats carry just group/term/commit, about ten bytes plus the name.
Integers are zigzag LEB128 varints (any Python int round-trips); strings and byte strings are a
varint length then the bytes. Decoding checks every length against the buffer and raises
CodecError on anything malformed; it never trusts a length to allocate.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator

import attrs

from raft.types import Entry, EntryKind, Membership, Message, MessageType, Snapshot, SnapshotMeta

PROTOCOL_VERSION = 1
FRAME_BYTES_MAX = 64 * 1024 * 1024
_LEN = struct.Struct(">I")

_TYPE_CODES = {t: i for i, t in enumerate(MessageType)}
_TYPES_BY_CODE = list(MessageType)
_KINDS_BY_CODE = sorted(EntryKind)
assert [int(k) for k in _KINDS_BY_CODE] == list(range(len(_KINDS_BY_CODE)))


class CodecError(ValueError):
    """Malformed or oversized input."""


class FrameType(enum.IntEnum):
    HELLO = 1
    BATCH = 2


@attrs.frozen
class Hello:
    node_id: str
    version: int = PROTOCOL_VERSION


@attrs.frozen
class Batch:
    src: str
    dst: str
    messages: tuple[Message, ...]


# Presence bits of optional message fields (plain ints: enum flags are slow on the hot path).
_LOG_TERM = 1 << 0
_INDEX = 1 << 1
_ENTRIES = 1 << 2
_COMMIT = 1 << 3
_REJECT = 1 << 4
_REJECT_HINT = 1 << 5
_SNAPSHOT = 1 << 6
_CHUNK_OFFSET = 1 << 7
_CHUNK_LAST = 1 << 8
_CHUNK_CHECKSUM = 1 << 9
_CONTEXT = 1 << 10


# ---- primitives ---------------------------------------------------------------------------


def _put_uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_int(out: bytearray, n: int) -> None:
    _put_uvarint(out, (n << 1) if n >= 0 else ((-n << 1) - 1))


def _put_bytes(out: bytearray, data: bytes) -> None:
    _put_uvarint(out, len(data))
    out += data


def _put_str(out: bytearray, text: str) -> None:
    _put_bytes(out, text.encode())


class _Reader:
    """Cursor over one frame payload; every read checks bounds and raises CodecError."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.end = len(self.data)

    def uvarint(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise CodecError("truncated varint")
        b = self.data[pos]
        if b < 0x80:  # fast path: most fields fit in one byte
            self.pos = pos + 1
            return b
        n, shift = 0, 0
        for _ in range(1024):  # bounded: at most ~7 kbit integers
            if pos >= self.end:
                raise CodecError("truncated varint")
            b = self.data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7
        raise CodecError("varint too long")

    def int(self) -> int:
        z = self.uvarint()
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise CodecError("truncated")
        self.pos = pos + 1
        return self.data[pos]

    def bytes(self) -> bytes:
        n = self.uvarint()
        start = self.pos
        if n > self.end - start:
            raise CodecError("length beyond buffer")
        self.pos = start + n
        return self.data[start : start + n]

    def str(self) -> str:
        try:
            return self.bytes().decode()
        except UnicodeDecodeError as exc:
            raise CodecError("bad utf-8") from exc

    def done(self) -> bool:
        return self.pos == self.end


# ---- messages -----------------------------------------------------------------------------


def _bits(msg: Message) -> int:
    bits = 0
    if msg.log_term:
        bits |= _LOG_TERM
    if msg.index:
        bits |= _INDEX
    if msg.entries:
        bits |= _ENTRIES
    if msg.commit:
        bits |= _COMMIT
    if msg.reject:
        bits |= _REJECT
    if msg.reject_hint:
        bits |= _REJECT_HINT
    if msg.snapshot is not None:
        bits |= _SNAPSHOT
    if msg.chunk_offset:
        bits |= _CHUNK_OFFSET
    if msg.chunk_last:
        bits |= _CHUNK_LAST
    if msg.chunk_checksum:
        bits |= _CHUNK_CHECKSUM
    if msg.context:
        bits |= _CONTEXT
    return bits


def _put_names(out: bytearray, names: frozenset[str]) -> None:
    _put_uvarint(out, len(names))
    for name in sorted(names):
        _put_str(out, name)


def _put_snapshot(out: bytearray, snap: Snapshot) -> None:
    _put_int(out, snap.meta.index)
    _put_int(out, snap.meta.term)
    m = snap.meta.membership
    for names in (m.voters, m.learners, m.voters_outgoing):
        _put_names(out, names)
    _put_bytes(out, snap.data)


def _put_body(out: bytearray, msg: Message) -> None:
    bits = _bits(msg)
    out.append(_TYPE_CODES[msg.type])
    _put_uvarint(out, bits)
    _put_str(out, msg.group)
    _put_int(out, msg.term)
    if bits & _LOG_TERM:
        _put_int(out, msg.log_term)
    if bits & _INDEX:
        _put_int(out, msg.index)
    if bits & _ENTRIES:
        _put_uvarint(out, len(msg.entries))
        for e in msg.entries:
            _put_int(out, e.term)
            _put_int(out, e.index)
            out.append(int(e.kind))
            _put_bytes(out, e.data)
    if bits & _COMMIT:
        _put_int(out, msg.commit)
    if bits & _REJECT_HINT:
        _put_int(out, msg.reject_hint)
    if msg.snapshot is not None:
        _put_snapshot(out, msg.snapshot)
    if bits & _CHUNK_OFFSET:
        _put_int(out, msg.chunk_offset)
    if bits & _CHUNK_CHECKSUM:
        _put_int(out, msg.chunk_checksum)
    if bits & _CONTEXT:
        _put_bytes(out, msg.context)


def _read_names(r: _Reader) -> frozenset[str]:
    n = r.uvarint()
    if n > len(r.data):
        raise CodecError("name count beyond buffer")
    return frozenset(r.str() for _ in range(n))


def _read_snapshot(r: _Reader) -> Snapshot:
    index, term = r.int(), r.int()
    membership = Membership(_read_names(r), _read_names(r), _read_names(r))
    return Snapshot(SnapshotMeta(index, term, membership), r.bytes())


def _read_entries(r: _Reader) -> tuple[Entry, ...]:
    n = r.uvarint()
    if n > len(r.data):
        raise CodecError("entry count beyond buffer")
    out = []
    for _ in range(n):
        term, index, code = r.int(), r.int(), r.byte()
        if code >= len(_KINDS_BY_CODE):
            raise CodecError("unknown entry kind")
        out.append(Entry(term, index, _KINDS_BY_CODE[code], r.bytes()))
    return tuple(out)


def _read_body(r: _Reader, src: str, dst: str) -> Message:
    code = r.byte()
    if code >= len(_TYPES_BY_CODE):
        raise CodecError(f"unknown message type {code}")
    bits = r.uvarint()
    f: dict[str, object] = {"group": r.str(), "term": r.int()}
    if bits & _LOG_TERM:
        f["log_term"] = r.int()
    if bits & _INDEX:
        f["index"] = r.int()
    if bits & _ENTRIES:
        f["entries"] = _read_entries(r)
    if bits & _COMMIT:
        f["commit"] = r.int()
    if bits & _REJECT_HINT:
        f["reject_hint"] = r.int()
    if bits & _SNAPSHOT:
        f["snapshot"] = _read_snapshot(r)
    if bits & _CHUNK_OFFSET:
        f["chunk_offset"] = r.int()
    if bits & _CHUNK_CHECKSUM:
        f["chunk_checksum"] = r.int()
    if bits & _CONTEXT:
        f["context"] = r.bytes()
    f["reject"] = bool(bits & _REJECT)
    f["chunk_last"] = bool(bits & _CHUNK_LAST)
    return Message(type=_TYPES_BY_CODE[code], src=src, dst=dst, **f)  # type: ignore[arg-type]


def encode_message(msg: Message) -> bytes:
    """A standalone message (src and dst included)."""
    out = bytearray()
    _put_str(out, msg.src)
    _put_str(out, msg.dst)
    _put_body(out, msg)
    return bytes(out)


def decode_message(data: bytes) -> Message:
    r = _Reader(data)
    src, dst = r.str(), r.str()
    msg = _read_body(r, src, dst)
    if not r.done():
        raise CodecError("trailing bytes after message")
    return msg


# ---- frames -------------------------------------------------------------------------------


def _frame(kind: FrameType, body: bytearray) -> bytes:
    if len(body) + 1 > FRAME_BYTES_MAX:
        raise CodecError("frame too large")
    return _LEN.pack(len(body) + 1) + bytes([kind]) + bytes(body)


def encode_hello(hello: Hello) -> bytes:
    body = bytearray()
    _put_uvarint(body, hello.version)
    _put_str(body, hello.node_id)
    return _frame(FrameType.HELLO, body)


def encode_batch(src: str, dst: str, messages: Iterable[Message]) -> bytes:
    """One BATCH frame; every message must go from `src` to `dst`."""
    body = bytearray()
    _put_str(body, src)
    _put_str(body, dst)
    msgs = list(messages)
    _put_uvarint(body, len(msgs))
    for msg in msgs:
        if msg.src != src or msg.dst != dst:
            raise ValueError("batch messages must share src and dst")
        _put_body(body, msg)
    return _frame(FrameType.BATCH, body)


def decode_frame(payload: bytes | memoryview) -> Hello | Batch:
    """Decode one frame's payload (after the length prefix)."""
    r = _Reader(payload)
    kind = r.byte()
    if kind == FrameType.HELLO:
        result: Hello | Batch = Hello(version=r.uvarint(), node_id=r.str())
    elif kind == FrameType.BATCH:
        src, dst = r.str(), r.str()
        count = r.uvarint()
        if count > len(r.data):
            raise CodecError("message count beyond buffer")
        result = Batch(src, dst, tuple(_read_body(r, src, dst) for _ in range(count)))
    else:
        raise CodecError(f"unknown frame type {kind}")
    if not r.done():
        raise CodecError("trailing bytes in frame")
    return result


class FrameBuffer:
    """Sans-IO frame splitter: feed bytes, take out whole frame payloads."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buf = bytearray()
        self.frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> None:
        self._buf += data

    def frames(self) -> Iterator[bytes]:
        while len(self._buf) >= 4:
            (length,) = _LEN.unpack_from(self._buf)
            if length == 0 or length > self.frame_bytes_max:
                raise CodecError(f"bad frame length {length}")
            if len(self._buf) < 4 + length:
                return
            payload = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            yield payload

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

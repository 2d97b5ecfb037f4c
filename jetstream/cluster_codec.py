# pure-core
"""Binary encoding of a batch of stream commands: the data of one Raft entry of a stream group.

How it works: the stream leader packs every publish queued while the previous entry was being
committed into ONE entry (one Raft append, one fsync on each replica), so an entry holds a
batch: `b"JB1" | count:u32 | command*`. A command is `kind:u8 | body`. Publish, by far the most
common, is packed with struct (ts_ns, then length-prefixed subject, headers, payload, reply,
msg_id; a length of 0xFFFFFFFF means None). The rare commands are JSON. SaveConsumer and
DeleteConsumer carry a durable consumer's state blob through the stream's log, so consumer
progress survives a failover.

`sub_index(entry_index, k)` numbers the k-th command of an entry for the stream state machine
(it skips anything at or below the store's applied index), so a replica that restarts in the
middle of nothing (a batch is applied in one store transaction) replays exactly what it lacks.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

from jetstream.config import StreamConfig
from jetstream.stream import Command, DeleteMsg, Expire, Publish, PurgeCmd, RemoveAcked, UpdateConfig

MAGIC = b"JB1"
SUB_BITS = 20  # at most 2**20 commands per entry
BATCH_MAX = 1 << SUB_BITS
_NONE = 0xFFFFFFFF
_U32 = struct.Struct(">I")
_PUB_HEAD = struct.Struct(">q")
_PUB_START = struct.Struct(">BqI")  # kind, ts_ns, subject length
_NONE_BYTES = _U32.pack(_NONE)


@attrs.frozen
class SaveConsumer:
    name: str
    blob: bytes


@attrs.frozen
class DeleteConsumer:
    name: str


ClusterCommand = Command | SaveConsumer | DeleteConsumer

_PUBLISH, _PURGE, _DELETE_MSG, _UPDATE, _EXPIRE, _REMOVE_ACKED, _SAVE_CONSUMER, _DELETE_CONSUMER = range(8)


class CodecError(ValueError):
    pass


def sub_index(entry_index: int, k: int) -> int:
    assert 0 <= k < BATCH_MAX
    return (entry_index << SUB_BITS) | k


def entry_of(sub: int) -> int:
    """The Raft index whose whole batch is applied when the store's applied index is `sub`."""
    return sub >> SUB_BITS


def encode_batch(cmds: list[ClusterCommand]) -> bytes:
    assert 0 < len(cmds) <= BATCH_MAX
    parts = [MAGIC, _U32.pack(len(cmds))]
    append, extend = parts.append, parts.extend
    for cmd in cmds:
        if type(cmd) is Publish:  # the hot path, inlined: same bytes as `_encode_one`
            subject = cmd.subject.encode()
            extend((_PUB_START.pack(_PUBLISH, cmd.ts_ns, len(subject)), subject))
            headers, payload, reply, msg_id = cmd.headers, cmd.payload, cmd.reply, cmd.msg_id
            if headers is None:
                append(_NONE_BYTES)
            else:
                extend((_U32.pack(len(headers)), headers))
            extend((_U32.pack(len(payload)), payload))
            if reply is None:
                append(_NONE_BYTES)
            else:
                raw = reply.encode()
                extend((_U32.pack(len(raw)), raw))
            if msg_id is None:
                append(_NONE_BYTES)
            else:
                raw = msg_id.encode()
                extend((_U32.pack(len(raw)), raw))
        else:
            append(_encode_one(cmd))
    return b"".join(parts)


def decode_batch(data: bytes) -> list[ClusterCommand]:
    if data[:3] != MAGIC or len(data) < 7:
        raise CodecError("not a stream command batch")
    data = bytes(data)
    (count,) = _U32.unpack_from(data, 3)
    try:
        out, pos = _decode_all(data, count)
    except (struct.error, IndexError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"bad stream command: {exc!r}") from None
    if pos != len(data):  # also catches a last field that ran past the end (slices do not raise)
        raise CodecError("trailing bytes after the batch" if pos < len(data) else "truncated batch")
    return out


def _decode_all(data: bytes, count: int) -> tuple[list[ClusterCommand], int]:
    """The commands and the end position. Publish, the hot path, is inlined (same format as
    `_decode_one`); a field slice past the end leaves `pos` beyond `len(data)`, which the
    caller refuses, and every later read raises struct.error."""
    out: list[ClusterCommand] = []
    append = out.append
    start, u32 = _PUB_START.unpack_from, _U32.unpack_from
    pos = 7
    for _ in range(count):
        if data[pos] != _PUBLISH:
            cmd, pos = _decode_one(memoryview(data), pos)
            append(cmd)
            continue
        _, ts_ns, n = start(data, pos)
        pos += _PUB_START.size
        if n == _NONE:
            raise TypeError("publish without subject")
        subject = data[pos:pos + n].decode()
        pos += n
        (n,) = u32(data, pos)  # headers
        if n == _NONE:
            headers, pos = None, pos + 4
        else:
            headers, pos = data[pos + 4:pos + 4 + n], pos + 4 + n
        (n,) = u32(data, pos)  # payload
        if n == _NONE:
            raise TypeError("publish without payload")
        payload, pos = data[pos + 4:pos + 4 + n], pos + 4 + n
        (n,) = u32(data, pos)  # reply
        if n == _NONE:
            reply, pos = None, pos + 4
        else:
            reply, pos = data[pos + 4:pos + 4 + n].decode(), pos + 4 + n
        (n,) = u32(data, pos)  # msg_id
        if n == _NONE:
            msg_id, pos = None, pos + 4
        else:
            msg_id, pos = data[pos + 4:pos + 4 + n].decode(), pos + 4 + n
        append(Publish(subject, payload, ts_ns, headers, reply, msg_id))
        if pos > len(data):
            raise IndexError("field runs past the end")
    return out, pos


def _field(value: bytes | None) -> bytes:
    if value is None:
        return _U32.pack(_NONE)
    return _U32.pack(len(value)) + value


def _opt(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _encode_one(cmd: ClusterCommand) -> bytes:
    if isinstance(cmd, Publish):
        return b"".join((bytes([_PUBLISH]), _PUB_HEAD.pack(cmd.ts_ns), _field(cmd.subject.encode()),
                         _field(cmd.headers), _field(cmd.payload), _field(_opt(cmd.reply)),
                         _field(_opt(cmd.msg_id))))
    kind, body = _json_body(cmd)
    return bytes([kind]) + _field(json.dumps(body, separators=(",", ":")).encode())


def _json_body(cmd: ClusterCommand) -> tuple[int, dict[str, Any]]:
    if isinstance(cmd, PurgeCmd):
        return _PURGE, {"filter": cmd.filter, "seq": cmd.seq, "keep": cmd.keep}
    if isinstance(cmd, DeleteMsg):
        return _DELETE_MSG, {"seq": cmd.seq, "no_erase": cmd.no_erase}
    if isinstance(cmd, UpdateConfig):
        return _UPDATE, {"config": cmd.config.to_json()}
    if isinstance(cmd, Expire):
        return _EXPIRE, {"now_ns": cmd.now_ns}
    if isinstance(cmd, RemoveAcked):
        return _REMOVE_ACKED, {"seqs": list(cmd.seqs)}
    if isinstance(cmd, SaveConsumer):
        return _SAVE_CONSUMER, {"name": cmd.name, "blob": cmd.blob.decode("latin-1")}
    if isinstance(cmd, DeleteConsumer):
        return _DELETE_CONSUMER, {"name": cmd.name}
    raise TypeError(f"cannot encode {cmd!r}")


def _read(view: memoryview, pos: int) -> tuple[bytes | None, int]:
    (n,) = _U32.unpack_from(view, pos)
    pos += 4
    if n == _NONE:
        return None, pos
    if pos + n > len(view):
        raise IndexError("field runs past the end")
    return bytes(view[pos:pos + n]), pos + n


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _decode_one(view: memoryview, pos: int) -> tuple[ClusterCommand, int]:
    kind = view[pos]
    pos += 1
    if kind == _PUBLISH:
        (ts_ns,) = _PUB_HEAD.unpack_from(view, pos)
        pos += 8
        subject, pos = _read(view, pos)
        headers, pos = _read(view, pos)
        payload, pos = _read(view, pos)
        reply, pos = _read(view, pos)
        msg_id, pos = _read(view, pos)
        if subject is None or payload is None:
            raise TypeError("publish without subject or payload")
        return Publish(subject.decode(), payload, ts_ns, headers, _text(reply), _text(msg_id)), pos
    raw, pos = _read(view, pos)
    if raw is None:
        raise TypeError("missing command body")
    return _from_json(kind, json.loads(raw)), pos


def _from_json(kind: int, d: dict[str, Any]) -> ClusterCommand:
    if kind == _PURGE:
        return PurgeCmd(d["filter"], d["seq"], d["keep"])
    if kind == _DELETE_MSG:
        return DeleteMsg(int(d["seq"]), bool(d["no_erase"]))
    if kind == _UPDATE:
        return UpdateConfig(StreamConfig.from_json(d["config"]))
    if kind == _EXPIRE:
        return Expire(int(d["now_ns"]))
    if kind == _REMOVE_ACKED:
        return RemoveAcked(tuple(int(s) for s in d["seqs"]))
    if kind == _SAVE_CONSUMER:
        return SaveConsumer(str(d["name"]), d["blob"].encode("latin-1"))
    if kind == _DELETE_CONSUMER:
        return DeleteConsumer(str(d["name"]))
    raise KeyError(f"unknown command kind {kind}")

# pure-core
"""Sans-IO parser and encoder for the cluster route protocol, plus the pure route decisions.

How it works: `RouteParser.feed(data)` takes whatever bytes arrived on a route connection and
returns the complete operations found so far; an unfinished frame stays buffered and is finished
on a later `feed` (so a frame may be split anywhere). Route operations are:

    RS+ <acc> <subject> [<queue> <weight>]     -> RouteSub
    RS- <acc> <subject> [<queue>]              -> RouteUnsub
    RMSG <acc> <subject> [<reply>] <size>      -> RouteMsg (queues ())
    RMSG <acc> <subject> + <reply> <q..> <size> / RMSG <acc> <subject> | <q..> <size>
    HMSG (any RMSG form) ... <hdr size> <total size>
    LS+/LS-/LMSG (leafnode-origin forms: the origin cluster token is dropped)

plus CONNECT, INFO, PING, PONG, +OK and -ERR, which reuse the client protocol's values
(`natsd.protocol.Connect` etc.). A broken stream yields `ProtocolError` and nothing after it.
Route traffic is far smaller than client traffic in our deployments (one frame per routed
message per peer), so this parser favours being obviously right over the client parser's
run-batching tricks; it still never rescans bytes while waiting for a newline.

The module also holds the small pure decisions of the route manager (cluster.py): whether a
peer's INFO/CONNECT may form a route, which of two connections to the same peer to keep (both
ends compute the same answer), and the weighted choice of a queue-group member across local
and remote interest. Randomness is passed in.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import attrs

from natsd.protocol import OK, PING, PONG, Connect, Err, Info, ProtocolError

GLOBAL_ACCOUNT = "$G"
ROUTE_CONTROL_LINE_MAX = 16 * 4096  # routes get 16x the client control line limit
ROUTE_PAYLOAD_MAX = 64 * 1024 * 1024
ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_MAX_CONTROL_LINE = "maximum control line exceeded"
ERR_ROUTE_PORT = "attempted to connect to route port"


@attrs.frozen
class RouteSub:
    account: str
    subject: str
    queue: str | None = None
    weight: int = 0


@attrs.frozen
class RouteUnsub:
    account: str
    subject: str
    queue: str | None = None


@attrs.frozen
class RouteMsg:
    account: str
    subject: str
    reply: str | None
    queues: tuple[str, ...]
    headers: bytes | None
    payload: bytes


class _Bad(Exception):
    def __init__(self, message: str | None) -> None:
        super().__init__(message)
        self.message = message


def _s(token: bytes) -> str:
    return token.decode("utf-8", "surrogateescape")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _size(token: bytes) -> int:
    if not token.isdigit() or not token.isascii():
        raise _Bad(None)
    return int(token)


def _args(rest: bytes) -> list[bytes]:
    return rest.replace(b"\t", b" ").split()


class RouteParser:
    """Incremental parser for bytes received on a route connection."""

    def __init__(self, *, max_control_line: int = ROUTE_CONTROL_LINE_MAX,
                 max_payload: int = ROUTE_PAYLOAD_MAX) -> None:
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self.closed = False
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._frame: tuple | None = None  # (header fields, hsize, size) awaiting its payload

    def feed(self, data: bytes) -> list:
        if self.closed or not data:
            return []
        self._buf += data
        ops: list = []
        pos = self._parse(ops)
        if pos:
            del self._buf[:pos]
            self._scanned = max(0, self._scanned - pos)
        if self.closed:
            self._buf = bytearray()
        return ops

    def _parse(self, ops: list) -> int:
        buf = self._buf
        pos = 0
        while not self.closed:
            if self._frame is not None:
                end = self._payload(pos, ops)
                if end < 0:
                    return pos
                pos = end
                continue
            nl = buf.find(b"\n", max(pos, self._scanned))
            if nl < 0:
                self._scanned = len(buf)
                if len(buf) - pos > self.max_control_line + 2:
                    self._fail(ops, ERR_MAX_CONTROL_LINE)
                return pos
            line = bytes(buf[pos:nl])
            pos = nl + 1
            self._scanned = pos
            if len(line) > self.max_control_line + 1:
                self._fail(ops, ERR_MAX_CONTROL_LINE)
                return pos
            if line.endswith(b"\r"):
                line = line[:-1]
            try:
                op = self._line(line)
            except _Bad as bad:
                self._fail(ops, bad.message)
                return pos
            if op is not None:
                ops.append(op)
        return pos

    def _payload(self, pos: int, ops: list) -> int:
        """Finish the pending message if its payload and CRLF are here; -1 if not yet."""
        assert self._frame is not None
        (account, subject, reply, queues), hsize, size = self._frame
        end = pos + size
        buf = self._buf
        if len(buf) < end + 2:
            self._scanned = len(buf)
            return -1
        if buf[end : end + 2] != b"\r\n":
            self._fail(ops, ERR_UNKNOWN_OP)
            return end
        body = bytes(buf[pos:end])
        headers = body[:hsize] if hsize >= 0 else None
        payload = body[hsize:] if hsize >= 0 else body
        ops.append(RouteMsg(account, subject, reply, queues, headers, payload))
        self._frame = None
        return end + 2

    def _fail(self, ops: list, message: str | None) -> None:
        self.closed = True
        self._frame = None
        ops.append(ProtocolError(message, True))

    def _line(self, line: bytes) -> Any:
        head = line[:4].upper()
        if head == b"PING":
            return PING
        if head == b"PONG":
            return PONG
        if head[:3] == b"+OK":
            return OK
        op, rest = _split_op(line)
        handler = _HANDLERS.get(op)
        if handler is None:
            raise _Bad(ERR_UNKNOWN_OP)
        return handler(self, rest)

    def _connect(self, rest: bytes) -> Connect:
        return Connect(_json_object(rest))

    def _info(self, rest: bytes) -> Info:
        return Info(_json_object(rest))

    def _err(self, rest: bytes) -> Err:
        text = _s(rest.strip(b" \t"))
        if len(text) >= 2 and text[0] == text[-1] == "'":
            text = text[1:-1]
        return Err(text)

    def _rs_plus(self, rest: bytes, leaf: bool = False) -> RouteSub:
        args = _args(rest)[1:] if leaf else _args(rest)
        if len(args) == 2:
            return RouteSub(_s(args[0]), _s(args[1]))
        if len(args) in (3, 4):
            weight = _size(args[3]) if len(args) == 4 else 1
            return RouteSub(_s(args[0]), _s(args[1]), _s(args[2]), weight)
        raise _Bad(None)

    def _rs_minus(self, rest: bytes, leaf: bool = False) -> RouteUnsub:
        args = _args(rest)[1:] if leaf else _args(rest)
        if len(args) == 2:
            return RouteUnsub(_s(args[0]), _s(args[1]))
        if len(args) == 3:
            return RouteUnsub(_s(args[0]), _s(args[1]), _s(args[2]))
        raise _Bad(None)

    def _rmsg(self, rest: bytes, headers: bool = False, leaf: bool = False) -> None:
        args = _args(rest)[1:] if leaf else _args(rest)
        nsizes = 2 if headers else 1
        if len(args) < 2 + nsizes:
            raise _Bad(None)
        account, subject = _s(args[0]), _s(args[1])
        middle, sizes = args[2:-nsizes], args[-nsizes:]
        reply, queues = _reply_and_queues(middle)
        size = _size(sizes[-1])
        hsize = _size(sizes[0]) if headers else -1
        if size > self.max_payload or hsize > size:
            raise _Bad(None)
        self._frame = ((account, subject, reply, queues), hsize, size)
        return None

    def _hmsg(self, rest: bytes) -> None:
        return self._rmsg(rest, headers=True)

    def _lmsg(self, rest: bytes) -> None:
        # LMSG carries headers sizes only when the frame has them; nats-server always sends
        # LMSG as the header form is negotiated separately. Treat the two-size form as HMSG.
        args = _args(rest)
        two_sizes = len(args) >= 5 and args[-2].isdigit() and args[-1].isdigit()
        return self._rmsg(rest, headers=two_sizes, leaf=True)

    def _ls_plus(self, rest: bytes) -> RouteSub:
        return self._rs_plus(rest, leaf=True)

    def _ls_minus(self, rest: bytes) -> RouteUnsub:
        return self._rs_minus(rest, leaf=True)


def _reply_and_queues(middle: list[bytes]) -> tuple[str | None, tuple[str, ...]]:
    """The tokens between subject and sizes: `[]`, `[reply]`, `+ reply q..`, `| q..`."""
    if not middle:
        return None, ()
    if middle[0] == b"+":
        if len(middle) < 3:
            raise _Bad(None)
        return _s(middle[1]), tuple(_s(q) for q in middle[2:])
    if middle[0] == b"|":
        if len(middle) < 2:
            raise _Bad(None)
        return None, tuple(_s(q) for q in middle[1:])
    if len(middle) == 1:
        return _s(middle[0]), ()
    raise _Bad(None)


def _split_op(line: bytes) -> tuple[bytes, bytes]:
    for i, byte in enumerate(line):
        if byte == 32 or byte == 9:
            return line[:i].upper(), line[i + 1 :]
    return line.upper(), b""


def _json_object(rest: bytes) -> dict:
    try:
        value = json.loads(rest)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _Bad(None) from None
    if not isinstance(value, dict):
        raise _Bad(None)
    return value


_HANDLERS = {
    b"CONNECT": RouteParser._connect,
    b"INFO": RouteParser._info,
    b"-ERR": RouteParser._err,
    b"RS+": RouteParser._rs_plus,
    b"RS-": RouteParser._rs_minus,
    b"LS+": RouteParser._ls_plus,
    b"LS-": RouteParser._ls_minus,
    b"RMSG": RouteParser._rmsg,
    b"HMSG": RouteParser._hmsg,
    b"LMSG": RouteParser._lmsg,
}


# -- encoder ----------------------------------------------------------------------------------


def encode_rs_plus(account: str, subject: str, queue: str | None = None, weight: int = 1) -> bytes:
    if queue is None:
        return b"RS+ " + _b(account) + b" " + _b(subject) + b"\r\n"
    return b"RS+ %s %s %s %d\r\n" % (_b(account), _b(subject), _b(queue), weight)


def encode_rs_minus(account: str, subject: str, queue: str | None = None) -> bytes:
    q = b" " + _b(queue) if queue is not None else b""
    return b"RS- " + _b(account) + b" " + _b(subject) + q + b"\r\n"


def rmsg_head(account: str, subject: str, reply: str | None, queues: Sequence[str],
              headers: bool) -> bytes:
    """`RMSG <acc> <subj> [reply|+ reply q..|| q..]` (or HMSG), without sizes."""
    head = (b"HMSG " if headers else b"RMSG ") + _b(account) + b" " + _b(subject)
    if queues:
        marker = b" + " + _b(reply) if reply else b" |"
        return head + marker + b" " + b" ".join(_b(q) for q in queues)
    if reply:
        return head + b" " + _b(reply)
    return head


def encode_rmsg(account: str, subject: str, reply: str | None, queues: Sequence[str],
                headers: bytes | None, payload: bytes) -> bytes:
    head = rmsg_head(account, subject, reply, queues, headers is not None)
    if headers is None:
        return head + b" %d\r\n" % len(payload) + payload + b"\r\n"
    sizes = b" %d %d\r\n" % (len(headers), len(headers) + len(payload))
    return head + sizes + headers + payload + b"\r\n"


def encode_route_msg(op: RouteMsg) -> bytes:
    return encode_rmsg(op.account, op.subject, op.reply, op.queues, op.headers, op.payload)


def msg_tail(reply: str | None, headers: bytes | None, payload: bytes) -> bytes:
    """End of a client MSG/HMSG control line for a routed message: ` [reply] <sizes>\\r\\n`."""
    rep = b" " + _b(reply) if reply else b""
    if headers is None:
        return rep + b" %d\r\n" % len(payload)
    return rep + b" %d %d\r\n" % (len(headers), len(headers) + len(payload))


# -- pure route decisions -----------------------------------------------------------------------


class Rejection(enum.Enum):
    SELF = "route to self"
    CLUSTER_NAME = "cluster name mismatch"
    CLIENT_ON_ROUTE_PORT = ERR_ROUTE_PORT
    NO_SERVER_ID = "route info without server_id"


def check_connect(options: dict, local_cluster: str, local_dynamic: bool) -> Rejection | None:
    """May this CONNECT (first frame on an accepted route connection) proceed? Clients send
    `lang`, routes never do (how nats-server spots a client on the route port)."""
    if options.get("lang"):
        return Rejection.CLIENT_ON_ROUTE_PORT
    remote = str(options.get("cluster", ""))
    remote_dynamic = bool(options.get("cluster_dynamic", options.get("dynamic", False)))
    if remote and remote != local_cluster and not (local_dynamic or remote_dynamic):
        return Rejection.CLUSTER_NAME
    return None


def check_info(info: dict, local_id: str, local_cluster: str,
               local_dynamic: bool) -> Rejection | None:
    """May the peer described by this (first) route INFO become a route?"""
    peer = info.get("server_id")
    if not isinstance(peer, str) or not peer:
        return Rejection.NO_SERVER_ID
    if peer == local_id:
        return Rejection.SELF
    remote = str(info.get("cluster", ""))
    if remote and remote != local_cluster and not (local_dynamic or info.get("cluster_dynamic")):
        return Rejection.CLUSTER_NAME
    return None


def keep_new_connection(local_id: str, peer_id: str, existing_solicited: bool,
                        new_solicited: bool) -> bool:
    """Two connections to one peer: keep the one dialled by the smaller server_id. Both ends
    evaluate the same rule, so they keep the same connection. Same dialler: keep the old one."""
    if existing_solicited == new_solicited:
        return False
    dialler_of_new = local_id if new_solicited else peer_id
    return dialler_of_new == min(local_id, peer_id)


def pick_weighted(local_weight: int, remote: Sequence[tuple[Any, int]], draw: float) -> Any:
    """Choose where one queue-group message goes: None for a local member, else the key of a
    remote entry. Weights are member counts; `draw` is uniform in [0, 1)."""
    total = local_weight + sum(max(w, 1) for _, w in remote)
    assert total > 0, "pick_weighted needs at least one member"
    point = draw * total
    if point < local_weight:
        return None
    point -= local_weight
    for key, weight in remote:
        point -= max(weight, 1)
        if point < 0:
            return key
    return remote[-1][0]


def route_url(host: str, port: int) -> str:
    return f"nats-route://{host}:{port}/"


def parse_route_url(url: str) -> tuple[str, int]:
    """`nats-route://host:port/`, `nats://user:pw@host:port`, `host:port` -> (host, port)."""
    text = url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    text = text.rsplit("@", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a route URL: {url!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


__all__ = [
    "ERR_ROUTE_PORT", "GLOBAL_ACCOUNT", "Rejection", "RouteMsg", "RouteParser", "RouteSub",
    "RouteUnsub", "check_connect", "check_info", "encode_rmsg", "encode_route_msg",
    "encode_rs_minus", "encode_rs_plus", "keep_new_connection", "msg_tail", "parse_route_url",
    "pick_weighted", "rmsg_head", "route_url",
]

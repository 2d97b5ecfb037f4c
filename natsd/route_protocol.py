# pure-core
"""Sans-IO parser and encoder for the cluster route protocol, plus the pure route decisions.

How it works: `RouteParser.feed(data)` takes whatever bytes arrived on a route connection and
returns the complete operations found so far; an unfinished frame stays buffered and is finished
on a later `feed` (so a frame may be split anywhere). Route operations are:

    RS+ <acc> <subject> [<queue> <weight>]     -> RouteSub
    RS- <acc> <subject> [<queue>]              -> RouteUnsub
    RMSG <acc> <subject> [<reply>] <size>      -> message tuple (queues ())
    RMSG <acc> <subject> + <reply> <q..> <size> / RMSG <acc> <subject> | <q..> <size>
    HMSG (any RMSG form) ... <hdr size> <total size>
    LS+/LS-/LMSG (leafnode-origin forms: the origin cluster token is dropped)

plus CONNECT, INFO, PING, PONG, +OK and -ERR, which reuse the client protocol's values
(`natsd.protocol.Connect` etc.). A broken stream yields `ProtocolError` and nothing after it.

Messages are the hot path (every routed message), so, as in the client parser, a message is a
plain tuple, not an object:

    (account, subject, reply, queues, headers | None, payloads: list[bytes], tail)

One tuple carries a run of consecutive header-less frames with the very same control line, so
the receiver matches the subject once and fans out with one call; `tail` is the end of the
client MSG/HMSG line (` [reply] <sizes>\r\n`). Control lines are cached by their exact bytes.
`flatten_route(ops)` turns message tuples into one `RouteMsg` value per message (tests compare
those). Unparsed bytes are kept as a list of chunks and joined only once the frame they wait
for is complete, so a large payload arriving in many reads is not copied over and over.
One-off lines (an `_INBOX.` reply or subject: forwarded JetStream publishes and their PubAcks)
never repeat, so they skip the cache; a read's consecutive run of them is parsed in one tight
loop (`_one_off_run`), each tail cut from the line, and anything unusual is left to the
general path.

The module also holds the small pure decisions of the route manager (cluster.py): whether a
peer's INFO/CONNECT may form a route, which of two connections to the same peer to keep (both
ends compute the same answer), and the weighted choice of a queue-group member across local
and remote interest. Randomness is passed in.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Sequence
from typing import Any

import attrs

from natsd.protocol import OK, PING, PONG, Connect, Err, Info, ProtocolError
from natsd.protocol import _Bad, _json_object, _split_op
from natsd.protocol import _decode as _s

GLOBAL_ACCOUNT = "$G"
ROUTE_CONTROL_LINE_MAX = 16 * 4096  # routes get 16x the client control line limit
ROUTE_PAYLOAD_MAX = 64 * 1024 * 1024
ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_MAX_CONTROL_LINE = "maximum control line exceeded"
ERR_ROUTE_PORT = "attempted to connect to route port"
_LINE_CACHE_MAX = 4096
# a one-off frame's line: single spaces, no queues, a canonical size (the general path's tail)
_ONE_OFF_FRAME = re.compile(rb"RMSG (\S+) (\S+) (?:(\S+) )?(0|[1-9][0-9]{0,9})\r\n")


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
        self._chunks: list[bytes] = []  # unparsed bytes, joined only once enough arrived
        self._have = 0
        self._need = 0  # bytes needed from the start of the unparsed data (0: a newline)
        self._cache: dict[bytes, tuple] = {}

    def feed(self, data: bytes) -> list:
        if self.closed or not data:
            return []
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._need:
                if self._have < self._need:
                    return []
            elif b"\n" not in data:
                if self._have > self.max_control_line + 2:
                    return self._fail([], ERR_MAX_CONTROL_LINE)
                return []
            buf = b"".join(self._chunks)
            self._chunks, self._have = [], 0
        else:
            buf = bytes(data)
        ops: list = []
        self._need = 0
        pos = self._parse(buf, ops)
        if pos < len(buf) and not self.closed:
            rest = buf[pos:]
            self._chunks, self._have = [rest], len(rest)
            if not self._need and len(rest) > self.max_control_line + 2:
                self._fail(ops, ERR_MAX_CONTROL_LINE)
        return ops

    def _parse(self, buf: bytes, ops: list) -> int:
        """Parse complete frames of `buf` into `ops`; return where the unparsed rest starts."""
        pos, n, cache = 0, len(buf), self._cache
        while pos < n:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                return pos
            line = buf[pos:nl]
            meta = cache.get(line)
            if meta is None and b"_INBOX." in line:  # one-off (a PubAck or its request)
                after = self._one_off_run(buf, pos, ops)
                if after != pos:
                    pos = after
                    continue
                meta = self._one_off_rmsg(line)
                if meta is None:
                    meta = self._control_line(line, ops)
                    if self.closed:
                        return n
                    if type(meta) is not tuple:
                        if meta is not None:
                            ops.append(meta)
                        pos = nl + 1
                        continue
            elif meta is None:
                meta = self._control_line(line, ops)
                if self.closed:
                    return n
                if type(meta) is not tuple:
                    if meta is not None:
                        ops.append(meta)
                    pos = nl + 1
                    continue
                if len(cache) >= _LINE_CACHE_MAX:
                    cache.clear()
                cache[line] = meta
            start = nl + 1
            end = start + meta[5]
            if end + 2 > n:
                self._need = end + 2 - pos
                return pos
            if buf[end] != 13 or buf[end + 1] != 10:
                self._fail(ops, ERR_UNKNOWN_OP)
                return n
            pos = self._message(buf, pos, start, end, meta, ops)
        return pos

    def _message(self, buf: bytes, pos: int, start: int, end: int, meta: tuple,
                 ops: list) -> int:
        """Append one message op; a header-less frame takes every directly following complete
        frame with the very same control line along (a run: one op, many payloads)."""
        account, subject, reply, queues, hsize, size, tail = meta
        if hsize >= 0:
            mid = start + hsize
            ops.append((account, subject, reply, queues, buf[start:mid], [buf[mid:end]], tail))
            return end + 2
        head = buf[pos:start]
        payloads = [buf[start:end]]
        pos = end + 2
        step = len(head)
        n = len(buf)
        while buf.startswith(head, pos):
            first = pos + step
            last = first + size
            if last + 2 > n or buf[last] != 13 or buf[last + 1] != 10:
                break  # incomplete or broken: the main loop deals with it
            payloads.append(buf[first:last])
            pos = last + 2
        ops.append((account, subject, reply, queues, None, payloads, tail))
        return pos

    def _one_off_run(self, buf: bytes, pos: int, ops: list) -> int:
        """Consecutive complete one-off frames `RMSG <account> <subject> [reply] <size>`
        (single-spaced, CRLF-terminated, an `_INBOX.` subject or reply, no queues: forwarded
        publishes of JetStream requests and their PubAcks) in one tight loop: one regex match
        per frame, the ops the general path gives (one per frame: one-off lines do not repeat),
        with the client tail cut from the line. Returns where it stopped; the general loop
        takes the frame it could not (incomplete, another form, anything it would reject), so
        errors stay the general path's."""
        n = len(buf)
        match = _ONE_OFF_FRAME.match
        append = ops.append
        line_max = self.max_control_line + 2  # the line with its CRLF, as the general check
        payload_max = self.max_payload
        acc_b = subj_b = None
        account = subject = ""
        while pos < n:
            m = match(buf, pos)
            if m is None:
                return pos
            acc, subj, reply_b, size_b = m.groups()
            if reply_b is None:
                if not subj.startswith(b"_INBOX."):
                    return pos
            elif reply_b == b"+" or reply_b == b"|" or not (
                    reply_b.startswith(b"_INBOX.") or subj.startswith(b"_INBOX.")):
                return pos
            start = m.end()
            size = int(size_b)
            end = start + size
            if (start - pos > line_max or size > payload_max or end + 2 > n or buf[end] != 13
                    or buf[end + 1] != 10):
                return pos
            if acc != acc_b:
                acc_b = acc
                account = _s(acc)
            if subj != subj_b:
                subj_b = subj
                subject = _s(subj)
            append((account, subject, None if reply_b is None else _s(reply_b), (), None,
                    [buf[start:end]], buf[m.end(2):start]))
            pos = end + 2
        return pos

    def _one_off_rmsg(self, line: bytes) -> tuple | None:
        """`RMSG <account> <subject> [reply] <size>`, single-spaced, no queues: the meta tuple
        `_rmsg` would give, without the generic split; None for anything else (the general
        path decides, errors included). Not cached: the line will not repeat."""
        if not line.startswith(b"RMSG ") or len(line) > self.max_control_line + 1:
            return None
        if line.endswith(b"\r"):
            line = line[:-1]
        parts = line.split(b" ")
        if line.split() != parts:  # other whitespace, runs of spaces: the general path
            return None
        if len(parts) == 5:
            reply_b = parts[3]
            if reply_b == b"+" or reply_b == b"|":
                return None
            reply = _s(reply_b)
        elif len(parts) == 4:
            reply = None
        else:
            return None
        size_b = parts[-1]
        if not size_b.isdigit() or not size_b.isascii():
            return None
        size = int(size_b)
        if size > self.max_payload:
            return None
        return (_s(parts[1]), _s(parts[2]), reply, (), -1, size, msg_tail_sizes(reply, -1, size))

    def _control_line(self, line: bytes, ops: list) -> Any:
        if len(line) > self.max_control_line + 1:
            self._fail(ops, ERR_MAX_CONTROL_LINE)
            return None
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            return self._line(line)
        except _Bad as bad:
            self._fail(ops, bad.message)
            return None

    def _fail(self, ops: list, message: str | None) -> list:
        self.closed = True
        self._chunks, self._have = [], 0
        ops.append(ProtocolError(message, True))
        return ops

    def _line(self, line: bytes) -> Any:
        head = line[:4].upper()
        if head == b"PING":
            return PING
        if head == b"PONG":
            return PONG
        if head[:3] == b"+OK":
            return OK
        op, _, rest = _split_op(line)
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

    def _rmsg(self, rest: bytes, headers: bool = False, leaf: bool = False) -> tuple:
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
        tail = msg_tail_sizes(reply, hsize, size)
        return (account, subject, reply, queues, hsize, size, tail)

    def _hmsg(self, rest: bytes) -> tuple:
        return self._rmsg(rest, headers=True)

    def _lmsg(self, rest: bytes) -> tuple:
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
    if headers is None and not reply and not queues:  # the usual PubAck: one formatting step
        return b"RMSG %s %s %d\r\n%s\r\n" % (_b(account), _b(subject), len(payload), payload)
    head = rmsg_head(account, subject, reply, queues, headers is not None)
    if headers is None:
        return head + b" %d\r\n" % len(payload) + payload + b"\r\n"
    sizes = b" %d %d\r\n" % (len(headers), len(headers) + len(payload))
    return head + sizes + headers + payload + b"\r\n"


def encode_route_msg(op: RouteMsg) -> bytes:
    return encode_rmsg(op.account, op.subject, op.reply, op.queues, op.headers, op.payload)


def msg_tail_sizes(reply: str | None, hsize: int, size: int) -> bytes:
    """` [reply] <size>\\r\\n`, or ` [reply] <hsize> <size>\\r\\n` when hsize >= 0."""
    rep = b" " + _b(reply) if reply else b""
    if hsize < 0:
        return rep + b" %d\r\n" % size
    return rep + b" %d %d\r\n" % (hsize, size)


def flatten_route(ops: list) -> list:
    """Expand message ops (runs) into one `RouteMsg` per message; other ops unchanged."""
    out: list = []
    for op in ops:
        if type(op) is tuple:
            account, subject, reply, queues, headers, payloads, _ = op
            out.extend(RouteMsg(account, subject, reply, queues, headers, pl) for pl in payloads)
        else:
            out.append(op)
    return out


def msg_tail(reply: str | None, headers: bytes | None, payload: bytes) -> bytes:
    """End of a client MSG/HMSG control line for a routed message: ` [reply] <sizes>\\r\\n`."""
    rep = b" " + _b(reply) if reply else b""
    if headers is None:
        return rep + b" %d\r\n" % len(payload)
    return rep + b" %d %d\r\n" % (len(headers), len(headers) + len(payload))


# -- JetStream deliveries to a client behind a route -------------------------------------------
# A consumer on the stream leader delivering to a deliver subject (a pull request's inbox, a push
# consumer's subject) that only a client on another server is subscribed to sends an RMSG on
# the deliver subject (so the peer's interest routes it) with the reply `<ack reply>@<stream
# subject>`; the receiving server strips the suffix and shows its subscriber the stream subject
# with the bare ack reply, as a local delivery would. Only an ack reply of our exact shape,
# `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (names without dots,
# five numbers) is encoded, and a suffix is honoured only on such a reply arriving on a route,
# so the split is unambiguous even when names or subjects contain `@`.

JS_ACK_PREFIX = "$JS.ACK."
_ACK_TOKENS = 9


def _ack_numbers_ok(parts: list[str]) -> bool:
    return all(t.isdigit() and t.isascii() for t in parts[4:8])


def encode_deliver_reply(reply: str | None, subject: str) -> str | None:
    """`<reply>@<subject>` for a routed JetStream delivery, or None when `reply` is not an ack
    reply of our shape (the message then goes out unchanged, deliver subject shown)."""
    if not reply or not reply.startswith(JS_ACK_PREFIX) or not subject:
        return None
    parts = reply.split(".")
    if len(parts) != _ACK_TOKENS or not _ack_numbers_ok(parts):
        return None
    last = parts[8]
    if not (last.isdigit() and last.isascii()) or not parts[2] or not parts[3]:
        return None
    return f"{reply}@{subject}"


def split_deliver_reply(reply: str | None) -> tuple[str, str] | None:
    """(stream subject, bare ack reply) of a routed JetStream delivery's reply, or None when
    the reply carries no suffix (anything that `encode_deliver_reply` did not produce)."""
    if not reply or not reply.startswith(JS_ACK_PREFIX) or "@" not in reply:
        return None
    parts = reply.split(".", _ACK_TOKENS - 1)
    if len(parts) != _ACK_TOKENS or not parts[2] or not parts[3] or not _ack_numbers_ok(parts):
        return None
    last = parts[8]
    at = last.find("@")
    pending = last[:at]
    subject = last[at + 1:]
    if at <= 0 or not (pending.isdigit() and pending.isascii()) or not subject:
        return None
    return subject, reply[:len(reply) - len(last) + at]


# -- pure route decisions -----------------------------------------------------------------------


class Rejection(enum.Enum):
    SELF = "route to self"
    CLUSTER_NAME = "cluster name mismatch"
    CLIENT_ON_ROUTE_PORT = ERR_ROUTE_PORT
    NO_SERVER_ID = "route info without server_id"
    AUTHORIZATION = "Authorization Violation"


def check_connect(options: dict, local_cluster: str, local_dynamic: bool,
                  credentials: tuple[str, str] | None = None) -> Rejection | None:
    """May this CONNECT (first frame on an accepted route connection) proceed? Clients send
    `lang`, routes never do (how nats-server spots a client on the route port). With
    `credentials` (route authorization), the peer must present that user and password."""
    if options.get("lang"):
        return Rejection.CLIENT_ON_ROUTE_PORT
    if credentials is not None and not _same_credentials(options, credentials):
        return Rejection.AUTHORIZATION
    remote = str(options.get("cluster", ""))
    remote_dynamic = bool(options.get("cluster_dynamic", options.get("dynamic", False)))
    if remote and remote != local_cluster and not (local_dynamic or remote_dynamic):
        return Rejection.CLUSTER_NAME
    return None


def _same_credentials(options: dict, credentials: tuple[str, str]) -> bool:
    user, password = credentials
    got_user, got_pass = str(options.get("user", "")), str(options.get("pass", ""))
    return hmac.compare_digest(got_user.encode(), user.encode()) & hmac.compare_digest(
        got_pass.encode(), password.encode())


def route_credentials(url: str) -> tuple[str, str] | None:
    """`nats-route://user:pw@host:port` -> ("user", "pw"); None when the URL has none."""
    text = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" not in text:
        return None
    userinfo = text.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    return user, password


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
    "RouteUnsub", "check_connect", "check_info", "encode_deliver_reply", "encode_rmsg",
    "encode_route_msg", "encode_rs_minus", "encode_rs_plus", "flatten_route",
    "keep_new_connection", "msg_tail", "msg_tail_sizes", "parse_route_url", "pick_weighted", "rmsg_head", "route_credentials",
    "route_url", "split_deliver_reply",
]

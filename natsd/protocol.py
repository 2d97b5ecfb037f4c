# pure-core
"""Sans-IO parser and encoder for the NATS client protocol.

How it works: `Parser.feed(data)` takes whatever bytes arrived and returns the list of complete
operations found so far; a frame split across reads is kept and finished on a later `feed`. The
hot loop works on a whole received chunk with `bytes.find` and index arithmetic. Control lines of
PUB/HPUB (and MSG/HMSG on the client side) are cached by their exact bytes, so a stream of
publishes to the same subject costs one dict lookup and two slices per message; publishes to
varying subjects switch to splitting a window on CRLF (`_pub_stretch`), one lookup per frame.

Why it looks like this: pure Python must parse ~2M msgs/s, so the common operation is a plain
tuple, not an object:

    PUB/HPUB  -> (subject: str, reply: str | None, headers: bytes | None,
                  payloads: list[bytes] | PayloadRun, tail: bytes)

One PUB tuple carries the payloads of a run of consecutive publishes with the very same control
line (same subject, reply and size), so the shell routes once per run. A run of more than one
frame is a `PayloadRun` (ops.py): it is validated column-wise with strided slices and sliced
into payloads only if someone subscribed, then fanned out with one `bytes.join`. An HPUB tuple
always carries one payload. `flatten(ops)` expands runs into one
`(subject, reply, headers, payload)` per message (what tests compare). `tail` is the end of
the MSG/HMSG control line the server will write for this message (`b" [reply] <size>\r\n"` or
`b" [reply] <hdr> <total>\r\n"`), so fan-out only prepends `MSG <subject> <sid>`.

Every other operation is a frozen attrs value (Connect, Sub, Unsub, Ping, Pong, Ok, Err, Info,
Msg) and a broken stream yields `ProtocolError(message, close)`: `message` is the exact -ERR
text nats-server sends (None where it closes silently). After a closing error the parser
returns nothing more. No exception escapes `feed` for any input.

Operation values live in ops.py and the encoder in encoder.py; this module re-exports both, so
`from natsd import protocol as p` gives the whole protocol.
"""

from __future__ import annotations

import json

from natsd.encoder import (  # noqa: F401 - re-exported: one import for parser and encoder
    CRLF,
    OK_BYTES,
    PING_BYTES,
    PONG_BYTES,
    encode,
    encode_connect,
    encode_err,
    encode_hmsg,
    encode_hpub,
    encode_info,
    encode_msg,
    encode_pub,
    encode_sub,
    encode_unsub,
    flatten,
    no_responders_headers,
)
from natsd.ops import (  # noqa: F401 - re-exported
    ERR_MAX_CONTROL_LINE,
    ERR_MAX_PAYLOAD,
    ERR_UNKNOWN_OP,
    OK,
    PING,
    PONG,
    Connect,
    Err,
    Info,
    Msg,
    Ok,
    PayloadRun,
    Ping,
    Pong,
    ProtocolError,
    Sub,
    Unsub,
)

MAX_CONTROL_LINE = 4096
MAX_PAYLOAD = 1024 * 1024

_LINE_CACHE_MAX = 4096
_KIND_PUB = 0
_KIND_MSG = 1


class _Bad(Exception):
    """Internal: a control line is malformed; carries the ProtocolError to report."""

    def __init__(self, message: str | None) -> None:
        super().__init__(message)
        self.message = message


def _decode(token: bytes) -> str:
    return token.decode("utf-8", "surrogateescape")


_STRETCH_BACKOFF = 64  # plain publishes to wait after a CRLF-split attempt found nothing
_SIZE_DIGITS_MAX = 9  # nats-server's size parser refuses longer numbers (a silent close)


def _size(token: bytes) -> int:
    if not token.isdigit() or not token.isascii() or len(token) > _SIZE_DIGITS_MAX:
        raise _Bad(None)
    return int(token)


class Parser:
    """Incremental parser; `server_side` selects which operations are accepted."""

    def __init__(
        self,
        *,
        server_side: bool = True,
        max_control_line: int = MAX_CONTROL_LINE,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        self.server_side = server_side
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self.closed = False
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0  # bytes needed from the start of pending (0: wait for a newline)
        self._cache: dict[bytes, tuple] = {}
        self._plain: dict[bytes, tuple] = {}  # plain PUB line without CR: (subj, reply, size, tail)

    # -- public -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        if self.closed or not data:
            return []
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._need:
                if self._pending_len < self._need:
                    return []
            elif b"\n" not in data:
                if not self._plausible_start(b"".join(self._pending[:9])[:9]):
                    return self._fail([], ERR_UNKNOWN_OP)
                head = b"".join(self._pending[:9])[:9]
                if self._pending_len - _arg_start(head) > self.max_control_line + 1:
                    return self._fail([], ERR_MAX_CONTROL_LINE)
                return []
            buf = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
        else:
            buf = bytes(data)
        ops: list = []
        self._need = 0
        pos = self._parse(buf, ops)
        if pos < len(buf) and not self.closed:
            rest = buf[pos:]
            self._pending = [rest]
            self._pending_len = len(rest)
            if not self._need:
                if not self._plausible_start(rest[:9]):
                    return self._fail(ops, ERR_UNKNOWN_OP)
                if len(rest) - _arg_start(rest[:9]) > self.max_control_line + 1:
                    return self._fail(ops, ERR_MAX_CONTROL_LINE)
        return ops

    # -- internals ----------------------------------------------------------------------------

    def _plausible_start(self, head: bytes) -> bool:
        """Could `head` (the start of an unfinished line) begin a known operation? nats-server
        parses byte by byte and rejects an unknown operation before its newline arrives."""
        head = head.upper().replace(b"\t", b" ")
        names = _SERVER_STARTS if self.server_side else _CLIENT_STARTS
        return any(head.startswith(name) or name.startswith(head) for name in names)

    def _fail(self, ops: list, message: str | None, subject: str | None = None) -> list:
        self.closed = True
        self._pending = []
        ops.append(ProtocolError(message, True, subject))
        return ops

    def _parse(self, buf: bytes, ops: list) -> int:
        """Parse complete frames of `buf` into `ops`; return where the unparsed rest starts."""
        pos = 0
        n = len(buf)
        find = buf.find
        startswith = buf.startswith
        cache = self._cache
        append = ops.append
        singles = 0
        while pos < n:
            nl = find(b"\n", pos)
            if nl < 0:
                return pos
            line = buf[pos:nl]
            meta = cache.get(line)
            if meta is None:
                meta = self._control_line(line)
                if type(meta) is not tuple:
                    if meta is not None:
                        if type(meta) is ProtocolError:
                            self._fail(ops, meta.message)
                            return n
                        append(meta)
                    pos = nl + 1
                    continue
                if not _one_off(line):
                    if len(cache) >= _LINE_CACHE_MAX:
                        cache.clear()
                        self._plain.clear()
                    cache[line] = meta
                    if meta[0] == _KIND_PUB and meta[4] < 0 and line.endswith(b"\r"):
                        self._plain[line[:-1]] = (meta[1], meta[2], meta[5], meta[6])
            kind, subject, reply, sid, hsize, size, tail, _ = meta
            start = nl + 1
            end = start + size
            if end + 2 > n:
                self._need = end + 2 - pos
                return pos
            if buf[end] != 13 or buf[end + 1] != 10:
                self._fail(ops, ERR_UNKNOWN_OP, subject if kind == _KIND_PUB else None)
                return n
            if kind == _KIND_PUB:
                if hsize < 0:
                    if not startswith(line, end + 2):  # not a run: one message
                        append((subject, reply, None, [buf[start:end]], tail))
                        pos = end + 2
                        singles += 1
                        if singles >= 2:  # publishes to varying subjects: go by CRLF splits
                            before = pos
                            pos = self._pub_stretch(buf, pos, ops)
                            # unknown lines (e.g. a new reply subject per publish): do not
                            # split ahead again for a while
                            singles = 0 if pos != before else -_STRETCH_BACKOFF
                        continue
                    pos = self._pub_batch(buf, pos, line, end, ops, meta)
                    if self.closed:
                        return n
                    continue
                mid = start + hsize
                append((subject, reply, buf[start:mid], [buf[mid:end]], tail))
            else:
                headers = buf[start : start + hsize] if hsize >= 0 else None
                body = buf[start + max(hsize, 0) : end]
                append(Msg(subject, sid, reply, headers, body))
            pos = end + 2
        return pos

    def _pub_stretch(self, buf: bytes, pos: int, ops: list) -> int:
        """Parse consecutive plain publishes with known control lines by splitting on CRLF:
        `split` finds every line and payload in C, so each frame costs one dict lookup and a
        length check. Consecutive frames with the same line share one op. Returns at the first
        frame this cannot take (unknown or other line, payload containing CRLF, incomplete
        data); the general loop carries on from there. Windows grow geometrically so an early
        stop costs little."""
        get = self._plain.get
        append = ops.append
        n = len(buf)
        window = 2048
        prev = None
        group: list[bytes] = []
        while pos < n:
            stop = min(n, pos + window)
            parts = buf[pos:stop].split(b"\r\n")
            last = len(parts) - 2  # pairs (line, payload) both followed by CRLF
            i = 0
            while i < last:
                line = parts[i]
                meta = get(line)
                if meta is None:
                    meta = self._learn_pub(line)
                    if meta is None:
                        return pos
                payload = parts[i + 1]
                if len(payload) != meta[2]:
                    return pos
                if line == prev:
                    group.append(payload)
                else:
                    group = [payload]
                    prev = line
                    append((meta[0], meta[1], None, group, meta[3]))
                pos += len(line) + len(payload) + 4
                i += 2
            if stop == n:
                return pos
            window = min(window * 4, 1 << 16)
        return pos

    def _learn_pub(self, line: bytes) -> tuple | None:
        """A new plain `PUB` line (CR already split off) met by `_pub_stretch`, e.g. a JetStream
        publisher's next reply subject: parse and cache it as the general loop would; None for
        anything else (the general loop then takes it, errors included)."""
        if line[:4] != b"PUB " or len(line) >= self.max_control_line or not self.server_side:
            return None
        one_off = b"$JS.ACK." in line or b"_INBOX." in line  # _one_off, inlined
        if one_off:  # `PUB <subject> [reply] <size>`, single-spaced: parsed here, not cached
            args = line.split(b" ")
            size_b = args[-1]
            if ((len(args) == 3 or len(args) == 4) and size_b.isdigit()
                    and len(size_b) <= _SIZE_DIGITS_MAX and b"" not in args
                    and b"\t" not in line and b"\r" not in line and b"\n" not in line):
                size = int(size_b)
                if size <= self.max_payload:
                    subject = args[1]
                    reply = _decode(args[2]) if len(args) == 4 else None
                    return (_decode(subject), reply, size, line[4 + len(subject):] + b"\r\n")
        try:
            meta = self._pub(line[4:])
        except _Bad:
            return None
        plain = (meta[1], meta[2], meta[5], meta[6])
        if one_off:
            return plain
        if len(self._cache) >= _LINE_CACHE_MAX:
            self._cache.clear()
            self._plain.clear()
        self._cache[line + b"\r"] = meta
        self._plain[line] = plain
        return plain

    def _pub_batch(self, buf: bytes, pos: int, line: bytes, end: int, ops: list,
                   meta: tuple) -> int:
        """Append one PUB op holding the payloads of every consecutive frame with this exact
        control line (the common case of a publisher blasting one subject); return the
        position after the run. The first frame is already known to be complete and valid.

        Frames of a run all have the same length, so the run is checked column-wise with
        strided slices (`buf[i::frame_len]`), a few C calls per window of frames instead of
        Python work per frame; windows grow geometrically so a short run costs little."""
        size = meta[5]
        head = line + b"\n"
        head_len = len(head)
        frame_len = head_len + size + 2
        count, bad = 1, False
        if buf.startswith(head, pos + frame_len):
            columns = meta[7]
            if columns is None:  # first run on this line: split its head into 1-byte columns
                columns = tuple(head[i : i + 1] for i in range(head_len))
                if line in self._cache:  # one-off lines stay out (see _one_off)
                    self._cache[line] = meta[:7] + (columns,)
            avail = (len(buf) - pos) // frame_len
            count, bad = _run_length(buf, pos, frame_len, columns, head_len + size, avail)
        if count == 1:
            payloads: list | PayloadRun = [buf[pos + head_len : pos + head_len + size]]
        else:
            payloads = PayloadRun(buf, pos, frame_len, head_len, count)
        ops.append((meta[1], meta[2], None, payloads, meta[6]))
        if bad:
            self._fail(ops, ERR_UNKNOWN_OP, meta[1])
            return len(buf)
        return pos + count * frame_len

    def _control_line(self, line: bytes):
        """Parse one control line (no payload yet): an op, a payload tuple, None, or an error."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_control_line and len(line) - _arg_start(line[:9]) > self.max_control_line:
            plausible = self._plausible_start(line[:9])
            return ProtocolError(ERR_MAX_CONTROL_LINE if plausible else ERR_UNKNOWN_OP)
        try:
            return self._dispatch(line)
        except _Bad as bad:
            return ProtocolError(bad.message)

    def _dispatch(self, line: bytes):
        if line[:4] == b"PUB " and self.server_side:  # the common miss: a new reply subject
            return self._pub(line[4:])
        head = line[:5].upper()
        if head.startswith(b"PING"):
            return PING
        if head.startswith(b"PONG"):
            return PONG
        if head.startswith(b"+OK"):
            return None if self.server_side else OK
        upper = line[:7].upper()
        if upper == b"CONNECT" and self.server_side:  # nats-server: no separator needed
            return self._connect(line[7:].lstrip(b" \t"))
        if upper[:4] == b"INFO":
            return self._info(line[4:].lstrip(b" \t"))
        op, sep, rest = _split_op(line)
        if not sep:
            raise _Bad(ERR_UNKNOWN_OP)
        handler = (_SERVER_OPS if self.server_side else _CLIENT_OPS).get(op)
        if handler is None:
            raise _Bad(ERR_UNKNOWN_OP)
        return handler(self, rest)

    def _pub(self, rest: bytes) -> tuple:
        args = rest.split(b" ")
        plain = not (b"" in args or b"\t" in rest or b"\r" in rest or b"\n" in rest)
        if not plain:  # the rare spelling (see _args)
            args = _args(rest)
        if len(args) == 2:
            subject, size_b = args
            reply = None
        elif len(args) == 3:
            subject, reply, size_b = args
        else:
            raise _Bad(None)
        # bytes.isdigit is ASCII-only; nats-server refuses sizes of more than 9 digits
        if not size_b.isdigit() or len(size_b) > _SIZE_DIGITS_MAX:
            raise _Bad(None)
        size = int(size_b)
        if size > self.max_payload:
            raise _Bad(ERR_MAX_PAYLOAD)
        if plain:  # ` [reply] <size>` is already the rest of the line, single-spaced
            tail = rest[len(subject):] + b"\r\n"
        else:
            tail = b" " + (reply + b" " if reply is not None else b"") + size_b + b"\r\n"
        reply_s = _decode(reply) if reply is not None else None
        return (_KIND_PUB, _decode(subject), reply_s, None, -1, size, tail, None)

    def _hpub(self, rest: bytes) -> tuple:
        args = _args(rest)
        if len(args) == 3:
            subject, hsize_b, size_b = args
            reply = None
        elif len(args) == 4:
            subject, reply, hsize_b, size_b = args
        else:
            raise _Bad(None)
        hsize, size = _size(hsize_b), _size(size_b)
        if size > self.max_payload:
            raise _Bad(ERR_MAX_PAYLOAD)
        if hsize > size:
            raise _Bad(None)
        if hsize == 0:  # no header block: nats-server delivers a plain MSG
            tail = b" " + (reply + b" " if reply is not None else b"") + size_b + b"\r\n"
            reply_s = _decode(reply) if reply is not None else None
            return (_KIND_PUB, _decode(subject), reply_s, None, -1, size, tail, None)
        tail = b" " + (reply + b" " if reply is not None else b"") + hsize_b + b" " + size_b + b"\r\n"
        reply_s = _decode(reply) if reply is not None else None
        return (_KIND_PUB, _decode(subject), reply_s, None, hsize, size, tail, None)

    def _sub(self, rest: bytes) -> Sub:
        args = _args(rest)
        if len(args) == 2:
            return Sub(_decode(args[0]), None, _decode(args[1]))
        if len(args) == 3:
            return Sub(_decode(args[0]), _decode(args[1]), _decode(args[2]))
        raise _Bad(None)

    def _unsub(self, rest: bytes) -> Unsub:
        args = _args(rest)
        if len(args) == 1:
            return Unsub(_decode(args[0]), None)
        if len(args) == 2:  # a max nats-server cannot parse is ignored: plain unsubscribe
            max_b = args[1]
            ok = max_b.isdigit() and max_b.isascii() and len(max_b) <= _SIZE_DIGITS_MAX
            return Unsub(_decode(args[0]), int(max_b) if ok else None)
        raise _Bad(None)

    def _connect(self, rest: bytes) -> Connect:
        options = _json_object(rest)
        for key, value in options.items():
            kind = _CONNECT_TYPES.get(key)
            if kind is not None and value is not None and not _has_type(value, kind):
                raise _Bad(None)  # nats-server's JSON decoding fails: silent close
        return Connect(options)

    def _info(self, rest: bytes):
        info = _json_object(rest)
        return None if self.server_side else Info(info)

    def _err_from_client(self, rest: bytes):
        raise _Bad(None)

    def _err(self, rest: bytes) -> Err:
        text = _decode(rest.strip(b" \t"))
        if len(text) >= 2 and text[0] == text[-1] == "'":
            text = text[1:-1]
        return Err(text)

    def _msg(self, rest: bytes) -> tuple:
        args = _args(rest)
        if len(args) == 3:
            subject, sid, size_b = args
            reply = None
        elif len(args) == 4:
            subject, sid, reply, size_b = args
        else:
            raise _Bad(None)
        reply_s = _decode(reply) if reply is not None else None
        return (_KIND_MSG, _decode(subject), reply_s, _decode(sid), -1, _size(size_b), b"", None)

    def _hmsg(self, rest: bytes) -> tuple:
        args = _args(rest)
        if len(args) == 4:
            subject, sid, hsize_b, size_b = args
            reply = None
        elif len(args) == 5:
            subject, sid, reply, hsize_b, size_b = args
        else:
            raise _Bad(None)
        hsize, size = _size(hsize_b), _size(size_b)
        if hsize > size:
            raise _Bad(None)
        reply_s = _decode(reply) if reply is not None else None
        return (_KIND_MSG, _decode(subject), reply_s, _decode(sid), hsize, size, b"", None)


def _run_length(buf: bytes, base: int, frame_len: int, columns: tuple, crlf_at: int,
                avail: int) -> tuple[int, bool]:
    """How many consecutive frames of `frame_len` bytes from `base` (frame 0 already valid,
    `avail` complete frames in `buf`) start with the head whose bytes are `columns` and end in
    CRLF at `crlf_at`? Also say whether the run ended on a frame whose head matched but whose
    payload was not followed by CRLF (a protocol error)."""
    count = 1
    window = 16
    while count < avail:
        width = min(window, avail - count)
        start = base + count * frame_len
        stop = start + width * frame_len
        good = width
        for offset, column in enumerate(columns):
            rest = buf[start + offset : stop : frame_len].lstrip(column)
            if rest:
                good = min(good, width - len(rest))
        cr = width - len(buf[start + crlf_at : stop : frame_len].lstrip(b"\r"))
        lf = width - len(buf[start + crlf_at + 1 : stop : frame_len].lstrip(b"\n"))
        if min(cr, lf) < good:
            return count + min(cr, lf), True
        count += good
        if good < width:
            break
        window *= 4
    return count, False


_CONNECT_TYPES: dict[str, type] = {
    **dict.fromkeys(("verbose", "pedantic", "tls_required", "echo", "headers", "no_responders"), bool),
    **dict.fromkeys(("name", "lang", "version", "user", "pass", "auth_token", "sig", "jwt", "nkey"), str),
    "protocol": int,
}


def _has_type(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int or (type(value) is float and value.is_integer())
    return type(value) is kind


def _one_off(line: bytes) -> bool:
    """Is this control line unique per message, so not worth caching? A JetStream ack (its
    subject carries the message's sequences and time) or a line with a request's reply inbox
    (`_INBOX.<id>.<n>`, new per request); caching them would only push out repeating lines."""
    return b"$JS.ACK." in line or b"_INBOX." in line


def _arg_start(head: bytes) -> int:
    """Where the arguments of a control line start (after the op name and one separator):
    nats-server holds the arguments, not the whole line, to max_control_line."""
    for i, byte in enumerate(head):
        if byte == 32 or byte == 9:
            return i + 1
    return 0


def _split_op(line: bytes) -> tuple[bytes, bool, bytes]:
    """Split `OP<space|tab>rest`; the op is upper-cased, `sep` says a separator was found."""
    for i, byte in enumerate(line):
        if byte == 32 or byte == 9:
            return line[:i].upper(), True, line[i + 1 :]
    return line.upper(), False, b""


# nats-server separates arguments by runs of space, tab, CR or LF (a lone CR inside a control
# line, as in `SUB a\r 1`, is a separator, not part of the subject).
_ARG_SEPARATORS = bytes.maketrans(b"\t\r\n", b"   ")


def _args(rest: bytes) -> list[bytes]:
    args = rest.split(b" ")
    if b"" in args or b"\t" in rest or b"\r" in rest or b"\n" in rest:  # the rare spelling
        return [a for a in rest.translate(_ARG_SEPARATORS).split(b" ") if a]
    return args


def _json_object(rest: bytes) -> dict:
    try:
        value = json.loads(rest)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _Bad(None) from None
    if not isinstance(value, dict):
        raise _Bad(None)
    return value


_SERVER_OPS = {
    b"PUB": Parser._pub,
    b"HPUB": Parser._hpub,
    b"SUB": Parser._sub,
    b"UNSUB": Parser._unsub,
    b"CONNECT": Parser._connect,
    b"INFO": Parser._info,
    b"-ERR": Parser._err_from_client,
}

_SERVER_STARTS = (b"PUB ", b"HPUB ", b"SUB ", b"UNSUB ", b"CONNECT", b"INFO", b"-ERR", b"PING",
                  b"PONG", b"+OK")
_CLIENT_STARTS = (b"MSG ", b"HMSG ", b"INFO", b"-ERR", b"PING", b"PONG", b"+OK")

_CLIENT_OPS = {
    b"MSG": Parser._msg,
    b"HMSG": Parser._hmsg,
    b"INFO": Parser._info,
    b"-ERR": Parser._err,
}

"""One client connection: a reader task, a writer task and a ping timer, over a trio stream.

How it works: the reader receives chunks of up to 64 KiB (measured: with larger chunks the
per-frame objects of one chunk fall out of the CPU cache), hands each to the pure
`protocol.Parser`, and processes the resulting operations in one synchronous pass. Publishes are
routed by the server straight into the subscribers' outbound `bytearray`s; each touched
connection is flushed once per chunk, not per message (`flush_now`: if its writer task is idle,
a non-blocking `os.write` right away, which saves a task switch per request/reply hop; the rest,
if any, goes to the writer). The writer swaps the whole pending buffer out and sends it with one
`send_all` (write coalescing). Authorization (when configured) requires a valid CONNECT first.

Security (natsd/auth.py, permissions.py, tls.py): with TLS the INFO goes out in plaintext and
the handshake follows before anything else (no direct-write fast path then). The first CONNECT
is checked by `auth.authenticate` (bcrypt in a worker thread); a user with permissions gets a
`PermissionChecker`, consulted per publish run and per SUB; without one it costs one `is None`.

Limits, as nats-server: an outbound buffer past `max_pending_bytes`, or a send blocked past
`write_deadline_s`, marks a slow consumer and the connection is closed without flushing. A
publisher whose subscriber's buffer is past the stall threshold waits (bounded) for that
subscriber's writer to drain before reading more, so fast producers do not kill healthy
consumers. Unanswered server PINGs beyond `max_pings_out` close with `-ERR 'Stale Connection'`.

No exception caused by client bytes leaves `run()`: parse problems come back from the parser as
`ProtocolError` values, and anything unexpected is logged and closes only this connection.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import wait_readable

from natsd import protocol as p
from natsd.auth import AuthResult, trace_safe, uses_bcrypt
from natsd.ops import PayloadRun
from natsd.permissions import PermissionChecker, publish_violation, subscribe_violation
from natsd.subjects import is_valid_queue_name, is_valid_subject
from natsd.sysreq import may_publish
from natsd.tls import TlsError, upgrade_server

if TYPE_CHECKING:
    from natsd.server import Server, Subscription

RECEIVE_BYTES = 64 * 1024
TRACE_BYTES = 512  # with -V, log the first bytes of every chunk read and written
STALL_WAIT_S = 0.1
# After a read whose processing ran after-read callbacks (JetStream's lone commit: the PubAck
# was just written), the next read is tried right away instead of waiting for readability: the
# one-at-a-time publisher has usually sent its next message by the time the ack write returns
# (measured: ~60-70% of reads; the wait costs an epoll_ctl, an epoll_wait and a scheduler pass,
# ~35 us p50 here). At most this many such reads in a row, then the loop waits (and yields).
EAGER_READS_MAX = 4


def _socket_fd(stream: Any) -> int:
    """The socket's file descriptor, or -1 for a stream that is not a socket."""
    try:
        return stream.socket.fileno()
    except (AttributeError, OSError):
        return -1


def _only(route: tuple, client: ClientConnection) -> bool:
    """Do all subscriptions of `route` belong to `client`?"""
    plain, queues = route
    return all(s.client is client for s in plain) and all(
        s.client is client for group in queues for s in group
    )


class CloseReason(enum.Enum):
    CLIENT_CLOSED = "client closed"
    PROTOCOL_ERROR = "protocol error"
    SLOW_CONSUMER = "slow consumer"
    STALE = "stale connection"
    MAX_CONNECTIONS = "maximum connections exceeded"
    SERVER_SHUTDOWN = "server shutdown"
    INTERNAL_ERROR = "internal error"
    AUTH_VIOLATION = "authorization violation"
    AUTH_TIMEOUT = "authentication timeout"


class ClientConnection:
    """Mutable per-connection state plus its tasks. Created and run by `Server`."""

    def __init__(self, server: Server, stream: trio.abc.Stream, cid: int, ip: str) -> None:
        opts = server.options
        self.server = server
        self.stream = stream
        self.cid = cid
        self.ip = ip
        self.log = server.log.bind(cid=cid, ip=ip)
        self.parser = p.Parser(
            max_control_line=opts.max_control_line_bytes, max_payload=opts.max_payload_bytes
        )
        self.out = bytearray()
        self.dirty = False
        self.trace = opts.trace
        self.max_pending_bytes = opts.max_pending_bytes
        self.stall_bytes = max(64 * 1024, min(opts.max_pending_bytes * 3 // 4, 8 * 1024 * 1024))
        self.subs: dict[str, Subscription] = {}
        # CONNECT options; defaults are nats-server's for a client that sent no CONNECT
        self.verbose = True
        self.pedantic = True
        self.echo = True
        self.headers = False
        self.no_responders = False
        self.protocol = 0
        self.name = ""
        self.connected = False
        self.authorized = not server.auth_required
        self.nonce = server.new_nonce() if server.auth_required else ""
        self.perms: PermissionChecker | None = None  # set at CONNECT for users with permissions
        self.user = ""  # the authenticated user name or nkey (never a secret)
        self._auth_result: AuthResult | None = None  # a bcrypt check done off the event loop
        self.first_pong_sent = False
        self.pings_out = 0
        self.closing = False
        self.close_reason: CloseReason | None = None
        self.stall_on: ClientConnection | None = None
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._scope = trio.CancelScope()
        self._flush_then_cancel = False
        self.sending = False  # the writer task is inside send_all
        self._fd = _socket_fd(stream)
        self.finished = trio.Event()
        # monitoring (natsd/monitor*.py): per-run counters, CONNECT's lang/version, wall times
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self.lang = self.version = ""
        self.start_s = self.last_activity_s = time.time()

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, first_error: str | None = None) -> None:
        """Serve the connection until it closes; never raises (except trio.Cancelled)."""
        try:
            with self._scope:
                tls_ctx = self.server.tls_ctx
                if tls_ctx is not None and first_error is None:
                    await self._start_tls(tls_ctx)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    if tls_ctx is None or first_error is not None:
                        self.send(p.encode_info(self.server.client_info(self)))
                    if first_error is not None:
                        self.close(CloseReason.MAX_CONNECTIONS, first_error)
                        return
                    nursery.start_soon(self._ping_loop)
                    if not self.authorized:
                        nursery.start_soon(self._auth_timer)
                    await self._read_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.log.debug("client.io_error", error=repr(exc))
        except TlsError as exc:
            self.log.info("client.tls_failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad client must never kill the server
            self.log.error("client.crashed", error=repr(exc), exc_info=True)
        finally:
            self.closing = True
            self.server.client_gone(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            self.finished.set()
            self.log.debug("client.closed", reason=str(self.close_reason and self.close_reason.value))

    async def _start_tls(self, ctx: Any) -> None:
        """INFO in plaintext, then the TLS handshake (bounded by the tls timeout); from then on
        the connection talks through the SSLStream (no direct os.write fast path)."""
        await self.stream.send_all(p.encode_info(self.server.client_info(self)))
        self.stream = await upgrade_server(self.stream, ctx, self.server.tls.timeout_s)
        self._fd = -1
        self.log.debug("client.tls_ready", version=self.stream.version())

    def now_ms(self) -> int:
        return int(trio.current_time() * 1000)

    def close(self, reason: CloseReason, err_text: str | None = None, flush: bool = True) -> None:
        """Close this connection: optionally send `-ERR '<err_text>'` and flush first."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self.server.drop_subscriptions(self)
        if err_text is not None:
            self.out += p.encode_err(err_text)
        if flush and self.out:
            self._flush_then_cancel = True
            self._wake.set()
        else:
            self._scope.cancel()
        self._drained.set()

    def send(self, data: bytes) -> None:
        """Queue bytes for the writer and wake it."""
        self.out += data
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def flush_now(self) -> None:
        """Write pending output straight to the socket if the writer task is idle.

        A non-blocking `os.write` from the task that produced the data saves a task switch per
        message hop (request/reply latency); whatever the kernel does not take right away is
        left for the writer task, which is then woken. Never blocks."""
        out = self.out
        if self.sending or self.closing or self._fd < 0 or not out:
            self._wake.set()
            return
        try:
            sent = os.write(self._fd, out)
        except BlockingIOError:
            sent = 0
        except OSError:  # broken connection: the writer task finds out and closes
            self._wake.set()
            return
        if self.trace:
            self.log.debug("client.trace_out", data=bytes(out[:min(sent, TRACE_BYTES)]), size=sent)
        if sent == len(out):
            self.out = bytearray()
            self._drained.set()
        else:
            del out[:sent]
            self._wake.set()

    # -- reader -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self._receive_fd if self._fd >= 0 else self.stream.receive_some
        feed = self.parser.feed
        server = self.server
        eager = 0  # reads in a row that follow a lone commit (see EAGER_READS_MAX)
        fd = self._fd
        while not self.closing:
            data = None
            if eager and fd >= 0:  # the publisher likely answered already: read, no wait
                try:
                    data = os.read(fd, RECEIVE_BYTES)
                except BlockingIOError:
                    eager = 0
            if data is None:
                data = await receive(RECEIVE_BYTES)
            if not data:
                self.close(CloseReason.CLIENT_CLOSED, flush=False)
                return
            self.last_activity_s = time.time()
            if self.trace:
                self.log.debug("client.trace_in", data=trace_safe(bytes(data[:TRACE_BYTES]), self.connected), size=len(data))
            try:
                ops = feed(data)
                if not self.authorized and ops and type(ops[0]) is p.Connect:
                    await self._check_credentials(ops[0])
                    if self.closing:
                        return
                server.after_read = after = []
                try:
                    self._process(ops)
                finally:
                    server.after_read = None
                    if after:
                        self._run_after_read(after)
                        eager = eager + 1 if eager < EAGER_READS_MAX else 0
                    else:
                        eager = 0
            finally:
                server.flush_dirty()  # wake writers even if processing failed
            stalled = self.stall_on
            if stalled is not None:
                self.stall_on = None
                await stalled.wait_drained(STALL_WAIT_S)
        if self._flush_then_cancel:
            await trio.sleep_forever()  # the writer flushes, then cancels the scope

    def _run_after_read(self, callbacks: list[Callable[[], None]]) -> None:
        """The callbacks registered in `server.after_read` while this read was processed
        (JetStream's lone-publish commit: the whole read is known, so a lone publish is one
        that no other publish of the read joined). A failing callback is logged, not raised."""
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - an internal hook must not close the client
                self.log.error("client.after_read_failed", error=repr(exc), exc_info=True)

    async def _receive_fd(self, max_bytes: int) -> bytes:
        """`receive_some` of a plain TCP socket: wait until readable, then one read. trio's
        receive_some tries a recv first, which for a request/reply client (one PUB, then silence
        until the answer) fails with EAGAIN every time: a syscall and a raised exception per
        message. The wait is also this loop's checkpoint (a firehose still yields)."""
        fd = self._fd
        while True:
            await wait_readable(fd)
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:  # spurious wakeup
                continue

    def _process(self, ops: list) -> None:
        if not self.authorized:
            ops = self._authorize(ops)
        server = self.server
        routes = server.routes
        fast = not (self.verbose or self.pedantic)
        deliver = server.deliver
        cluster = server.cluster_active  # not None while cluster routes are up
        perms = self.perms
        sys_gate = server.monitor.sys_gate  # a system account exists: only its users send $SYS.
        for op in ops:
            if type(op) is tuple:
                subject, reply, headers, payloads, tail = op
                if headers is not None and not self.headers:
                    self.close(CloseReason.PROTOCOL_ERROR)
                    break
                if perms is not None and not perms.pub_cache.get(subject):  # cached "allowed"
                    allowed = perms.allowed_count(subject, len(payloads), self.now_ms)
                    if allowed < len(payloads):
                        self._pub_denied(subject, len(payloads) - allowed)
                        if not allowed:
                            continue
                        payloads = payloads[:allowed]
                count = len(payloads)  # a run shares one control line, so one size
                self.in_msgs += count
                self.in_bytes += count * (payloads.size if type(payloads) is PayloadRun else len(payloads[0]))
                if not fast:
                    self._pub_checks(subject, len(payloads))
                if sys_gate and subject.startswith("$SYS.") and not may_publish(self, subject):  # sysreq.py
                    if reply is not None and self.no_responders:
                        for _ in payloads:
                            server.no_responders(self, subject, reply)
                    continue
                route = routes.get(subject)
                if route is None:
                    route = server.route_for(subject)
                if cluster is not None:
                    cluster.publish(self, route, subject, reply, headers, payloads, tail)
                elif route:
                    deliver(self, route, subject, reply, headers, payloads, tail)
                    if reply is not None and not self.echo and self.no_responders and _only(route, self):
                        for _ in payloads:  # echo off hid the only subscribers: nobody got it
                            server.no_responders(self, subject, reply)
                elif reply is not None and self.no_responders:
                    for _ in payloads:
                        server.no_responders(self, subject, reply)
            else:
                self._control(op)
                if self.closing:
                    break
                fast = not (self.verbose or self.pedantic)
                perms = self.perms
        server.flush_dirty()

    def _authorize(self, ops: list) -> list:
        """On a server requiring auth the first operation must be a CONNECT with valid
        credentials; anything else is `-ERR 'Authorization Violation'` and close."""
        at = 0
        if self.server.auth.no_auth_user is not None:  # PING/PONG may come before CONNECT
            while at < len(ops) and type(ops[at]) in (p.Ping, p.Pong):
                at += 1
        if at == len(ops):
            return ops
        if type(ops[at]) is p.ProtocolError and ops[at].message != p.ERR_UNKNOWN_OP:
            return ops  # e.g. a CONNECT with bad JSON: closed silently, as nats-server
        first = ops[at]
        result, self._auth_result = self._auth_result, None
        if result is None and type(first) is p.Connect:
            result = self.server.authenticate(first.options, self.nonce)
        if result is None or not result.ok:
            self.log.info("client.auth_failed", op=type(first).__name__,
                          user=result.who if result is not None else "")
            self.close(CloseReason.AUTH_VIOLATION, "Authorization Violation")
            return []
        self.authorized = True
        self.user = result.who
        if result.permissions is not None:
            self.perms = PermissionChecker(result.permissions)
            self.server.permissions_added(self.perms, +1)
        return ops

    async def _check_credentials(self, connect: p.Connect) -> None:
        """A bcrypt check runs in a worker thread (bounded by the server's limiter), so a login
        does not stall every other connection; `_authorize` then uses the stored result."""
        if uses_bcrypt(self.server.auth, connect.options):
            self._auth_result = await trio.to_thread.run_sync(
                self.server.authenticate, connect.options, self.nonce,
                limiter=self.server.auth_limiter)

    def _pub_denied(self, subject: str, count: int) -> None:
        """The message is dropped; the connection stays open (as nats-server)."""
        self.log.info("client.publish_denied", user=self.user, subject=subject[:256])
        self.out += p.encode_err(publish_violation(subject)) * count
        self.dirty_self()

    async def _auth_timer(self) -> None:
        await trio.sleep(self.server.options.auth_timeout_s)
        if not self.authorized:
            self.close(CloseReason.AUTH_TIMEOUT, "Authentication Timeout")

    def _pub_checks(self, subject: str, count: int) -> None:
        """Pedantic subject check and verbose +OK, once per message of a run."""
        bad = self.pedantic and not self.server.is_literal(subject)
        reply = (p.encode_err("Invalid Publish Subject") if bad else b"") + (
            p.OK_BYTES if self.verbose else b""
        )
        if reply:
            self.out += reply * count
            self.dirty_self()

    def dirty_self(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.server.dirty.append(self)

    # -- control operations -----------------------------------------------------------------

    def _control(self, op: Any) -> None:
        kind = type(op)
        if kind is p.Ping:
            self._on_ping()
        elif kind is p.Pong:
            self.pings_out = 0
        elif kind is p.Sub:
            self._on_sub(op)
        elif kind is p.Unsub:
            self._on_unsub(op)
        elif kind is p.Connect:
            self._on_connect(op.options)
        elif kind is p.ProtocolError:
            self.log.debug("client.protocol_error", error=op.message)
            if op.subject is not None and self.pedantic and not self.server.is_literal(op.subject):
                self.out += p.encode_err("Invalid Publish Subject")  # nats-server's order
            self.close(CloseReason.PROTOCOL_ERROR, op.message)
        self.dirty_self()

    def _on_ping(self) -> None:
        self.out += p.PONG_BYTES
        if self.connected and self.protocol >= 1 and not self.first_pong_sent:
            self.first_pong_sent = True
            self.out += p.encode_info(self.server.client_info(self, connect_info=True))

    def _on_connect(self, options: dict) -> None:
        protocol = options.get("protocol", 0)
        if protocol not in (0, 1) or isinstance(protocol, bool):
            self.close(CloseReason.PROTOCOL_ERROR, "invalid client protocol")
            return
        headers = bool(options.get("headers", False))
        no_responders = bool(options.get("no_responders", False))
        if no_responders and not headers:
            self.close(CloseReason.PROTOCOL_ERROR, "no responders requires headers support")
            return
        self.verbose = bool(options.get("verbose", True))
        self.pedantic = bool(options.get("pedantic", True))
        self.echo = bool(options.get("echo", True))
        self.headers = headers
        self.no_responders = no_responders
        self.protocol = protocol
        self.name = str(options.get("name", ""))
        self.lang, self.version = str(options.get("lang", "")), str(options.get("version", ""))
        self.connected = True
        self.log = self.log.bind(name=self.name) if self.name else self.log
        self.log.debug("client.connect", lang=options.get("lang"), version=options.get("version"),
                       protocol=protocol, headers=headers, echo=self.echo, verbose=self.verbose)
        if self.verbose:
            self.out += p.OK_BYTES

    def _on_sub(self, op: p.Sub) -> None:
        if self.perms is not None and not self.perms.can_subscribe(op.subject, op.queue):
            self.log.info("client.subscribe_denied", user=self.user, subject=op.subject[:256],
                          queue=op.queue)
            self.out += p.encode_err(subscribe_violation(op.subject, op.queue))
            return
        limit = self.server.options.max_subscriptions
        if limit and op.sid not in self.subs and len(self.subs) >= limit:
            self.log.info("client.max_subscriptions", limit=limit)
            self.out += p.encode_err("maximum subscriptions exceeded")
            return
        if op.sid not in self.subs:  # a live sid: ignored before any validation (nats-server)
            if not is_valid_subject(op.subject) or (
                op.queue is not None and not is_valid_queue_name(op.queue)
            ):
                self.out += p.encode_err("Invalid Subject")
                return
            self.subs[op.sid] = self.server.add_subscription(self, op.subject, op.queue, op.sid)
        if self.verbose:
            self.out += p.OK_BYTES

    def _on_unsub(self, op: p.Unsub) -> None:
        sub = self.subs.get(op.sid)
        if sub is not None:
            if op.max_msgs is not None and op.max_msgs > sub.delivered:
                sub.max_msgs = op.max_msgs
            else:
                self.server.remove_subscription(sub)
        if self.verbose:
            self.out += p.OK_BYTES

    # -- writer and timers ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        send_all = self.stream.send_all
        deadline_s = self.server.options.write_deadline_s
        while True:
            if not self.out:
                if self._flush_then_cancel:
                    break
                self._drained.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            data = self.out
            self.out = bytearray()
            self.dirty = False
            if self.trace:
                self.log.debug("client.trace_out", data=bytes(data[:TRACE_BYTES]), size=len(data))
            self.sending = True
            try:
                with trio.move_on_after(deadline_s) as scope:
                    await send_all(data)
            finally:
                self.sending = False
            if scope.cancelled_caught:
                self.log.info("client.slow_consumer", reason="write deadline")
                self.server.slow_consumers += 1
                self.close(CloseReason.SLOW_CONSUMER, flush=False)
                break
            if len(self.out) < self.stall_bytes:
                self._drained.set()
        self._scope.cancel()

    async def wait_drained(self, timeout_s: float) -> None:
        """Wait (bounded) until this connection's outbound buffer is below the stall mark."""
        with trio.move_on_after(timeout_s):
            while len(self.out) >= self.stall_bytes and not self.closing:
                if self._drained.is_set():  # shared by every publisher stalled on this client
                    self._drained = trio.Event()
                await self._drained.wait()

    def slow_consumer(self) -> None:
        self.log.info("client.slow_consumer", pending_bytes=len(self.out))
        self.server.slow_consumers += 1
        self.out = bytearray()
        self.close(CloseReason.SLOW_CONSUMER, flush=False)

    async def _ping_loop(self) -> None:
        interval_s = self.server.options.ping_interval_s
        limit = self.server.options.max_pings_out
        while not self.closing:
            await trio.sleep(interval_s)
            if self.pings_out + 1 > limit:
                self.close(CloseReason.STALE, "Stale Connection")
                return
            self.pings_out += 1
            self.send(p.PING_BYTES)

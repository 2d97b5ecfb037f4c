"""The core NATS server: accepts connections, keeps the subscription index, routes messages.

How it works: `Server.serve()` listens on TCP and runs one `ClientConnection` per socket (see
client.py). Every subscription, from a client or internal, is a `Subscription` in one `Sublist`.
Routing a publish is: `routes[subject]` (a per-server cache of `(plain, queue_groups)` tuples,
cleared whenever a subscription is added or removed) then, for each target, append
`MSG <subject> <sid>` + the parser's pre-built tail + payload + CRLF to the subscriber's
outbound buffer and remember the connection as dirty; the reader wakes every dirty writer once
at the end of its chunk (`flush_dirty`). Queue groups get one member per message, chosen by a
seeded `random.Random`.

Internal client API (for JetStream and meta, which sit on top of natsd):

    handle = server.subscribe_internal(subject, queue, callback)
    handle.unsubscribe()
    server.publish_internal(subject, reply, headers, payload)

`callback(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None` is
called synchronously while the message is routed: it must not block (schedule work instead, e.g.
into a trio memory channel) and exceptions it raises are logged and swallowed. Internal
subscriptions live in the same Sublist as client ones, so clients and internal subscribers see
each other's messages; `publish_internal` wakes the writers it touched before returning.
`headers` is the full header block (`NATS/1.0\\r\\n...\\r\\n\\r\\n`) or None. Also:
`server.publish_internal_many([(subject, payload), ...])` publishes many header-less messages
with one write per touched connection, routes included (JetStream's PubAcks of one commit).
`server.deliver_to(to, subject, reply, headers, payload) -> bool` routes by `to` but shows
`subject` (JetStream push delivery), and `server.has_interest(subject) -> bool`.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from typing import Any

import structlog
import trio

from natsd import protocol as p
from natsd.auth import NONCE_BYTES, AuthConfig, AuthResult, authenticate, make_nonce
from natsd.client import ClientConnection, CloseReason
from natsd.cluster import Cluster
from natsd.config import VERSION, ServerOptions
from natsd.monitor import Monitor
from natsd.ops import PayloadRun
from natsd.route_batch_stems import OneOffStems
from natsd.subjects import ONE_OFF_PREFIXES, is_valid_literal_subject
from natsd.sublist import Sublist
from natsd.tls import TlsSettings, server_context

InternalCallback = Callable[[str, "str | None", "bytes | None", bytes], None]

_ROUTE_CACHE_MAX = 16384
_PREFIX_CACHE_MAX = 256
_CRLF = b"\r\n"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class Subscription:
    """One subscription: a client's SID, or an internal callback (client None)."""

    __slots__ = (
        "client", "subject", "queue", "sid", "sid_b", "callback", "max_msgs", "delivered",
        "prefixes", "server",
    )

    def __init__(self, server: Server, client: ClientConnection | None, subject: str,
                 queue: str | None, sid: str, callback: InternalCallback | None) -> None:
        self.server = server
        self.client = client
        self.subject = subject
        self.queue = queue
        self.sid = sid
        self.sid_b = sid.encode("utf-8", "surrogateescape")
        self.callback = callback
        self.max_msgs = 0
        self.delivered = 0
        self.prefixes: dict[str, bytes] = {}

    def prefix(self, subject: str) -> bytes:
        """`MSG <subject> <sid>` for this subscription, cached per subject."""
        pre = self.prefixes.get(subject)
        if pre is None:
            if len(self.prefixes) >= _PREFIX_CACHE_MAX:
                self.prefixes.clear()
            pre = b"MSG " + subject.encode("utf-8", "surrogateescape") + b" " + self.sid_b
            self.prefixes[subject] = pre
        return pre

    def unsubscribe(self) -> None:
        """Remove this subscription (the handle API of subscribe_internal)."""
        self.server.remove_subscription(self)


def _server_id(rng: random.Random) -> str:
    return "N" + "".join(rng.choice(_B32) for _ in range(55))


class Server:
    def __init__(self, options: ServerOptions | None = None, *, log: Any = None) -> None:
        self.options = options or ServerOptions()
        self.log = log or structlog.get_logger("natsd")
        self.sublist = Sublist()
        self.one_off_stems = OneOffStems(self.sublist.match_once)  # inbox results per stem
        self.routes: dict[str, tuple] = {}
        self.dirty: list[ClientConnection] = []
        # While a client's read is processed: callbacks to run right after it (JetStream commits
        # a lone publish there, no task switch); None otherwise. See ClientConnection._read_loop.
        self.after_read: list[Callable[[], None]] | None = None
        self.clients: dict[int, ClientConnection] = {}
        self.rng = random.Random(self.options.seed if self.options.seed is not None else os.urandom(16))
        self.server_id = _server_id(self.rng)
        self.server_name = self.options.server_name or self.server_id
        self.port: int | None = None
        self.ready = trio.Event()
        self._next_cid = 0
        self._next_internal_sid = 0
        self._literal: dict[str, bool] = {}
        self._scope: trio.CancelScope | None = None
        self._listeners: list[trio.SocketListener] = []
        self._shutting_down = False
        # cluster routes (natsd/cluster.py): `cluster` when configured, `cluster_active` while
        # at least one route is up (client publishes then go through it)
        self.cluster: Cluster | None = None
        self.cluster_active: Cluster | None = None
        # security (natsd/auth.py, permissions.py, tls.py): counters keep the hot path at one
        # check when no connection has reply tracking or subscribe deny lists
        self.auth = AuthConfig(user=self.options.auth_user, password=self.options.auth_password,
                               token=self.options.auth_token, users=self.options.auth_users,
                               timeout_s=self.options.auth_timeout_s,
                               no_auth_user=self.options.no_auth_user,
                               default_permissions=self.options.auth_default_permissions)
        self.tls = TlsSettings(cert_file=self.options.tls_cert, key_file=self.options.tls_key,
                               ca_file=self.options.tls_ca, verify=self.options.tls_verify,
                               timeout_s=self.options.tls_timeout_s)
        self.tls_ctx = server_context(self.tls) if self.tls.enabled else None
        self.reply_trackers = 0  # live connections with allow_responses
        self.auth_limiter = trio.CapacityLimiter(4)  # concurrent bcrypt checks (CPU-bound)
        self.deny_filters = 0  # live connections with subscribe deny patterns
        # monitoring (natsd/monitor.py): counters of closed connections, slow consumers, and
        # the HTTP endpoints / provider registry (`server.monitor.register(name, fn)`)
        self.slow_consumers = 0
        self.closed_counts = [0, 0, 0, 0]  # in_msgs, in_bytes, out_msgs, out_bytes
        self.monitor = Monitor(self)

    # -- serving ----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or `shutdown()`; reports the bound port."""
        opts = self.options
        host = None if opts.host in ("", "0.0.0.0") else opts.host
        self._listeners = await trio.open_tcp_listeners(opts.port, host=host)
        self.port = self._listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                if opts.cluster_port is not None or opts.routes:
                    self.cluster = Cluster(self)
                    await nursery.start(self.cluster.run)
                await self.monitor.start(nursery)  # HTTP monitoring and $SYS requests
                self.ready.set()
                self.log.info("server.ready", port=self.port, host=opts.host,
                              server_id=self.server_id, server_name=self.server_name,
                              version=VERSION, jetstream=opts.jetstream)
                task_status.started(self.port)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:  # e.g. EMFILE: back off briefly, keep serving
                self.log.warning("server.accept_error", error=repr(exc))
                await trio.sleep(0.01)
                continue
            nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._next_cid += 1
        try:
            ip = stream.socket.getpeername()[0]
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        except OSError:
            ip = ""
        client = ClientConnection(self, stream, self._next_cid, ip)
        error = None
        if self._shutting_down:
            await trio.aclose_forcefully(stream)
            return
        if len(self.clients) >= self.options.max_connections:
            error = "maximum connections exceeded"
        else:
            self.clients[client.cid] = client
        await client.run(first_error=error)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, flush and close every client, then stop serving."""
        self._shutting_down = True
        for listener in self._listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
        clients = list(self.clients.values())
        for client in clients:
            client.close(CloseReason.SERVER_SHUTDOWN)
        with trio.move_on_after(timeout_s):
            for client in clients:
                await client.finished.wait()
        if self._scope is not None:
            self._scope.cancel()
        self.log.info("server.stopped", clients_closed=len(clients))

    def client_info(self, client: ClientConnection, connect_info: bool = False) -> dict:
        opts = self.options
        info: dict[str, Any] = {
            "server_id": self.server_id,
            "server_name": self.server_name,
            "version": VERSION,
            "proto": 1,
            "go": "python",
            "host": opts.host,
            "port": self.port,
            "headers": True,
            "max_payload": opts.max_payload_bytes,
            "client_id": client.cid,
            "client_ip": client.ip,
        }
        if opts.jetstream:
            info["jetstream"] = True
        if self.auth.advertised:
            info["auth_required"] = True
        if self.tls_ctx is not None:
            info["tls_required"] = True
            if self.tls.verify:
                info["tls_verify"] = True
        if client.nonce:
            info["nonce"] = client.nonce
        if connect_info:
            info.update(connect_info=True, remote_account="$G", acc_is_sys=False)
        if self.cluster is not None:
            self.cluster.decorate_client_info(info)
        return info

    @property
    def auth_required(self) -> bool:
        return self.auth.required

    def new_nonce(self) -> str:
        """A fresh INFO nonce when nkey users are configured, else ""."""
        return make_nonce(os.urandom(NONCE_BYTES)) if self.auth.nonce_required else ""

    def authenticate(self, connect: dict, nonce: str) -> AuthResult:
        return authenticate(self.auth, connect, nonce)

    def credentials_ok(self, connect: dict) -> bool:
        """Do the CONNECT options carry valid credentials (no nonce: not for nkey users)?"""
        return authenticate(self.auth, connect, None).ok

    def client_gone(self, client: ClientConnection) -> None:
        if self.clients.pop(client.cid, None) is not None:
            self.monitor.client_gone(client)
        self.drop_subscriptions(client)
        if client.perms is not None:
            self.permissions_added(client.perms, -1)
            client.perms = None

    def without_denied(self, plain: Any, queues: Any, subject: str) -> tuple:
        """`(plain, queues)` minus subscriptions whose connection's subscribe deny list forbids
        `subject` (empty groups dropped). Callers check `deny_filters` first (hot path)."""
        return _without_denied(plain, queues, subject)

    def permissions_added(self, perms: Any, delta: int) -> None:
        """A connection with permissions came (+1) or went (-1): keep the hot-path counters."""
        if perms.tracks_replies:
            self.reply_trackers += delta
        if perms.perms.subscribe.deny:
            self.deny_filters += delta
            self.routes.clear()

    # -- subscriptions ----------------------------------------------------------------------

    def add_subscription(self, client: ClientConnection | None, subject: str, queue: str | None,
                         sid: str, callback: InternalCallback | None = None) -> Subscription:
        sub = Subscription(self, client, subject, queue, sid, callback)
        self.sublist.insert(subject, queue, sub)
        self.one_off_stems.entry_added(subject)
        self.routes.clear()
        if self.cluster is not None and client is not None:
            self.cluster.local_sub_added(subject, queue)
        return sub

    def remove_subscription(self, sub: Subscription) -> None:
        if self.sublist.remove(sub.subject, sub.queue, sub):
            self.one_off_stems.entry_removed(sub.subject)
            self.routes.clear()
            if self.cluster is not None and sub.client is not None:
                self.cluster.local_sub_removed(sub.subject, sub.queue)
        if sub.client is not None and sub.client.subs.get(sub.sid) is sub:
            del sub.client.subs[sub.sid]

    def drop_subscriptions(self, client: ClientConnection) -> None:
        subs = list(client.subs.values())
        client.subs.clear()
        for sub in subs:
            self.remove_subscription(sub)

    def subscribe_internal(self, subject: str, queue: str | None,
                           callback: InternalCallback) -> Subscription:
        """Subscribe an internal callback; returns a handle with `unsubscribe()`."""
        self._next_internal_sid += 1
        return self.add_subscription(None, subject, queue, f"i{self._next_internal_sid}", callback)

    def publish_internal(self, subject: str, reply: str | None, headers: bytes | None,
                         payload: bytes) -> None:
        """Publish as the server itself; reaches client and internal subscribers."""
        route = self.routes.get(subject)
        if route is None:
            route = self.route_for(subject)
        if route:
            self.deliver(None, route, subject, reply, headers, [payload], _tail(reply, headers, payload))
        if self.cluster_active is not None:
            self.cluster_active.forward_internal(subject, reply, headers, payload)
        self.flush_dirty()

    def publish_internal_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish many header-less, reply-less messages as the server (JetStream PubAcks of
        one commit): the same delivery as `publish_internal`, but one write per touched
        connection for the lot. One-off subjects (reply inboxes) are matched without filling
        the route cache or the sublist's, so they do not push out the hot publish subjects."""
        routes = self.routes
        deliver = self.deliver
        cluster = self.cluster_active
        dirty = self.dirty
        one_off = None if self.deny_filters else self.one_off_stems.match
        for subject, payload in messages:
            route = routes.get(subject)
            if route is None:
                if one_off is None:
                    route = self._route_uncached(subject, once=True)
                else:  # _route_uncached(once=True) without deny lists, inline
                    result = one_off(subject)
                    route = (result.plain, result.queues) if result.plain or result.queues else ()
            if route:
                plain, queues = route
                sub = plain[0] if len(plain) == 1 and not queues else None
                c = sub.client if sub is not None else None
                if c is None or sub.max_msgs:  # type: ignore[union-attr]
                    deliver(None, route, subject, None, None, [payload], b" %d\r\n" % len(payload))
                else:  # the usual PubAck: one client's inbox subscription
                    out = c.out
                    out += b"MSG %s %s %d\r\n%s\r\n" % (subject.encode("utf-8", "surrogateescape"),
                                                        sub.sid_b, len(payload), payload)  # type: ignore[union-attr]
                    sub.delivered += 1  # type: ignore[union-attr]
                    c.out_msgs += 1
                    c.out_bytes += len(payload)
                    if len(out) > c.stall_bytes:
                        self._pressure(None, c)
                    if not c.dirty:
                        c.dirty = True
                        dirty.append(c)
        if cluster is not None:
            cluster.forward_internal_many(messages)  # one write per route for the lot
        self.flush_dirty()

    def deliver_to(self, to: str, subject: str, reply: str | None, headers: bytes | None,
                   payload: bytes) -> bool:
        """Deliver to the subscribers of `to`, but show them `subject` in MSG/HMSG (JetStream
        push delivery: deliver subject routes, the stream subject is shown). False when nobody
        is subscribed to `to`. Wakes the writers it touched."""
        route = self.routes.get(to)
        if route is None:
            route = self.route_for(to)
        if route:
            self.deliver(None, route, subject, reply, headers, [payload], _tail(reply, headers, payload))
            self.flush_dirty()
        return bool(route)

    def has_interest(self, subject: str) -> bool:
        """Does any subscription (client or internal) match `subject`?"""
        route = self.routes.get(subject)
        if route is None:
            route = self.route_for(subject)
        return bool(route)

    # -- routing (hot path) -----------------------------------------------------------------

    def route_for(self, subject: str) -> tuple:
        """Match `subject` and cache `(plain, queue_groups)`; `()` (falsy) means nobody. A
        one-off subject (a JetStream ack: unique per message) is not cached (subjects.py)."""
        if subject.startswith(ONE_OFF_PREFIXES):
            return self._route_uncached(subject, once=True)
        route = self._route_uncached(subject)
        if len(self.routes) >= _ROUTE_CACHE_MAX:
            self.routes.clear()
        self.routes[subject] = route
        return route

    def match_one_off(self, subject: str) -> Any:
        """`sublist.match_once` of a one-off subject (a PubAck's reply inbox): walked once per
        stem while no subscription can tell two last tokens apart (route_batch_stems.py)."""
        return self.one_off_stems.match(subject)

    def _route_uncached(self, subject: str, once: bool = False) -> tuple:
        """The route of `subject`, not cached here; `once`: not in the sublist's cache either."""
        result = self.match_one_off(subject) if once else self.sublist.match(subject)
        plain, queues = result.plain, result.queues
        if self.deny_filters:
            plain, queues = _without_denied(plain, queues, subject)
        return (plain, queues) if (plain or queues) else ()

    def is_literal(self, subject: str) -> bool:
        ok = self._literal.get(subject)
        if ok is None:
            if len(self._literal) >= _ROUTE_CACHE_MAX:
                self._literal.clear()
            ok = self._literal[subject] = is_valid_literal_subject(subject)
        return ok

    def deliver(self, src: ClientConnection | None, route: tuple, subject: str,
                reply: str | None, headers: bytes | None, payloads: list[bytes] | PayloadRun,
                tail: bytes) -> None:
        """Deliver a run of messages (same subject, reply and tail) to a matched route."""
        plain, queues = route
        if reply is not None and self.reply_trackers:
            _track_replies(plain, reply)
        no_echo = src is not None and not src.echo
        count = len(payloads)
        size = payloads.size if type(payloads) is PayloadRun else len(payloads[0]) if count else 0
        for sub in plain:
            c = sub.client
            if c is src and no_echo:
                continue
            if c is None and not sub.max_msgs:  # internal (JetStream): straight to the callback
                sub.delivered += count
                for payload in payloads:
                    self._call_internal(sub, subject, reply, headers, payload)
                continue
            if c is None or headers is not None:
                for payload in payloads:
                    self._deliver_one(src, sub, subject, reply, headers, payload, tail)
                continue
            pre = sub.prefixes.get(subject)
            if pre is None:
                pre = sub.prefix(subject)
            k = count
            if sub.max_msgs:
                k = min(count, sub.max_msgs - sub.delivered)
            c.out_msgs += k
            c.out_bytes += k * size
            out = c.out
            if k == 1:
                out += pre
                out += tail
                out += payloads[0]
                out += _CRLF
            elif k == count and type(payloads) is PayloadRun:
                out += payloads.fanout(pre + tail)
            elif k > 0:
                pre_tail = pre + tail
                out += pre_tail
                out += (_CRLF + pre_tail).join(payloads if k == count else payloads[:k])
                out += _CRLF
            sub.delivered += k
            if len(out) > c.stall_bytes:
                self._pressure(src, c)
            if not c.dirty:
                c.dirty = True
                self.dirty.append(c)
            if sub.max_msgs and sub.delivered >= sub.max_msgs:
                self.remove_subscription(sub)
        if queues:
            for group in queues:
                members = group
                if no_echo:
                    members = tuple(s for s in group if s.client is not src)
                    if not members:
                        continue
                for payload in payloads:
                    sub = members[self.rng.randrange(len(members))] if len(members) > 1 else members[0]
                    if sub.max_msgs and sub.delivered >= sub.max_msgs:  # used up within this run
                        members = tuple(s for s in members if not s.max_msgs or s.delivered < s.max_msgs)
                        if not members:
                            break
                        sub = members[self.rng.randrange(len(members))]
                    self._deliver_one(src, sub, subject, reply, headers, payload, tail)

    def _deliver_one(self, src: ClientConnection | None, sub: Subscription, subject: str,
                     reply: str | None, headers: bytes | None, payload: bytes,
                     tail: bytes) -> None:
        """Deliver one message to one subscription: internal, with headers, or stripping
        headers for a client that did not ask for them."""
        if sub.max_msgs and sub.delivered >= sub.max_msgs:
            return
        sub.delivered += 1
        if sub.max_msgs and sub.delivered >= sub.max_msgs:
            self.remove_subscription(sub)
        c = sub.client
        if c is None:
            self._call_internal(sub, subject, reply, headers, payload)
            return
        if c.closing:
            return
        c.out_msgs += 1
        c.out_bytes += len(payload)
        if reply is not None and c.perms is not None:
            c.perms.reply_received(reply, c.now_ms())
        if headers is None:
            frame = sub.prefix(subject) + tail + payload + _CRLF
        elif c.headers:
            frame = b"H" + sub.prefix(subject) + tail + headers + payload + _CRLF
        else:
            frame = sub.prefix(subject) + _tail(reply, None, payload) + payload + _CRLF
        c.out += frame
        if len(c.out) > c.stall_bytes:
            self._pressure(src, c)
        if not c.dirty:
            c.dirty = True
            self.dirty.append(c)

    def _call_internal(self, sub: Subscription, subject: str, reply: str | None,
                       headers: bytes | None, payload: bytes) -> None:
        try:
            sub.callback(subject, reply, headers, payload)
        except Exception as exc:  # noqa: BLE001 - an internal handler bug must not kill routing
            self.log.error("server.internal_callback_failed", subject=subject, error=repr(exc),
                           exc_info=True)

    def _pressure(self, src: ClientConnection | None, c: ClientConnection) -> None:
        """`c` has a lot pending: close it if over the limit, else stall the publisher."""
        if len(c.out) > c.max_pending_bytes:
            c.slow_consumer()
        elif src is not None and src is not c:
            src.stall_on = c

    def no_responders(self, src: ClientConnection, subject: str, reply: str) -> None:
        """Send the 503 status to the requester's own subscriptions on `reply`."""
        result = self.sublist.match(reply)
        headers = p.no_responders_headers(subject)
        tail = _tail(None, headers, b"")
        targets = list(result.plain) + [s for group in result.queues for s in group]
        for sub in targets:
            if sub.client is src:
                self._deliver_one(src, sub, reply, None, headers, b"", tail)
                return

    def flush_dirty(self) -> None:
        dirty = self.dirty
        if dirty:
            for c in dirty:
                c.dirty = False
                c.flush_now()
            dirty.clear()


def _without_denied(plain: Any, queues: Any, subject: str) -> tuple:
    """Drop subscriptions whose connection's subscribe deny list forbids `subject` (a wildcard
    subscription overlapping a denied subject, as nats-server filters on delivery)."""
    def ok(sub: Subscription) -> bool:
        perms = sub.client.perms if sub.client is not None else None
        return perms is None or not perms.delivery_denied(sub.subject, subject)
    plain = tuple(s for s in plain if ok(s))
    queues = tuple(g for g in (tuple(s for s in group if ok(s)) for group in queues) if g)
    return plain, queues


def _track_replies(plain: Any, reply: str) -> None:
    """allow_responses: a message with `reply` reaches these connections; let them answer."""
    for sub in plain:
        c = sub.client
        if c is not None and c.perms is not None:
            c.perms.reply_received(reply, c.now_ms())


def _tail(reply: str | None, headers: bytes | None, payload: bytes) -> bytes:
    """End of a MSG/HMSG control line: ` [reply] <size>` or ` [reply] <hdr> <total>`, CRLF."""
    rep = b" " + reply.encode("utf-8", "surrogateescape") if reply else b""
    if headers is None:
        return rep + b" %d\r\n" % len(payload)
    return rep + b" %d %d\r\n" % (len(headers), len(headers) + len(payload))

"""One route connection to a peer server: reader, writer and ping tasks over a trio stream.

How it works: the accepting side sends its route INFO at once and expects the peer's CONNECT
first, then its INFO; the soliciting side sends CONNECT and its INFO at once and waits for the
peer's INFO (protocol.md 2.1). The first acceptable INFO asks the cluster manager to register
the route (which may refuse it as a duplicate). Once registered, RS+/RS- update this route's
remote-interest table (a Sublist per route: `plain_marker` for plain interest, a mutable
`QueueWeight` per (subject, queue)), RMSG/HMSG (message tuples) go to the manager for local
delivery, and later INFOs either update this peer (same server_id) or are gossip about another
server. A CONNECT carrying `lang` (a client on the route port) is refused with nats-server's
`-ERR 'attempted to connect to route port'`; with route authorization, a wrong user/password
gets `-ERR 'Authorization Violation'`.

Writes are coalesced as for clients: frames are appended to `out` and the writer sends the
whole buffer with one `send_all`. Forwarded publishes and PubAcks use `send_later`: the route
joins the server's dirty list and, at the end of the read that produced them, `flush_now`
writes everything with one non-blocking write (no task switch; the writer takes any rest).
The reader hands each read's run of messages to the manager in one call (`remote_msgs`). The outbound buffer is bounded (`OUT_BYTES_MAX`): a peer that
cannot keep up is disconnected and reconnects, re-sending its interest, rather than growing
memory without limit; before that, a client publisher whose message left a route with more
than `STALL_BYTES` pending waits (bounded, as for slow clients) for the route's writer to
drain (`wait_drained`, duck-typed like `ClientConnection.wait_drained`). No exception caused
by peer bytes leaves `run()`.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio.lowlevel import wait_readable

from natsd import protocol as p
from natsd import route_protocol as rp
from natsd.route_batch_stems import OneOffStems
from natsd.sublist import Sublist

if TYPE_CHECKING:
    from natsd.cluster import Cluster

RECEIVE_BYTES = 256 * 1024
OUT_BYTES_MAX = 256 * 1024 * 1024
STALL_BYTES = 8 * 1024 * 1024  # publishers feeding a route past this wait (bounded) for it
HANDSHAKE_TIMEOUT_S = 5.0
WRITE_DEADLINE_S = 10.0


class RouteState(enum.Enum):
    AWAIT_CONNECT = "await connect"  # accepted, nothing received yet
    AWAIT_INFO = "await info"
    REGISTERED = "registered"
    CLOSED = "closed"


@attrs.define(eq=False)
class QueueWeight:
    """A peer's queue-group interest on one subject: `weight` members over there."""

    weight: int = 1


class _Plain:
    """The one item stored for plain remote interest (identity only)."""

    __slots__ = ()


plain_marker = _Plain()


def _socket_fd(stream: Any) -> int:
    """The socket's file descriptor, or -1 for a stream that is not a plain socket (TLS)."""
    try:
        return int(stream.socket.fileno())
    except (AttributeError, OSError, TypeError, ValueError):
        return -1


class RouteConnection:
    def __init__(self, cluster: Cluster, stream: trio.abc.Stream, *, solicited: bool,
                 url: str | None = None) -> None:
        self.cluster = cluster
        self.stream = stream
        self.solicited = solicited
        self.url = url
        self.state = RouteState.AWAIT_INFO if solicited else RouteState.AWAIT_CONNECT
        self.parser = rp.RouteParser()
        self.out = bytearray()
        self.peer_id = ""
        self.peer_info: dict[str, Any] = {}
        self.remote: Sublist = Sublist()
        # one-off subjects (reply inboxes): the peer's interest kept per stem while no entry can
        # tell two last tokens apart (route_batch_stems.py); dropped on any interest change
        self.one_off_stems = OneOffStems(self.remote.match_once)
        self.queue_weights: dict[tuple[str, str], QueueWeight] = {}
        self.log = cluster.log.bind(route_solicited=solicited, url=url)
        self.pings_out = 0
        self.finished = trio.Event()
        self.registered_once = False
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._scope = trio.CancelScope()
        self._flush_then_cancel = False
        self._handshake_done = trio.Event()
        self.dirty = False  # in the server's dirty list: `flush_now` at the end of the read
        self.sending = False  # the writer task is inside send_all
        self._fd = _socket_fd(stream)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the connection closes; never raises (except Cancelled)."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    if self.solicited:
                        self.send(p.encode_connect(self.cluster.route_connect(self.url)))
                    self.send(p.encode_info(self.cluster.route_info()))
                    nursery.start_soon(self._handshake_timer)
                    nursery.start_soon(self._ping_loop)
                    await self._read_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.log.debug("route.io_error", error=repr(exc))
        except Exception as exc:  # noqa: BLE001 - a bad peer must never kill the server
            self.log.error("route.crashed", error=repr(exc), exc_info=True)
        finally:
            was = self.state
            self.state = RouteState.CLOSED
            if was is RouteState.REGISTERED:
                self.cluster.route_closed(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            self.finished.set()
            self.log.debug("route.closed", peer=self.peer_id)

    def close(self, reason: str, err_text: str | None = None) -> None:
        """Close: optionally send `-ERR '<err_text>'` first (flushed), then drop the socket."""
        if self.state is RouteState.CLOSED or self._flush_then_cancel:
            return
        self.log.info("route.closing", peer=self.peer_id, reason=reason)
        if err_text is not None:
            self.out += p.encode_err(err_text)
            self._flush_then_cancel = True
            self._wake.set()
        else:
            self._scope.cancel()
        if self.state is RouteState.REGISTERED:
            self.state = RouteState.CLOSED
            self.cluster.route_closed(self)

    def send(self, data: bytes) -> None:
        if self.state is RouteState.CLOSED:
            return
        self.out += data
        if len(self.out) > OUT_BYTES_MAX:
            self.out = bytearray()
            self.close("slow route")
            return
        self._wake.set()

    def send_later(self, data: bytes) -> None:
        """`send`, but written when the server flushes its dirty connections (at the end of
        the read that produced it): many frames of one read leave in one write."""
        if self.state is RouteState.CLOSED:
            return
        self.out += data
        if len(self.out) > OUT_BYTES_MAX:
            self.out = bytearray()
            self.close("slow route")
            return
        if not self.dirty:
            self.dirty = True
            self.cluster.server.dirty.append(self)

    def flush_now(self) -> None:
        """Write pending output straight to the socket if the writer task is idle (as
        `ClientConnection.flush_now`: one non-blocking write, no task switch); whatever the
        kernel does not take right away is left to the writer task."""
        out = self.out
        if (self.sending or self._fd < 0 or not out or self.state is RouteState.CLOSED
                or self._flush_then_cancel):
            self._wake.set()
            return
        try:
            sent = os.write(self._fd, out)
        except BlockingIOError:
            sent = 0
        except OSError:  # broken connection: the writer (or reader) finds out and closes
            self._wake.set()
            return
        if sent == len(out):
            self.out = bytearray()
            self._drained.set()
        else:
            del out[:sent]
            self._wake.set()

    # -- reader -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self._receive_fd if self._fd >= 0 else self.stream.receive_some
        while True:
            data = await receive(RECEIVE_BYTES)
            if not data:
                self.close("peer closed")
                return
            try:
                self._process(self.parser.feed(data))
            finally:
                self.cluster.server.flush_dirty()
            if self.state is RouteState.CLOSED or self._flush_then_cancel:
                await trio.sleep_forever()  # the writer flushes, then cancels the scope

    async def _receive_fd(self, max_bytes: int) -> bytes:
        """`receive_some` of a plain TCP socket: wait until readable, then one read (trio's
        version tries a recv first, which fails with EAGAIN whenever the peer is quiet)."""
        fd = self._fd
        while True:
            await wait_readable(fd)
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:  # spurious wakeup
                continue

    def _process(self, ops: list) -> None:
        """Handle the ops of one read in order; consecutive messages go to the manager as one
        batch (`remote_msgs`: a subject matched once per run, one flush per read)."""
        run: list = []
        for op in ops:
            if type(op) is tuple:
                run.append(op)
                continue
            if run:
                if self.state is RouteState.REGISTERED:
                    self.cluster.remote_msgs(self, run)
                run = []
            self._handle(op)
            if self.state is RouteState.CLOSED or self._flush_then_cancel:
                return
        if run and self.state is RouteState.REGISTERED:
            self.cluster.remote_msgs(self, run)

    def _handle(self, op: Any) -> None:
        kind = type(op)
        registered = self.state is RouteState.REGISTERED
        if kind is tuple:  # a message (run): see route_protocol
            if registered:
                self.cluster.remote_msg(self, op)
        elif kind is rp.RouteSub:
            if registered:
                self._remote_sub(op)
        elif kind is rp.RouteUnsub:
            if registered:
                self._remote_unsub(op)
        elif kind is p.Ping:
            self.send(p.PONG_BYTES)
        elif kind is p.Pong:
            self.pings_out = 0
        elif kind is p.Connect:
            self._on_connect(op.options)
        elif kind is p.Info:
            self._on_info(op.info)
        elif kind is p.Err:
            self.log.warning("route.peer_error", error=op.text)
            self.close("peer error")
        elif kind is p.ProtocolError:
            self.close("protocol error", op.message)

    def _on_connect(self, options: dict) -> None:
        if self.state is not RouteState.AWAIT_CONNECT:
            return  # a repeated CONNECT changes nothing
        rejection = rp.check_connect(options, self.cluster.name, self.cluster.dynamic,
                                     self.cluster.credentials)
        if rejection is not None:
            with_err = (rp.Rejection.CLIENT_ON_ROUTE_PORT, rp.Rejection.AUTHORIZATION)
            err = rejection.value if rejection in with_err else None
            self.cluster.handshake_rejected(self, rejection)
            self.close(rejection.value, err)
            return
        self.state = RouteState.AWAIT_INFO

    def _on_info(self, info: dict) -> None:
        if self.state is RouteState.AWAIT_CONNECT:
            self.close("INFO before CONNECT")
        elif self.state is RouteState.AWAIT_INFO:
            rejection = rp.check_info(info, self.cluster.server.server_id, self.cluster.name,
                                      self.cluster.dynamic)
            self.peer_id = str(info.get("server_id", ""))
            if rejection is not None:
                self.cluster.handshake_rejected(self, rejection)
                self.close(rejection.value)
                return
            self.peer_info = info
            self._handshake_done.set()
            if self.cluster.register(self):
                self.state = RouteState.REGISTERED
                self.registered_once = True
                self.log = self.log.bind(peer=self.peer_id)
                self.cluster.route_registered(self)
            else:
                self.close("duplicate route")
        elif info.get("server_id") == self.peer_id:
            self.peer_info = {**self.peer_info, **info}
            self.cluster.peer_info_updated(self)
        else:
            self.cluster.gossip_received(info)

    # -- remote interest --------------------------------------------------------------------

    def _remote_sub(self, op: rp.RouteSub) -> None:
        if op.account != rp.GLOBAL_ACCOUNT:
            return
        try:
            if op.queue is None:
                added = not self.remote.interest_count(op.subject)
                self.remote.insert(op.subject, None, plain_marker)
            else:
                key = (op.subject, op.queue)
                entry = self.queue_weights.get(key)
                added = entry is None
                if entry is None:
                    entry = self.queue_weights[key] = QueueWeight(max(op.weight, 1))
                    self.remote.insert(op.subject, op.queue, entry)
                entry.weight = max(op.weight, 1)
        except ValueError:
            self.log.debug("route.bad_interest", subject=op.subject, queue=op.queue)
            return
        if added:
            self.one_off_stems.entry_added(op.subject)
        self.one_off_stems.clear()  # a queue weight changed, or nothing: drop kept results
        self.cluster.remote_interest_changed()

    def _remote_unsub(self, op: rp.RouteUnsub) -> None:
        if op.account != rp.GLOBAL_ACCOUNT:
            return
        removed = False
        if op.queue is None:
            removed = self.remote.remove(op.subject, None, plain_marker)
        else:
            entry = self.queue_weights.pop((op.subject, op.queue), None)
            if entry is not None:
                removed = self.remote.remove(op.subject, op.queue, entry)
        if removed:
            self.one_off_stems.entry_removed(op.subject)
        self.one_off_stems.clear()
        self.cluster.remote_interest_changed()

    def interest_result_once(self, subject: str) -> Any:
        """The remote Sublist's `match_once` result for a one-off subject (a PubAck's inbox),
        walked once per stem while the peer's entries allow it (route_batch_stems.py)."""
        return self.one_off_stems.match(subject)

    def interest(self, subject: str, once: bool = False) -> tuple[bool, dict[str, int]]:
        """(has plain interest, {queue name: weight}) of this peer for a published subject;
        `once`: a subject that will not repeat (not admitted to the sublist cache)."""
        result = self.interest_result_once(subject) if once else self.remote.match(subject)
        if not result.queues:
            return bool(result.plain), {}
        weights: dict[str, int] = {}
        for name, members in zip(result.queue_names, result.queues, strict=True):
            weights[name] = weights.get(name, 0) + sum(m.weight for m in members)
        return bool(result.plain), weights

    # -- writer and timers ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self.out:
                if self._flush_then_cancel:
                    break
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            data, self.out = self.out, bytearray()
            self.sending = True
            try:
                with trio.move_on_after(WRITE_DEADLINE_S) as scope:
                    await self.stream.send_all(data)
            finally:
                self.sending = False
            if scope.cancelled_caught:
                self.log.info("route.slow", reason="write deadline")
                break
            if len(self.out) < STALL_BYTES:
                self._drained.set()
        self._drained.set()
        self._scope.cancel()

    async def wait_drained(self, timeout_s: float) -> None:
        """Wait (bounded) until the outbound buffer is below the stall mark or we close."""
        with trio.move_on_after(timeout_s):
            while len(self.out) >= STALL_BYTES and self.state is not RouteState.CLOSED:
                if self._drained.is_set():
                    self._drained = trio.Event()
                await self._drained.wait()

    async def _handshake_timer(self) -> None:
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await self._handshake_done.wait()
            return
        self.close("handshake timeout")

    async def _ping_loop(self) -> None:
        interval_s = self.cluster.ping_interval_s
        limit = self.cluster.server.options.max_pings_out
        while True:
            await trio.sleep(interval_s)
            if self.pings_out + 1 > limit:
                self.close("stale route", "Stale Connection")
                return
            self.pings_out += 1
            self.send(p.PING_BYTES)

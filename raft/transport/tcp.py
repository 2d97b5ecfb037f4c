"""TCP transport between servers: one connection per peer pair carries every Raft group.

Connections: the node with the smaller id dials, the other accepts, and both use the connection
in both directions. The dialer sends HELLO with its id, the acceptor answers with its own (so a
dialer that reached the wrong server hangs up). A new connection from a peer replaces the old
one. The dialer reconnects with exponential backoff and seeded jitter.

Sending: while a peer's connection is idle (nothing queued, no write in progress) `send_nowait`
writes the call's messages straight to the non-blocking socket, coalesced and packed as below;
whatever the kernel does not take at once stays with the connection for its writer task, which
then also takes every later message, so bytes and messages keep their order. Otherwise each peer
has a bounded outbound deque (the oldest message is dropped when full; Raft resends). One writer
task per live connection drains everything queued, drops a heartbeat when a newer one of the
same group and type is in the same drain, and packs the rest into as few BATCH frames as the
frame size allows, so the heartbeats of a thousand groups ticking together go out as one frame
and one `send_all`.

Receiving: a reader task splits frames (codec.FrameBuffer) and hands each frame's messages to
the receiver set with `set_receiver` (the Raft host steps them at once: no channel hop, no task
switch), or else puts them into the bounded `incoming` channel, dropping when it is full. With a
`settle` callback the reader awaits it once a read's messages were handed over, before reading
again (the host handles the Readies they made there when its ready loop is idle).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections import deque
from collections.abc import Sequence

import attrs
import structlog
import trio

from raft.transport.base import INCOMING_QUEUE_MAX, Receiver, Settle, Transport, deliver_nowait
from raft.transport.codec import (
    Batch,
    CodecError,
    FrameBuffer,
    Hello,
    decode_frame,
    encode_batch,
    encode_hello,
)
from raft.types import Message, MessageType, NodeId

log = structlog.get_logger("raft.transport.tcp")

Address = tuple[str, int]
_HEARTBEATS = (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
FRAME_PAYLOAD_TARGET_BYTES = 1 << 20
DRAIN_MESSAGES_MAX = 20_000


@attrs.define
class TcpStats:
    frames_sent: int = 0
    messages_sent: int = 0
    direct_writes: int = 0  # send_nowait calls written to the socket without the writer task
    messages_received: int = 0
    dropped: int = 0
    connects: int = 0


@attrs.define
class _Conn:
    """One live connection's write side. `pending` holds the unsent tail of a direct write (bytes
    of this connection only: a replacing connection starts empty); `writing` is set while the
    writer task is inside `send_all`, when nothing else may write to the socket."""

    stream: trio.SocketStream
    pending: bytes = b""
    writing: bool = False
    buf: FrameBuffer | None = None  # the reader's, for poll_nowait


@attrs.define
class _PeerLink:
    peer: NodeId
    queue: deque[Message]
    wakeup: trio.Event = attrs.Factory(trio.Event)
    connection: trio.CancelScope | None = None
    conn: _Conn | None = None


def coalesce(msgs: Sequence[Message]) -> list[Message]:
    """Drop a heartbeat (without context) when a later one of the same group and type follows."""
    seen: set[tuple[MessageType, str]] = set()
    keep: list[Message] = []
    for msg in reversed(msgs):
        if msg.type in _HEARTBEATS and not msg.context:
            key = (msg.type, msg.group)
            if key in seen:
                continue
            seen.add(key)
        keep.append(msg)
    keep.reverse()
    return keep


def _weight(msg: Message) -> int:
    size = 48 + len(msg.group) + len(msg.context)
    if msg.entries:
        size += sum(len(e.data) + 16 for e in msg.entries)
    return size + (len(msg.snapshot.data) if msg.snapshot else 0)


def pack_frames(src: NodeId, dst: NodeId, msgs: Sequence[Message]) -> list[bytes]:
    frames, chunk, weight = [], [], 0
    for msg in msgs:
        if chunk and weight + _weight(msg) > FRAME_PAYLOAD_TARGET_BYTES:
            frames.append(encode_batch(src, dst, chunk))
            chunk, weight = [], 0
        chunk.append(msg)
        weight += _weight(msg)
    if chunk:
        frames.append(encode_batch(src, dst, chunk))
    return frames


class TcpTransport(Transport):
    def __init__(
        self,
        node_id: NodeId,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        peers: dict[NodeId, Address] | None = None,
        rng: random.Random | None = None,
        queue_max: int = 10_000,
        backoff_min_s: float = 0.02,
        backoff_max_s: float = 1.0,
        handshake_timeout_s: float = 5.0,
    ) -> None:
        self.node_id = node_id
        self.host, self.port = host, port
        self._peers: dict[NodeId, Address] = dict(peers or {})
        self._rng = rng or random.Random(0)
        self.queue_max = queue_max
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.handshake_timeout_s = handshake_timeout_s
        self._inbox, self.incoming = trio.open_memory_channel[Message](INCOMING_QUEUE_MAX)
        self._receiver: Receiver | None = None
        self._settle: Settle | None = None
        self._links: dict[NodeId, _PeerLink] = {}
        self._dialing: set[NodeId] = set()
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self.stats = TcpStats()
        self._log = log.bind(node=node_id)

    # ---- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TcpTransport:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        try:
            serve = functools.partial(trio.serve_tcp, self._handle_inbound, self.port)
            listeners = await self._nursery.start(functools.partial(serve, host=self.host))
        except BaseException:
            self._nursery.cancel_scope.cancel()
            await self._stack.aclose()
            raise
        self.port = listeners[0].socket.getsockname()[1]
        for peer in list(self._peers):
            self._maybe_dial(peer)
        return self

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._inbox.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
        await self._stack.__aexit__(None, None, None)

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def set_peer(self, peer: NodeId, address: Address) -> None:
        """Add or move a peer; the lower id of the pair dials."""
        self._peers[peer] = address
        self._maybe_dial(peer)

    def set_receiver(self, receiver: Receiver | None, settle: Settle | None = None) -> bool:
        self._receiver = receiver
        self._settle = settle if receiver is not None else None
        return True

    def connected_peers(self) -> list[NodeId]:
        return sorted(p for p, link in self._links.items() if link.connection is not None)

    # ---- sending --------------------------------------------------------------------------

    def _link(self, peer: NodeId) -> _PeerLink:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _PeerLink(peer, deque(maxlen=self.queue_max))
        return link

    def send_nowait(self, msgs: Sequence[Message]) -> None:
        direct: dict[NodeId, list[Message]] = {}
        touched = set()
        for msg in msgs:
            if msg.dst == self.node_id:
                self.stats.dropped += int(not deliver_nowait(self._inbox, msg))
                continue
            if msg.dst in direct:
                direct[msg.dst].append(msg)
                continue
            link = self._link(msg.dst)
            conn = link.conn
            if conn is not None and not link.queue and not conn.pending and not conn.writing:
                direct[msg.dst] = [msg]
                continue
            if len(link.queue) == link.queue.maxlen:
                self.stats.dropped += 1
            link.queue.append(msg)
            touched.add(msg.dst)
        for peer, batch in direct.items():
            if not self._write_direct(self._links[peer], batch):
                touched.add(peer)
        for peer in touched:
            self._links[peer].wakeup.set()

    def _write_direct(self, link: _PeerLink, batch: list[Message]) -> bool:
        """Write `batch` to the idle connection at once; True if the kernel took every byte.
        Otherwise the rest is left for the writer task (which the caller wakes): the unsent
        bytes, or the messages themselves if nothing was written (its `send_all` then meets any
        socket error and ends the connection, as if it had written them)."""
        conn = link.conn
        assert conn is not None
        msgs = coalesce(batch)
        if len(msgs) > self.queue_max:  # as bounded as the queue: the oldest are dropped
            self.stats.dropped += len(msgs) - self.queue_max
            msgs = msgs[-self.queue_max :]
        frames = pack_frames(self.node_id, link.peer, msgs)
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        fd = conn.stream.socket.fileno()
        try:
            sent = os.write(fd, data) if fd >= 0 else 0
        except OSError:  # BlockingIOError (the buffer is full) or a broken connection
            sent = 0
        if sent == 0:
            link.queue.extend(msgs)
            return False
        self.stats.direct_writes += 1
        self.stats.frames_sent += len(frames)
        self.stats.messages_sent += len(msgs)
        if sent == len(data):
            return True
        conn.pending = data[sent:]
        return False

    async def _writer(self, link: _PeerLink, conn: _Conn) -> None:
        while True:  # until the connection fails or is replaced (cancelled)
            while not link.queue and not conn.pending:
                link.wakeup = trio.Event()
                await link.wakeup.wait()
            count = min(len(link.queue), DRAIN_MESSAGES_MAX)
            drained = [link.queue.popleft() for _ in range(count)]
            msgs = coalesce(drained)
            frames = pack_frames(self.node_id, link.peer, msgs)
            data, conn.pending = conn.pending + b"".join(frames), b""
            conn.writing = True
            try:
                await conn.stream.send_all(data)
            finally:
                conn.writing = False
            self.stats.frames_sent += len(frames)
            self.stats.messages_sent += len(msgs)

    # ---- receiving ------------------------------------------------------------------------

    async def _reader(self, peer: NodeId, stream: trio.SocketStream, buf: FrameBuffer) -> None:
        """Reads with a non-blocking `os.read` that feeds `buf` before any checkpoint, so a
        `poll_nowait` reading the same socket in between keeps the bytes in order."""
        sock = stream.socket
        while True:  # until EOF or error
            delivered = False
            for payload in buf.frames():
                self._deliver(peer, decode_frame(payload))
                delivered = True
            settle = self._settle
            if delivered and settle is not None and self._receiver is not None:
                with trio.CancelScope(shield=True):  # the receiver's work is never cut halfway
                    await settle()
            await trio.lowlevel.wait_readable(sock)
            try:
                data = os.read(sock.fileno(), 1 << 16)
            except BlockingIOError:  # poll_nowait took it
                continue
            if not data:
                return
            buf.feed(data)

    def writers_idle(self) -> bool:
        for link in self._links.values():
            conn = link.conn
            if link.queue or (conn is not None and (conn.pending or conn.writing)):
                return False
        return True

    def poll_nowait(self) -> bool:
        if self._receiver is None:
            return False
        delivered = False
        for link in list(self._links.values()):
            conn = link.conn
            if conn is None or conn.buf is None:
                continue
            fd = conn.stream.socket.fileno()
            try:
                data = os.read(fd, 1 << 16) if fd >= 0 else b""
            except OSError:  # nothing there (or a failure, which the reader meets)
                continue
            if not data:
                continue  # EOF: the reader sees it too
            conn.buf.feed(data)
            try:
                for payload in conn.buf.frames():
                    self._deliver(link.peer, decode_frame(payload))
                    delivered = True
            except CodecError:
                if link.connection is not None:
                    link.connection.cancel()
        return delivered

    def _deliver(self, peer: NodeId, frame: Hello | Batch) -> None:
        if not isinstance(frame, Batch) or frame.src != peer or frame.dst != self.node_id:
            raise CodecError(f"unexpected frame from {peer}")
        if self._receiver is not None:
            self.stats.messages_received += len(frame.messages)
            self._receiver(frame.messages)
            return
        for msg in frame.messages:
            self.stats.messages_received += 1
            self.stats.dropped += int(not deliver_nowait(self._inbox, msg))

    # ---- connections ----------------------------------------------------------------------

    async def _run_connection(
        self, peer: NodeId, stream: trio.SocketStream, buf: FrameBuffer
    ) -> None:
        link = self._link(peer)
        if link.connection is not None:
            link.connection.cancel()  # the newer connection wins
        scope = link.connection = trio.CancelScope()
        conn = link.conn = _Conn(stream, buf=buf)
        self.stats.connects += 1
        self._log.info("raft.transport.connected", peer=peer)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_then_cancel, peer, stream, buf, scope)
                    nursery.start_soon(self._writer, link, conn)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError, CodecError) as eg:
            self._log.info("raft.transport.disconnected", peer=peer, error=str(eg.exceptions[0]))
        finally:
            if link.connection is scope:
                link.connection = None
            if link.conn is conn:
                link.conn = None
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_then_cancel(
        self, peer: NodeId, stream: trio.SocketStream, buf: FrameBuffer, scope: trio.CancelScope
    ) -> None:
        await self._reader(peer, stream, buf)
        scope.cancel()  # EOF: stop the writer too

    async def _read_hello(self, stream: trio.SocketStream, buf: FrameBuffer) -> Hello:
        with trio.fail_after(self.handshake_timeout_s):
            for _ in range(10_000):
                for payload in buf.frames():
                    frame = decode_frame(payload)
                    if not isinstance(frame, Hello):
                        raise CodecError("expected HELLO")
                    return frame
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError("EOF during handshake")
                buf.feed(data)
        raise CodecError("no HELLO")

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        buf = FrameBuffer()
        try:
            hello = await self._read_hello(stream, buf)
            await stream.send_all(encode_hello(Hello(self.node_id)))
        except (trio.BrokenResourceError, trio.TooSlowError, OSError, CodecError) as exc:
            self._log.info("raft.transport.handshake_failed", error=str(exc))
            await stream.aclose()
            return
        await self._run_connection(hello.node_id, stream, buf)

    def _maybe_dial(self, peer: NodeId) -> None:
        if peer == self.node_id or self.node_id > peer or peer in self._dialing:
            return
        if self._nursery is not None:
            self._dialing.add(peer)
            self._nursery.start_soon(self._dial_loop, peer)

    async def _dial_loop(self, peer: NodeId) -> None:
        backoff_s = self.backoff_min_s
        while True:  # until the transport closes (cancelled)
            stream = await self._connect(peer)
            if stream is not None:
                backoff_s = self.backoff_min_s
                await self._run_connection(peer, *stream)
            jitter = 0.5 + self._rng.random()
            await trio.sleep(backoff_s * jitter)
            backoff_s = min(self.backoff_max_s, backoff_s * 2)

    async def _connect(self, peer: NodeId) -> tuple[trio.SocketStream, FrameBuffer] | None:
        host, port = self._peers[peer]
        buf = FrameBuffer()
        try:
            with trio.fail_after(self.handshake_timeout_s):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError):
            return None
        try:
            await stream.send_all(encode_hello(Hello(self.node_id)))
            hello = await self._read_hello(stream, buf)
            if hello.node_id != peer:
                raise CodecError(f"dialed {peer} but reached {hello.node_id}")
        except (trio.BrokenResourceError, trio.TooSlowError, OSError, CodecError) as exc:
            self._log.info("raft.transport.handshake_failed", peer=peer, error=str(exc))
            await stream.aclose()
            return None
        return stream, buf

"""Consumers on one server: pull requests, push delivery, acks, redelivery, heartbeats, reaping.

How it works: each `ConsumerRuntime` runs one trio task (`run`). The task loops: handle timers
(expired pull requests get `408 Request Timeout`, overdue acks are queued for redelivery, idle
heartbeats, flow control, inactivity reaping), then, if someone can take messages (a waiting
pull request; or, for push, a subscriber on the deliver subject and no unanswered flow-control
request), load the next messages from the store in one worker-thread call and hand them out;
otherwise sleep until kicked (new commit, ack, pull request) or the next timer. Routing callbacks
(acks, pull requests, flow-control replies) only change state and kick; every message the
consumer sends leaves from its own task, in order.

Messages are delivered with their original stream subject to the subscriptions of the deliver
subject (pull: the request's reply inbox), with the v1 ack subject as reply, which is what
nats-py's ordered consumer and object store rely on. The positions live in
`DeliveryState` (delivery_state.py); durable consumers save it in the stream's store.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import structlog
import trio

from jetstream.consumer_config import AckPolicy, ConsumerConfig, DeliverPolicy
from jetstream.config import Retention
from jetstream.delivery_state import ACK_PREFIX, Ack, AckKind, AckTarget, DeliveryState
from jetstream.headers import encode_headers, append_headers
from jetstream.runtime import StreamClosed, StreamRuntime
from jetstream.store.base import StoredMsg, filter_matches
from jetstream.stream import RemoveAcked

_ACK, _NEXT = AckKind.ACK, AckKind.NEXT
LOAD_BATCH_MAX = 256
FC_EVERY_MSGS = 512
FC_EVERY_BYTES = 2 * 1024 * 1024
INTEREST_POLL_NS = 20_000_000
INTEREST_POLL_MAX_NS = 1_000_000_000
NS_PER_S = 1_000_000_000
UNSAVED_ACKS_MAX = 10_000
INLINE_READ_BYTES_MAX = 1 << 20  # a run read on the event loop stops at this many bytes


@attrs.define
class PullRequest:
    reply: str
    batch: int
    max_bytes: int = 0
    expires_ns: int = 0  # absolute deadline, 0 = none
    no_wait: bool = False
    heartbeat_ns: int = 0
    next_heartbeat_ns: int = 0
    delivered: int = 0
    bytes_sent: int = 0


class BadPull(Exception):
    """A pull request the consumer answers with a status line instead of messages."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def parse_pull_request(body: bytes, now_ns: int, reply: str) -> PullRequest:
    text = body.strip()
    if not text:
        return PullRequest(reply=reply, batch=1)
    if text.isdigit():
        return PullRequest(reply=reply, batch=max(int(text), 1))
    try:
        d = json.loads(text)
    except ValueError:
        raise BadPull(400, "Bad Request") from None
    if not isinstance(d, dict):
        raise BadPull(400, "Bad Request")
    try:
        batch = int(d.get("batch") or 1)
        expires = int(d.get("expires") or 0)
        max_bytes = int(d.get("max_bytes") or 0)
        heartbeat = int(d.get("idle_heartbeat") or 0)
    except (TypeError, ValueError):
        raise BadPull(400, "Bad Request") from None
    if heartbeat and expires and heartbeat * 2 > expires:
        raise BadPull(400, "Bad Request - heartbeat value too large")
    return PullRequest(
        reply=reply, batch=max(batch, 1), max_bytes=max(max_bytes, 0),
        expires_ns=now_ns + expires if expires > 0 else 0, no_wait=bool(d.get("no_wait")),
        heartbeat_ns=heartbeat, next_heartbeat_ns=now_ns + heartbeat if heartbeat else 0,
    )


def status_headers(code: int, text: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return encode_headers(extra or [], status=code, description=text)


def deliver_as(server: Any, to: str, subject: str, reply: str | None, headers: bytes | None,
               payload: bytes) -> bool:
    """Send a message to the subscriptions of `to`, showing `subject` on the MSG line.

    Adapter over natsd's routing (its internal client API routes by the message subject, but a
    JetStream delivery must reach the deliver subject's subscribers with the stream subject).
    Returns False when nobody is subscribed. The caller calls `server.flush_dirty()`."""
    route = server.routes.get(to)
    if route is None:
        route = server.route_for(to)
    if not route:
        return False
    server.deliver(None, route, subject, reply, headers, [payload], _tail(reply, headers, payload))
    return True


def _tail(reply: str | None, headers: bytes | None, payload: bytes) -> bytes:
    rep = b" " + reply.encode() if reply else b""
    if headers is None:
        return rep + b" %d\r\n" % len(payload)
    return rep + b" %d %d\r\n" % (len(headers), len(headers) + len(payload))


def _num_pending(store: Any, after_seq: int, filters: tuple[str, ...] | None) -> int:
    """Messages after `after_seq` matching `filters`; without a filter the store can often
    answer from its counters instead of counting rows (a count costs a row per message)."""
    if not filters:
        return store.num_after(after_seq)
    return store.num_pending(after_seq, filters)


def _count_after(store: Any, after_seq: int) -> int:
    return store.num_after(after_seq)


async def _wait_any(a: trio.Event, b: trio.Event) -> None:
    """Until either event is set."""
    if a.is_set() or b.is_set():
        return

    async def wait(event: trio.Event, done: trio.CancelScope) -> None:
        await event.wait()
        done.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, a, nursery.cancel_scope)
        nursery.start_soon(wait, b, nursery.cancel_scope)


def has_interest(server: Any, subject: str) -> bool:
    route = server.routes.get(subject)
    if route is None:
        route = server.route_for(subject)
    return bool(route)


class ConsumerRuntime:
    """One consumer of one stream; see the module docstring."""

    def __init__(self, stream: StreamRuntime, name: str, config: ConsumerConfig, created_ns: int,
                 server: Any, clock_ns: Callable[[], int], on_reap: Callable[[Any], None],
                 random_token: Callable[[], str]) -> None:
        self.stream = stream
        self.name = name
        self.config = config
        self.created_ns = created_ns
        self.server = server
        self.clock_ns = clock_ns
        self.on_reap = on_reap
        self.random_token = random_token
        self.log = structlog.get_logger("jetstream").bind(stream=stream.name, consumer=name)
        self.state = DeliveryState(
            ack_wait_ns=config.ack_wait_ns, max_deliver=config.max_deliver,
            acks=config.ack_policy is not AckPolicy.NONE, ack_all=config.ack_policy is AckPolicy.ALL,
            backoff_ns=config.backoff_ns,
        )
        self.filters = config.filters()
        self.waiting: deque[PullRequest] = deque()
        self.outbox: list[tuple[str, str | None, bytes | None, bytes]] = []
        self.to_remove: list[int] = []
        self.kick_event = trio.Event()
        now = clock_ns()
        self.last_active_ns = now
        self.last_sent_ns = now
        self.fc_outstanding: str | None = None
        self.fc_msgs = 0
        self.fc_bytes = 0
        self.dirty = False
        self.deleted = False
        # Held while the stream's leadership is handed over (jetstream/cluster.py): nothing is
        # sent, so the state committed just before the handover is the state the next leader
        # resumes from.
        self.held = False
        # Acks applied here since the last committed save, as (ack number, (subject, reply,
        # payload)); a leader that loses leadership forwards them to the next one.
        self.unsaved_acks: deque[tuple[int, tuple[str, str | None, bytes]]] = deque()
        self.acks_seen = 0
        self.paused_until_ns = 0
        self.no_interest_since_ns: int | None = None

    # -- info -----------------------------------------------------------------------------------
    @property
    def durable(self) -> bool:
        return bool(self.config.durable_name)

    def wants(self, subject: str) -> bool:
        return filter_matches(self.filters, subject)

    def push_bound(self) -> bool:
        return self.config.is_push and has_interest(self.server, self.config.deliver_subject)

    def kick(self) -> None:
        self.kick_event.set()

    def pause(self, until_ns: int) -> None:
        """Deliver nothing until `until_ns` (0 or a past time resumes)."""
        self.paused_until_ns = until_ns
        self.dirty = True
        self.kick()

    def reset(self, seq: int) -> int:
        """Forget deliveries: restart at `seq` (or just above the ack floor); returns the
        stream sequence delivery restarts from."""
        st = self.state
        start = seq if seq > 0 else st.ack_floor_stream + 1
        st.pending.clear()
        st.due.clear()
        st.lps.clear()
        st.consumer_seq = st.ack_floor_consumer = st.num_redelivered = 0
        st.cursor = st.ack_floor_stream = st.last_delivered_stream = start - 1
        self.dirty = True
        self.kick()
        return start

    # -- start position -------------------------------------------------------------------------
    def start_position(self, store: Any) -> None:
        """Set the cursor from the deliver policy (runs against the store, in a worker thread)."""
        cfg, st = self.config, self.state
        filters = self.filters or None
        policy = cfg.deliver_policy
        last_seq = store.state().last_seq
        if policy is DeliverPolicy.NEW:
            st.skip_to(last_seq)
        elif policy is DeliverPolicy.LAST:
            last = store.load_last_by_subject(filters or ">")
            st.skip_to((last.seq - 1) if last else last_seq)
        elif policy is DeliverPolicy.BY_START_SEQUENCE:
            st.skip_to(cfg.opt_start_seq - 1)
        elif policy is DeliverPolicy.BY_START_TIME:
            seq = store.seq_for_time(cfg.opt_start_time_ns or 0)
            st.skip_to((seq - 1) if seq else last_seq)
        elif policy is DeliverPolicy.LAST_PER_SUBJECT:
            st.lps = deque(store.last_seqs_per_subject(filters))
            st.skip_to(last_seq)
        st.ack_floor_stream = st.cursor

    def num_pending(self, store: Any) -> int:
        """Matching messages not yet delivered (works on the reader or the writer store)."""
        return len(self.state.lps) + _num_pending(store, self.state.cursor, self.filters or None)

    # -- callbacks (never block) --------------------------------------------------------------------
    def on_pull(self, body: bytes, reply: str | None) -> None:
        if not reply:
            return
        now = self.clock_ns()
        self.last_active_ns = now
        try:
            self._check_pull_allowed()
            req = parse_pull_request(body, now, reply)
            self._check_pull_limits(req, now)
        except BadPull as bad:
            self.outbox.append((reply, None, status_headers(bad.code, bad.text), b""))
            self.kick()
            return
        self.waiting.append(req)
        self.kick()

    def _check_pull_allowed(self) -> None:
        if self.config.is_push:
            raise BadPull(409, "Consumer is push based")
        if len(self.waiting) >= self.config.max_waiting > 0:
            raise BadPull(409, "Exceeded MaxWaiting")

    def _check_pull_limits(self, req: PullRequest, now: int) -> None:
        cfg = self.config
        if cfg.max_batch > 0 and req.batch > cfg.max_batch:
            raise BadPull(409, f"Exceeded MaxRequestBatch of {cfg.max_batch}")
        if cfg.max_bytes > 0 and req.max_bytes > cfg.max_bytes:
            raise BadPull(409, f"Exceeded MaxRequestMaxBytes of {cfg.max_bytes}")
        if cfg.max_expires_ns > 0 and req.expires_ns and req.expires_ns - now > cfg.max_expires_ns:
            raise BadPull(409, f"Exceeded MaxRequestExpires of {cfg.max_expires_ns // 1_000_000}ms")

    def on_ack(self, target: AckTarget, ack: Ack, reply: str | None) -> None:
        self.last_active_ns = now = self.clock_ns()
        st, sseq, kind = self.state, target.stream_seq, ack.kind
        if kind is _ACK or kind is _NEXT:
            done = st.ack(sseq)
            if done and self.stream.config.retention is not Retention.LIMITS:
                self.to_remove.extend(done)
        elif kind is AckKind.NAK:
            st.nak(sseq, ack.delay_ns, now)
        elif kind is AckKind.PROGRESS:
            st.progress(sseq, now)
        elif kind is AckKind.TERM:
            if st.term(sseq) and self.stream.config.retention is Retention.WORKQUEUE:
                self.to_remove.append(sseq)
        self.dirty = True
        if reply:
            if kind is _NEXT:
                self.on_pull(ack.body, reply)
            else:
                self.outbox.append((reply, None, None, b""))
        self.kick_event.set()

    def on_flow_control(self, subject: str) -> None:
        if subject == self.fc_outstanding:
            self.fc_outstanding = None
            self.fc_msgs = self.fc_bytes = 0
            self.kick()

    # -- the task -------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while not (self.deleted or self.stream.closed):
                self.kick_event = trio.Event()
                changed = self.stream.changed  # taken before reading: a commit after it sets it
                self._flush_outbox()
                await self._flush_removals()
                now = self.clock_ns()
                wake_ns = self._timers(now)
                if self.deleted:
                    return
                waiting_for_messages = self._can_deliver()
                if waiting_for_messages:
                    if await self._deliver_some():
                        continue
                    self._end_no_wait_requests()
                    self._flush_outbox()
                    waiting_for_messages = self._can_deliver()
                with trio.move_on_after(max(wake_ns - self.clock_ns(), 0) / NS_PER_S):
                    if waiting_for_messages:  # a waiting pull request or push: new messages wake us
                        await _wait_any(self.kick_event, changed)
                    else:
                        await self.kick_event.wait()
        except StreamClosed:
            return

    def _flush_outbox(self) -> None:
        if not self.outbox:
            return
        out, self.outbox = self.outbox, []
        for subject, reply, headers, payload in out:
            self.server.publish_internal(subject, reply, headers, payload)

    async def _flush_removals(self) -> None:
        """Acked messages an interest/workqueue stream may drop: workqueue at once, interest
        only when no other consumer still needs them."""
        if not self.to_remove:
            return
        seqs, self.to_remove = tuple(self.to_remove), []
        if self.stream.config.retention is Retention.INTEREST:
            subjects = await self.stream.read(lambda store: {s: m.subject for s in seqs if (m := store.load(s))})
            others = [c for c in self.stream.consumers.values() if c is not self]
            seqs = tuple(s for s, subj in subjects.items() if not any(c.needs(s, subj) for c in others))
        if seqs:
            await self.stream.apply(RemoveAcked(seqs))

    def needs(self, seq: int, subject: str) -> bool:
        """Does this consumer still want message `seq` (not yet delivered, or unacknowledged)?"""
        if not self.wants(subject):
            return False
        st = self.state
        return seq > st.cursor or seq in st.pending or seq in st.lps

    # -- timers ---------------------------------------------------------------------------------------
    def _timers(self, now: int) -> int:
        """Expire requests and acks, send heartbeats, reap; returns when to wake next."""
        wake = now + NS_PER_S
        dropped, next_ack = self.state.expire(now)
        if dropped:
            self.dirty = True
        if self.state.due:
            wake = now
        elif next_ack is not None:
            wake = min(wake, next_ack)
        wake = min(wake, self._expire_requests(now))
        wake = min(wake, self._heartbeats(now))
        wake = min(wake, self._reap(now))
        if self.paused_until_ns > now:
            wake = min(wake, self.paused_until_ns)
        if self.config.is_push and not self.fc_outstanding:
            wake = min(wake, now + self._interest_poll(now))
        return wake

    def _interest_poll(self, now: int) -> int:
        """How soon to look for a subscriber on the deliver subject again: every 20 ms right
        after it went missing (clients subscribe just after creating the consumer), backing off
        with the time it has been missing, up to 1 s."""
        if has_interest(self.server, self.config.deliver_subject):
            self.no_interest_since_ns = None
            return NS_PER_S
        if self.no_interest_since_ns is None:
            self.no_interest_since_ns = now
        missing_ns = now - self.no_interest_since_ns
        return min(max(INTEREST_POLL_NS, missing_ns // 4), INTEREST_POLL_MAX_NS)

    def _expire_requests(self, now: int) -> int:
        wake = now + NS_PER_S
        keep: deque[PullRequest] = deque()
        for req in self.waiting:
            if req.expires_ns and req.expires_ns <= now:
                self._send_status(req.reply, 408, "Request Timeout", req)
                continue
            if not has_interest(self.server, req.reply):  # the requester went away
                continue
            if req.heartbeat_ns and req.next_heartbeat_ns <= now:
                self._send_heartbeat(req.reply)
                req.next_heartbeat_ns = now + req.heartbeat_ns
            for t in (req.expires_ns, req.next_heartbeat_ns):
                if t:
                    wake = min(wake, t)
            keep.append(req)
        self.waiting = keep
        return wake

    def _heartbeats(self, now: int) -> int:
        hb = self.config.idle_heartbeat_ns
        if not (self.config.is_push and hb):
            return now + NS_PER_S
        if now - self.last_sent_ns >= hb:
            self._send_heartbeat(self.config.deliver_subject)
            self.last_sent_ns = now
        return self.last_sent_ns + hb

    def _reap(self, now: int) -> int:
        threshold = self.config.inactive_threshold_ns
        if threshold <= 0:
            return now + NS_PER_S
        if self.config.is_push:
            if self.push_bound():
                self.last_active_ns = now
            poll = now + min(threshold, INTEREST_POLL_NS * 10)
        else:
            if self.waiting:
                self.last_active_ns = now
            poll = now + threshold
        if now - self.last_active_ns >= threshold:
            self.log.info("consumer.reaped", inactive_ns=now - self.last_active_ns)
            self.deleted = True
            self.on_reap(self)
        return poll

    def _send_heartbeat(self, to: str) -> None:
        st = self.state
        extra = [("Nats-Last-Consumer", str(st.consumer_seq)), ("Nats-Last-Stream", str(st.last_delivered_stream))]
        if self.fc_outstanding:
            extra.append(("Nats-Consumer-Stalled", self.fc_outstanding))
        self.server.publish_internal(to, None, status_headers(100, "Idle Heartbeat", extra), b"")

    def _send_status(self, to: str, code: int, text: str, req: PullRequest | None = None) -> None:
        extra = None
        if req is not None and code in (408, 409):
            extra = [("Nats-Pending-Messages", str(req.batch - req.delivered)),
                     ("Nats-Pending-Bytes", str(max(req.max_bytes - req.bytes_sent, 0)))]
        self.server.publish_internal(to, None, status_headers(code, text, extra), b"")

    # -- delivery -----------------------------------------------------------------------------------
    def _can_deliver(self) -> bool:
        st, cfg = self.state, self.config
        if self.held or self.paused_until_ns > self.clock_ns():
            return False
        if st.acks and len(st.pending) >= cfg.max_ack_pending > 0 and not st.due:
            return False
        if cfg.is_push:
            if self.fc_outstanding:
                return False
            if not has_interest(self.server, cfg.deliver_subject):
                return False
            return True
        return bool(self.waiting)

    def _budget(self) -> int:
        st, cfg = self.state, self.config
        n = LOAD_BATCH_MAX
        if not cfg.is_push and self.waiting:
            n = min(n, sum(r.batch - r.delivered for r in self.waiting))
        if st.acks and cfg.max_ack_pending > 0:
            n = min(n, max(cfg.max_ack_pending - len(st.pending), 0) + len(st.due))
        if cfg.is_push and cfg.flow_control:
            n = min(n, max(FC_EVERY_MSGS - self.fc_msgs, 1))
        return max(n, 1)

    async def _deliver_some(self) -> bool:
        """Load and send the next messages; False when there was nothing to send."""
        n = self._budget()
        st = self.state
        redeliver = st.take_due(n)
        lps = [st.lps.popleft() for _ in range(min(n - len(redeliver), len(st.lps)))]
        fresh = n - len(redeliver) - len(lps)
        msgs, missing, pending_after = await self._read(redeliver + lps, st.cursor, fresh)
        if missing:
            st.forget(missing)
        if not msgs:
            return False
        sent = self._send_msgs(msgs, pending_after, set(redeliver))
        self.server.flush_dirty()
        return sent > 0

    async def _read(self, seqs: list[int], cursor: int, fresh: int) -> tuple[list[StoredMsg], list[int], int]:
        """Load for `_deliver_some`. A run of new messages without a filter is bounded work
        (one read by sequence, capped at INLINE_READ_BYTES_MAX, and a pending count from the
        store's counters), so it runs on the event loop: on a loaded host the worker-thread
        hop, two wakeups, costs more than the read. Redeliveries, filtered runs (a scan until
        enough match) and counts of rows go to the worker thread."""
        rt = self.stream
        if seqs or self.filters:
            return await rt.read(self._load, seqs, cursor, fresh)
        msgs, missing, pending = await rt.read_inline(self._load, seqs, cursor, fresh, INLINE_READ_BYTES_MAX)
        if pending is None:  # the store would have to count rows
            pending = await rt.read(_count_after, msgs[-1].seq if msgs else cursor)
        return msgs, missing, pending

    def _load(self, store: Any, seqs: list[int], cursor: int, fresh: int,
              inline_bytes_max: int = 0) -> tuple[list[StoredMsg], list[int], Any]:
        """The given sequences, then up to `fresh` new matching messages, and how many match
        after those. `inline_bytes_max` (on the event loop): the run stops at that many bytes
        and the count comes only from the store's counters (None if it would count rows)."""
        filters = self.filters or None
        msgs: list[StoredMsg] = []
        missing: list[int] = []
        for seq in seqs:
            msg = store.load(seq)
            if msg is not None:
                msgs.append(msg)
            else:
                missing.append(seq)
        seq = cursor + 1
        if fresh > 0:
            run = store.load_range(seq, fresh, filters, inline_bytes_max)  # one query for the run
            if run:
                msgs.extend(run)
                seq = run[-1].seq + 1
        if inline_bytes_max:
            return msgs, missing, store.num_after_from_counters(seq - 1)
        return msgs, missing, _num_pending(store, seq - 1, filters)

    def _send_msgs(self, msgs: list[StoredMsg], pending_after: int, redelivered: set[int]) -> int:
        """Hand out `msgs` in order (each to the pull request that takes it, or to the deliver
        subject); returns how many were sent, the rest go back. One clock reading, ack subject
        prefix and route lookup per batch rather than per message; the frames pile up in the
        connections' outbound buffers and leave in one write when the caller flushes."""
        now = self.clock_ns()
        st, cfg, server = self.state, self.config, self.server
        routes, deliver = server.routes, server.deliver
        ack_prefix = f"{ACK_PREFIX}{self.stream.name}.{self.name}."
        push = cfg.is_push
        headers_only = cfg.headers_only
        later_new = sum(1 for m in msgs if m.seq not in redelivered)
        pending_base = pending_after + len(st.lps)
        req: PullRequest | None = None
        waiting = self.waiting
        for i, msg in enumerate(msgs):
            seq = msg.seq
            if seq not in redelivered:
                later_new -= 1
            if self.held:
                self._unsend(msgs[i:], redelivered)
                return i
            if push:
                target = cfg.deliver_subject
            elif req is None or req.max_bytes or not waiting or waiting[0] is not req or not routes.get(req.reply):
                req = self._request_for(msg)  # the same request takes the next message unless
                if req is None:               # it is full, has a byte limit, or lost interest
                    self._unsend(msgs[i:], redelivered)
                    return i
                target = req.reply
            dseq, deliveries = st.deliver(seq, now)
            reply = f"{ack_prefix}{deliveries}.{seq}.{dseq}.{msg.ts_ns}.{pending_base + later_new}"
            headers, payload = msg.hdrs, msg.payload
            if headers_only:
                headers = append_headers(headers or b"NATS/1.0\r\n\r\n", [("Nats-Msg-Size", str(len(payload)))])
                payload = b""
            route = routes.get(target)
            if route is None:
                route = server.route_for(target)
            if route:
                reply_b = reply.encode()
                if headers is None:
                    tail = b" %s %d\r\n" % (reply_b, len(payload))
                else:
                    tail = b" %s %d %d\r\n" % (reply_b, len(headers), len(headers) + len(payload))
                deliver(None, route, msg.subject, reply, headers, [payload], tail)
            size = len(msg.subject) + len(reply) + len(headers or b"") + len(payload)
            if req is not None:
                self._account_request(req, size, now)
            elif cfg.flow_control:
                self._account_flow_control(size)
        self.last_sent_ns = now
        self.dirty = True
        return len(msgs)

    def _unsend(self, rest: list[StoredMsg], redelivered: set[int]) -> None:
        """Messages loaded but not sent (no request could take them): put them back."""
        st = self.state
        back = [m.seq for m in rest if m.seq not in redelivered and m.seq <= st.cursor]
        st.lps.extendleft(reversed(back))
        for msg in rest:
            if msg.seq in redelivered and msg.seq in st.pending:
                st.due.append(msg.seq)

    def _request_for(self, msg: StoredMsg) -> PullRequest | None:
        """The pull request that takes `msg` (drops requests it cannot fit)."""
        size = len(msg.subject) + len(msg.hdrs or b"") + len(msg.payload) + 64
        routes = self.server.routes
        while self.waiting:
            req = self.waiting[0]
            if not routes.get(req.reply) and not has_interest(self.server, req.reply):  # the requester went away
                self.waiting.popleft()
                continue
            if req.max_bytes and req.bytes_sent + size > req.max_bytes:
                self.waiting.popleft()
                if req.delivered == 0:
                    self._send_status(req.reply, 409, "Message Size Exceeds MaxBytes", req)
                else:
                    self._send_status(req.reply, 409, "Batch Completed", req)
                continue
            return req
        return None

    def _account_request(self, req: PullRequest, size: int, now: int) -> None:
        req.delivered += 1
        req.bytes_sent += size
        if req.heartbeat_ns:
            req.next_heartbeat_ns = now + req.heartbeat_ns
        if req.delivered >= req.batch and self.waiting and self.waiting[0] is req:
            self.waiting.popleft()

    def _account_flow_control(self, size: int) -> None:
        self.fc_msgs += 1
        self.fc_bytes += size
        if self.fc_msgs >= FC_EVERY_MSGS or self.fc_bytes >= FC_EVERY_BYTES:
            subject = f"$JS.FC.{self.stream.name}.{self.name}.{self.random_token()}"
            self.fc_outstanding = subject
            self.server.publish_internal(self.config.deliver_subject, subject,
                                         status_headers(100, "FlowControl Request"), b"")

    def _end_no_wait_requests(self) -> None:
        """Nothing more to deliver: no_wait requests end with 404 (unless still waiting on expiry)."""
        keep: deque[PullRequest] = deque()
        for req in self.waiting:
            if req.no_wait and (req.delivered > 0 or not req.expires_ns):
                self._send_status(req.reply, 404, "No Messages")
                continue
            keep.append(req)
        self.waiting = keep

    # -- acks not yet committed (clustered streams) ------------------------------------------
    def record_unsaved_ack(self, subject: str, reply: str | None, payload: bytes) -> None:
        """Remember an applied ack until a save that includes it commits (bounded: the oldest
        go first; an ack lost that way is redelivered after ack_wait)."""
        self.acks_seen += 1
        self.unsaved_acks.append((self.acks_seen, (subject, reply, payload)))
        while len(self.unsaved_acks) > UNSAVED_ACKS_MAX:
            self.unsaved_acks.popleft()

    def saved_acks_upto(self, mark: int) -> None:
        """A save whose state was taken when `acks_seen` was `mark` committed."""
        while self.unsaved_acks and self.unsaved_acks[0][0] <= mark:
            self.unsaved_acks.popleft()

    # -- deletion -------------------------------------------------------------------------------------
    def close(self, notify_waiting: bool) -> None:
        self.deleted = True
        if notify_waiting:
            for req in self.waiting:
                self._send_status(req.reply, 409, "Consumer Deleted", req)
        self.waiting.clear()
        self.kick()

# pure-core
"""The consumer state machine: what to deliver next, acks, redelivery — deterministic.

State: `delivered` (last consumer seq handed out, last *new* stream seq handed out),
`ack_floor` (everything at or below it is acked or done), and `pending`: stream seq -> (the
consumer seq of its first delivery, delivery count, redelivery deadline). Time is injected: every
call that depends on it takes `now_ns`, so the same inputs give the same outputs on every
replica and in tests (no sleeping: move `now_ns` forward).

Delivery order: due redeliveries first (lowest stream seq first; deadline = delivery time +
ack_wait, or backoff[n-1] for the n-th delivery, or the NAK delay), then new messages matching
the filter(s), unless `max_ack_pending` messages are already pending. A message that reached
`max_deliver` is dropped from pending (an event says so) and never sent again. Every delivery,
redeliveries included, takes the next consumer seq; pending keeps the first one for the floor.

Deliver policies pick the start: all / last / new / by_start_sequence / by_start_time /
last_per_subject (the newest message of each matching subject first, then new messages).
Ack policies: none (delivered = done), all (an ack covers everything up to it), explicit.
The ack reply subject is nats-server's v1 form:
`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts_ns>.<pending>`.

Retention hooks: `ack()` returns which stream seqs became acked, and `needs(seq, subject)` says
whether this consumer still wants a message, so an interest/workqueue stream can remove it.
The machine reads messages through the stream's MessageStore (read-only use).
"""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

from jetstream.config import Retention
from jetstream.consumer_config import AckPolicy, ConsumerConfig, DeliverPolicy
from jetstream.store.base import MessageStore, StoredMsg, filter_matches

ACK_PREFIX = "$JS.ACK."
_NAK_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
                 "h": 3_600_000_000_000}


# -- ack subjects and payloads ----------------------------------------------------------------
@attrs.frozen
class AckReply:
    stream: str
    consumer: str
    delivered: int
    stream_seq: int
    consumer_seq: int
    ts_ns: int
    pending: int


def ack_subject(stream: str, consumer: str, delivered: int, stream_seq: int, consumer_seq: int,
                ts_ns: int, pending: int) -> str:
    return f"{ACK_PREFIX}{stream}.{consumer}.{delivered}.{stream_seq}.{consumer_seq}.{ts_ns}.{pending}"


def parse_ack_subject(subject: str) -> AckReply | None:
    """Parse the v1 (9 tokens) or v2 (11/12 tokens, domain and account hash) ack subject."""
    tokens = subject.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    if len(tokens) == 9:
        names, numbers = tokens[2:4], tokens[4:9]
    elif len(tokens) in (11, 12):
        names, numbers = tokens[4:6], tokens[6:11]
    else:
        return None
    if not all(n.isdigit() for n in numbers):
        return None
    delivered, sseq, cseq, ts_ns, pending = (int(n) for n in numbers)
    return AckReply(names[0], names[1], delivered, sseq, cseq, ts_ns, pending)


class AckKind(enum.Enum):
    ACK = "+ACK"
    NAK = "-NAK"
    PROGRESS = "+WPI"
    TERM = "+TERM"
    NEXT = "+NXT"


@attrs.frozen
class AckMsg:
    kind: AckKind
    delay_ns: int = 0  # NAK only
    detail: str = ""  # TERM reason or NXT request body


def parse_ack_payload(payload: bytes) -> AckMsg | None:
    """Ack payloads clients send; None for anything unrecognised."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text in ("", "+ACK", "+OK"):
        return AckMsg(AckKind.ACK)
    head, _, rest = text.partition(" ")
    if head == "-NAK":
        delay = _parse_nak_delay(rest.strip())
        return None if delay is None else AckMsg(AckKind.NAK, delay_ns=delay)
    if head == "+WPI":
        return AckMsg(AckKind.PROGRESS)
    if head == "+TERM":
        return AckMsg(AckKind.TERM, detail=rest.strip())
    if head == "+NXT":
        return AckMsg(AckKind.NEXT, detail=rest.strip())
    return None


def _parse_nak_delay(text: str) -> int | None:
    if not text:
        return 0
    if text.startswith("{"):
        try:
            value = json.loads(text).get("delay", 0)
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and value >= 0 else None
    for unit in ("ns", "us", "ms", "s", "m", "h"):
        number = text[: -len(unit)]
        if text.endswith(unit) and number.replace(".", "", 1).isdigit():
            return int(float(number) * _NAK_UNITS_NS[unit])
    return None


# -- values the machine returns -----------------------------------------------------------------
@attrs.frozen
class Delivery:
    msg: StoredMsg
    consumer_seq: int
    delivery_count: int
    pending: int  # matching messages left after this one (the ack subject's last token)
    reply: str  # the ack subject


@attrs.frozen
class MaxDeliveriesReached:
    stream_seq: int
    deliveries: int


@attrs.frozen
class Terminated:
    stream_seq: int
    reason: str


@attrs.frozen
class AckOutcome:
    acked: tuple[int, ...] = ()  # stream seqs now acked (retention may remove them)
    applied: bool = False  # False: the ack referred to nothing pending (duplicate/late)


@attrs.frozen
class ConsumerCounts:
    delivered_consumer_seq: int
    delivered_stream_seq: int
    ack_floor_consumer_seq: int
    ack_floor_stream_seq: int
    num_ack_pending: int
    num_redelivered: int
    num_pending: int


@attrs.define
class PendingEntry:
    consumer_seq: int  # of the first delivery
    deliveries: int
    deadline_ns: int


# -- the machine --------------------------------------------------------------------------------
class ConsumerStateMachine:
    def __init__(self, stream: str, name: str, config: ConsumerConfig, store: MessageStore) -> None:
        self.stream = stream
        self.name = name
        self.config = config
        self.store = store
        self.filters = config.filters()
        self.delivered_cseq = 0
        self.delivered_sseq = 0
        self.floor_cseq = 0
        self.floor_sseq = 0
        self.next_sseq = 1
        self.lps: list[int] = []  # last_per_subject sequences still to deliver
        self.pending: dict[int, PendingEntry] = {}
        self.events: list[Any] = []  # MaxDeliveriesReached / Terminated, drained by the shell
        self._start()

    def _start(self) -> None:
        state = self.store.state()
        policy = self.config.deliver_policy
        start = max(state.first_seq, 1)
        if policy is DeliverPolicy.LAST:
            last = self.store.load_last_by_subject(self.filters or None)
            start = last.seq if last else state.last_seq + 1
        elif policy is DeliverPolicy.NEW:
            start = state.last_seq + 1
        elif policy is DeliverPolicy.BY_START_SEQUENCE:
            start = self.config.opt_start_seq
        elif policy is DeliverPolicy.BY_START_TIME:
            found = self.store.seq_for_time(self.config.opt_start_time_ns or 0)
            start = found if found is not None else state.last_seq + 1
        base = start - 1
        if policy is DeliverPolicy.LAST_PER_SUBJECT:
            self.lps = self.store.last_seqs_per_subject(self.filters or None)
            start = state.last_seq + 1
            base = self.lps[0] - 1 if self.lps else state.last_seq
        self.next_sseq = start
        self.delivered_sseq = self.floor_sseq = max(base, 0)

    # -- delivery ------------------------------------------------------------------------
    @property
    def acks(self) -> bool:
        return self.config.ack_policy is not AckPolicy.NONE

    def ack_wait_ns(self, deliveries: int) -> int:
        backoff = self.config.backoff_ns
        if backoff:
            return backoff[min(deliveries, len(backoff)) - 1]
        return self.config.ack_wait_ns

    def next_delivery(self, now_ns: int) -> Delivery | None:
        """The next message to hand out at `now_ns` (and record it as delivered), or None."""
        if self.acks:
            redelivery = self._next_redelivery(now_ns)
            if redelivery is not None:
                return redelivery
            if 0 < self.config.max_ack_pending <= len(self.pending):
                return None
        msg = self._next_new()
        if msg is None:
            return None
        self.delivered_cseq += 1
        self.delivered_sseq = msg.seq
        if self.acks:
            self.pending[msg.seq] = PendingEntry(self.delivered_cseq, 1, now_ns + self.ack_wait_ns(1))
        else:
            self._raise_floor(self.delivered_cseq, msg.seq)
        return self._delivery(msg, 1)

    def _next_new(self) -> StoredMsg | None:
        while self.lps:
            msg = self.store.load(self.lps.pop(0))
            if msg is not None:
                return msg
        msg = self.store.load_next(self.next_sseq, self.filters or None)
        if msg is not None:
            self.next_sseq = msg.seq + 1
        return msg

    def _next_redelivery(self, now_ns: int) -> Delivery | None:
        due = sorted(seq for seq, p in self.pending.items() if p.deadline_ns <= now_ns)
        for seq in due:
            entry = self.pending[seq]
            max_deliver = self.config.max_deliver
            msg = self.store.load(seq)
            if msg is None or (max_deliver > 0 and entry.deliveries >= max_deliver):
                del self.pending[seq]
                if msg is not None:
                    self.events.append(MaxDeliveriesReached(seq, entry.deliveries))
                self._update_floor()
                continue
            entry.deliveries += 1
            entry.deadline_ns = now_ns + self.ack_wait_ns(entry.deliveries)
            self.delivered_cseq += 1
            return self._delivery(msg, entry.deliveries)
        return None

    def _delivery(self, msg: StoredMsg, count: int) -> Delivery:
        pending = self.num_pending()
        reply = ack_subject(self.stream, self.name, count, msg.seq, self.delivered_cseq, msg.ts_ns, pending)
        return Delivery(msg, self.delivered_cseq, count, pending, reply)

    # -- acks ----------------------------------------------------------------------------
    def ack(self, stream_seq: int, msg: AckMsg, now_ns: int) -> AckOutcome:
        """Process one ack message for `stream_seq` (from the parsed ack reply subject)."""
        if not self.acks:
            return AckOutcome()
        entry = self.pending.get(stream_seq)
        if msg.kind in (AckKind.ACK, AckKind.NEXT):
            if self.config.ack_policy is AckPolicy.ALL:
                return self._ack_upto(stream_seq)
            return self._ack_one(stream_seq)
        if entry is None:
            return AckOutcome()
        if msg.kind is AckKind.NAK:
            entry.deadline_ns = now_ns + msg.delay_ns
        elif msg.kind is AckKind.PROGRESS:
            entry.deadline_ns = now_ns + self.ack_wait_ns(entry.deliveries)
        elif msg.kind is AckKind.TERM:
            self.events.append(Terminated(stream_seq, msg.detail))
            return self._ack_one(stream_seq)
        return AckOutcome(applied=True)

    def ack_reply(self, reply: AckReply, payload: bytes, now_ns: int) -> AckOutcome:
        """Convenience: an ack as it arrives (reply subject tokens + payload)."""
        msg = parse_ack_payload(payload)
        if msg is None or reply.consumer != self.name or reply.stream != self.stream:
            return AckOutcome()
        return self.ack(reply.stream_seq, msg, now_ns)

    def _ack_one(self, seq: int) -> AckOutcome:
        if self.pending.pop(seq, None) is None:
            return AckOutcome()
        self._update_floor()
        return AckOutcome(acked=(seq,), applied=True)

    def _ack_upto(self, seq: int) -> AckOutcome:
        acked = tuple(sorted(s for s in self.pending if s <= seq))
        for s in acked:
            del self.pending[s]
        self._update_floor()
        return AckOutcome(acked=acked, applied=bool(acked))

    def _update_floor(self) -> None:
        if not self.pending:
            self._raise_floor(self.delivered_cseq, self.delivered_sseq)
            return
        lowest = min(self.pending)
        self._raise_floor(self.pending[lowest].consumer_seq - 1, lowest - 1)

    def _raise_floor(self, cseq: int, sseq: int) -> None:
        self.floor_cseq = max(self.floor_cseq, cseq)
        self.floor_sseq = max(self.floor_sseq, sseq)

    # -- queries -------------------------------------------------------------------------
    def num_pending(self) -> int:
        """Matching messages not yet delivered."""
        return len(self.lps) + self.store.num_pending(self.next_sseq - 1, self.filters or None)

    def counts(self) -> ConsumerCounts:
        return ConsumerCounts(
            delivered_consumer_seq=self.delivered_cseq,
            delivered_stream_seq=self.delivered_sseq,
            ack_floor_consumer_seq=self.floor_cseq,
            ack_floor_stream_seq=self.floor_sseq,
            num_ack_pending=len(self.pending),
            num_redelivered=sum(1 for p in self.pending.values() if p.deliveries > 1),
            num_pending=self.num_pending(),
        )

    def is_interested(self, subject: str) -> bool:
        return filter_matches(self.filters or None, subject)

    def needs(self, seq: int, subject: str) -> bool:
        """Does this consumer still want message `seq` (not yet delivered, or unacked)?"""
        if not self.is_interested(subject):
            return False
        return seq >= self.next_sseq or seq in self.pending or seq in self.lps

    def next_deadline_ns(self) -> int | None:
        """When the earliest pending message becomes due for redelivery (for the shell's timer)."""
        return min((p.deadline_ns for p in self.pending.values()), default=None)

    def drain_events(self) -> list[Any]:
        events, self.events = self.events, []
        return events

    # -- persistence ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        state = {
            "delivered": [self.delivered_cseq, self.delivered_sseq],
            "ack_floor": [self.floor_cseq, self.floor_sseq],
            "next_sseq": self.next_sseq,
            "lps": self.lps,
            "pending": [[s, p.consumer_seq, p.deliveries, p.deadline_ns] for s, p in sorted(self.pending.items())],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    def load_bytes(self, data: bytes) -> None:
        state = json.loads(data)
        self.delivered_cseq, self.delivered_sseq = state["delivered"]
        self.floor_cseq, self.floor_sseq = state["ack_floor"]
        self.next_sseq = state["next_sseq"]
        self.lps = list(state["lps"])
        self.pending = {s: PendingEntry(c, d, t) for s, c, d, t in state["pending"]}

    def save(self) -> None:
        self.store.save_consumer(self.name, self.to_bytes())

    @classmethod
    def load(cls, stream: str, name: str, config: ConsumerConfig, store: MessageStore) -> ConsumerStateMachine:
        """Rebuild from the state saved in the store (or start fresh if none was saved)."""
        machine = cls(stream, name, config, store)
        blob = store.load_consumer(name)
        if blob is not None:
            machine.load_bytes(blob)
        return machine


def removable_after_acks(
    seqs: tuple[int, ...] | list[int],
    consumers: list[ConsumerStateMachine],
    store: MessageStore,
    retention: Retention,
) -> tuple[int, ...]:
    """Which of `seqs` (just acked) an interest/workqueue stream may now remove: the ones no
    consumer still needs. Limits streams keep everything. Feed the result to `RemoveAcked`."""
    if retention is Retention.LIMITS:
        return ()
    out = []
    for seq in sorted(set(seqs)):
        msg = store.load(seq)
        if msg is not None and not any(c.needs(seq, msg.subject) for c in consumers):
            out.append(seq)
    return tuple(out)


# -- commands, for running a consumer behind Raft ---------------------------------------------
@attrs.frozen
class Deliver:
    now_ns: int


@attrs.frozen
class Ack:
    stream_seq: int
    msg: AckMsg
    now_ns: int


def apply_consumer(machine: ConsumerStateMachine, cmd: Deliver | Ack) -> Delivery | AckOutcome | None:
    """Deterministic dispatch of a replicated consumer command."""
    if isinstance(cmd, Deliver):
        return machine.next_delivery(cmd.now_ns)
    return machine.ack(cmd.stream_seq, cmd.msg, cmd.now_ns)

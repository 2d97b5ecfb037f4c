# pure-core
"""Consumer delivery state: positions, ack pending, redelivery timers, pull requests.

This is the deterministic part of a consumer, shared by pull and push delivery (the trio shell
is jetstream/delivery.py). Time comes in as `now_ns` arguments. It tracks:

- `cursor`: the last stream sequence handed out for the first time; new messages come after it.
  `lps` holds the sequences a `last_per_subject` consumer delivers before moving on.
- `pending`: stream seq -> (consumer seq, deliveries, deadline) for messages awaiting an ack;
  ack `all` acknowledges everything at or below a sequence. A deadline that passes queues the
  message for redelivery (`due`), unless `max_deliver` is used up.
- `ack_floor`: the highest (stream, consumer) sequence below which everything is acknowledged.
  The oldest pending sequence comes from a min-heap of pending sequences with lazy deletion
  (an ack only removes the dict entry; stale heap tops are popped when the floor is needed),
  so an ack costs O(log n) instead of a scan of everything pending.

`ack_reply` builds and `parse_ack_subject` reads nats-server's v1 ack subject
`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts_ns>.<pending>`; `parse_ack` reads
the ack payload (+ACK, -NAK with optional delay, +WPI, +TERM, +NXT). The state serialises to
JSON for durable consumers (`to_json`/`from_json`).
"""

from __future__ import annotations

import enum
import heapq
import json
from collections import deque
from typing import Any, NamedTuple

import attrs

ACK_PREFIX = "$JS.ACK."
_NS_PER_S = 1_000_000_000
_GO_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": _NS_PER_S, "m": 60 * _NS_PER_S,
                "h": 3600 * _NS_PER_S}


class AckKind(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    PROGRESS = "progress"
    TERM = "term"
    NEXT = "next"


@attrs.frozen
class Ack:
    kind: AckKind
    delay_ns: int = 0
    body: bytes = b""  # +NXT: the pull request that follows


class AckTarget(NamedTuple):
    """What an ack subject names. Immutable; a NamedTuple because one is built per ack and
    costs a quarter of a frozen attrs instance to make."""

    stream: str
    consumer: str
    deliveries: int
    stream_seq: int
    consumer_seq: int


@attrs.define
class Pending:
    consumer_seq: int
    deliveries: int
    deadline_ns: int


def ack_reply(stream: str, consumer: str, deliveries: int, sseq: int, dseq: int, ts_ns: int,
              pending: int) -> str:
    return f"{ACK_PREFIX}{stream}.{consumer}.{deliveries}.{sseq}.{dseq}.{ts_ns}.{pending}"


_new_tuple = tuple.__new__  # AckTarget's own __new__ takes keywords and is 4x slower


def parse_ack_subject(subject: str) -> AckTarget | None:
    """v1 (9 tokens) or v2 (11-12 tokens) ack subjects; None when malformed."""
    tokens = subject.split(".")
    n = len(tokens)
    at = 2 if n == 9 else 4 if n in (11, 12) else -1
    if at < 0:
        return None
    try:
        return _new_tuple(AckTarget, (tokens[at], tokens[at + 1], int(tokens[at + 2]), int(tokens[at + 3]),
                                      int(tokens[at + 4])))
    except ValueError:
        return None


_ACK = Ack(AckKind.ACK)
_PROGRESS = Ack(AckKind.PROGRESS)
_TERM = Ack(AckKind.TERM)


def parse_ack(payload: bytes) -> Ack | None:
    """The ack verb in a payload; None for an unknown verb."""
    if payload == b"+ACK":
        return _ACK
    text = payload.strip()
    if text in (b"", b"+ACK", b"+OK"):
        return _ACK
    if text.startswith(b"-NAK"):
        return Ack(AckKind.NAK, delay_ns=_nak_delay_ns(text[4:].strip()))
    if text.startswith(b"+WPI"):
        return _PROGRESS
    if text.startswith(b"+TERM"):
        return _TERM
    if text.startswith(b"+NXT"):
        return Ack(AckKind.NEXT, body=text[4:].strip())
    return None


def _nak_delay_ns(rest: bytes) -> int:
    if not rest:
        return 0
    if rest.startswith(b"{"):
        try:
            delay = json.loads(rest).get("delay", 0)
        except (ValueError, AttributeError):
            return 0
        return delay if isinstance(delay, int) and delay > 0 else 0
    return parse_go_duration_ns(rest.decode(errors="replace")) or 0


def parse_go_duration_ns(text: str) -> int | None:
    """`5s`, `100ms`, `1m30s` -> ns; None if malformed."""
    total, num = 0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = text[i:i + 2] if text[i:i + 2] in _GO_UNITS_NS else text[i]
        if unit not in _GO_UNITS_NS or not num:
            return None
        total += int(float(num) * _GO_UNITS_NS[unit])
        num, i = "", i + len(unit)
    return total if not num and text else None


@attrs.define
class DeliveryState:
    """Positions and ack bookkeeping of one consumer (see module docstring)."""

    ack_wait_ns: int
    max_deliver: int = -1
    acks: bool = True  # False for ack policy none
    ack_all: bool = False
    backoff_ns: tuple[int, ...] = ()
    cursor: int = 0
    consumer_seq: int = 0
    pending: dict[int, Pending] = attrs.Factory(dict)
    due: deque[int] = attrs.Factory(deque)
    lps: deque[int] = attrs.Factory(deque)
    ack_floor_stream: int = 0
    ack_floor_consumer: int = 0
    num_redelivered: int = 0
    last_delivered_stream: int = 0
    # Lower bound of the earliest pending deadline (None = nothing scheduled): expire() skips
    # its scan until then. It may be stale-low (acked entries), never too high.
    scan_at_ns: int | None = None
    # Min-heap holding every key of `pending` (plus stale ones, popped lazily); see _oldest().
    pending_heap: list[int] = attrs.field(factory=list, repr=False, eq=False)

    # -- delivering -----------------------------------------------------------------------------
    def deliver(self, sseq: int, now_ns: int) -> tuple[int, int]:
        """Record a delivery of `sseq`; returns (consumer seq, deliveries)."""
        self.consumer_seq = dseq = self.consumer_seq + 1
        pending = self.pending
        entry = pending.get(sseq)
        if entry is None:
            deliveries = 1
        else:
            deliveries = entry.deliveries + 1
            self.num_redelivered += 1
        if sseq > self.cursor:
            self.cursor = sseq
        self.last_delivered_stream = sseq
        if self.acks:
            deadline = now_ns + (self._wait_for(deliveries) if self.backoff_ns else self.ack_wait_ns)
            pending[sseq] = Pending(dseq, deliveries, deadline)
            if entry is None:
                heapq.heappush(self.pending_heap, sseq)
            if self.scan_at_ns is None or deadline < self.scan_at_ns:
                self.scan_at_ns = deadline
        else:
            self._advance_floor()
        return dseq, deliveries

    def _schedule(self, deadline_ns: int) -> None:
        if self.scan_at_ns is None or deadline_ns < self.scan_at_ns:
            self.scan_at_ns = deadline_ns

    def _wait_for(self, deliveries: int) -> int:
        if self.backoff_ns:
            return self.backoff_ns[min(deliveries, len(self.backoff_ns)) - 1]
        return self.ack_wait_ns

    def skip_to(self, sseq: int) -> None:
        """Move the cursor (deliver policies, purges below it)."""
        if sseq > self.cursor:
            self.cursor = sseq
            if not self.pending:
                self.ack_floor_stream = max(self.ack_floor_stream, sseq)

    # -- acks -------------------------------------------------------------------------------------
    def ack(self, sseq: int) -> list[int]:
        """Acknowledge; returns the stream sequences now fully acknowledged."""
        pending = self.pending
        if self.ack_all:
            done = []
            if self._oldest() is not None:
                heap = self.pending_heap
                while heap and heap[0] <= sseq:
                    s = heapq.heappop(heap)
                    if pending.pop(s, None) is not None:  # a stale (or duplicate) key is skipped
                        done.append(s)
        elif pending.pop(sseq, None) is not None:
            done = [sseq]
        else:
            return []
        if done:
            self._advance_floor()
        return done

    def nak(self, sseq: int, delay_ns: int, now_ns: int) -> bool:
        entry = self.pending.get(sseq)
        if entry is None:
            return False
        if delay_ns > 0:
            entry.deadline_ns = now_ns + delay_ns
            self._schedule(entry.deadline_ns)
        elif sseq not in self.due:
            entry.deadline_ns = now_ns
            self.due.append(sseq)
        return True

    def progress(self, sseq: int, now_ns: int) -> bool:
        entry = self.pending.get(sseq)
        if entry is None:
            return False
        entry.deadline_ns = now_ns + self._wait_for(entry.deliveries)
        return True

    def term(self, sseq: int) -> bool:
        if self.pending.pop(sseq, None) is None:
            return False
        self._advance_floor()
        return True

    def _advance_floor(self) -> None:
        low = self._oldest()
        if low is None:
            self.ack_floor_stream = self.cursor
            self.ack_floor_consumer = self.consumer_seq
            return
        entry = self.pending[low]
        if low - 1 > self.ack_floor_stream:
            self.ack_floor_stream = low - 1
        if entry.consumer_seq - 1 > self.ack_floor_consumer:
            self.ack_floor_consumer = entry.consumer_seq - 1

    def _oldest(self) -> int | None:
        """The lowest pending stream sequence (None when nothing is pending).

        `pending_heap` holds every pending key; acks leave stale keys behind, dropped here once
        they reach the top. The heap is rebuilt when it cannot hold every key (pending was
        replaced from outside) or when stale keys outnumber live ones."""
        pending, heap = self.pending, self.pending_heap
        if not pending:
            heap.clear()
            return None
        if len(heap) < len(pending) or len(heap) > 2 * len(pending) + 1024:
            heap[:] = pending
            heapq.heapify(heap)
        while heap[0] not in pending:
            heapq.heappop(heap)
        return heap[0]

    # -- timers -------------------------------------------------------------------------------------
    def expire(self, now_ns: int) -> tuple[list[int], int | None]:
        """Queue overdue messages for redelivery; returns (dropped at max_deliver, next deadline)."""
        if self.scan_at_ns is None or now_ns < self.scan_at_ns:
            return [], self.scan_at_ns
        dropped: list[int] = []
        next_ns: int | None = None
        for sseq, entry in list(self.pending.items()):
            if sseq in self.due:
                continue
            if entry.deadline_ns <= now_ns:
                if 0 < self.max_deliver <= entry.deliveries:
                    dropped.append(sseq)
                    del self.pending[sseq]
                    continue
                self.due.append(sseq)
            elif next_ns is None or entry.deadline_ns < next_ns:
                next_ns = entry.deadline_ns
        if dropped:
            self._advance_floor()
        self.scan_at_ns = next_ns
        return dropped, next_ns

    def take_due(self, limit: int) -> list[int]:
        """Sequences to redeliver now (in stream order), at most `limit`."""
        ordered = sorted(self.due)
        taken = []
        for seq in ordered[:limit]:
            entry = self.pending.get(seq)
            if entry is None:
                continue
            if 0 < self.max_deliver <= entry.deliveries:  # e.g. NAKed after its last delivery
                del self.pending[seq]
                self._advance_floor()
                continue
            taken.append(seq)
        self.due = deque(ordered[limit:])
        return taken

    def forget(self, seqs: list[int]) -> None:
        """Messages that are gone from the stream: stop waiting for their acks."""
        for s in seqs:
            self.pending.pop(s, None)
        self._advance_floor()

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "consumer_seq": self.consumer_seq,
            "ack_floor": [self.ack_floor_stream, self.ack_floor_consumer],
            "redelivered": self.num_redelivered,
            "last": self.last_delivered_stream,
            "pending": [[s, p.consumer_seq, p.deliveries, p.deadline_ns] for s, p in self.pending.items()],
            "lps": list(self.lps),
        }

    def restore(self, d: dict[str, Any], now_ns: int) -> None:
        """Load saved positions. A pending message keeps its saved redelivery deadline (the
        clock is the wall clock every server shares), capped at a fresh ack_wait from `now_ns`
        so a skewed clock cannot postpone it; state saved without deadlines gets a fresh one."""
        self.cursor = int(d.get("cursor", 0))
        self.consumer_seq = int(d.get("consumer_seq", 0))
        self.ack_floor_stream, self.ack_floor_consumer = (int(x) for x in d.get("ack_floor", [0, 0]))
        self.num_redelivered = int(d.get("redelivered", 0))
        self.last_delivered_stream = int(d.get("last", 0))
        self.pending = {}
        for s, c, n, *rest in d.get("pending", []):
            fresh = now_ns + self._wait_for(int(n))
            self.pending[int(s)] = Pending(int(c), int(n), min(int(rest[0]), fresh) if rest else fresh)
        self.pending_heap = list(self.pending)
        heapq.heapify(self.pending_heap)
        self.lps = deque(int(s) for s in d.get("lps", []))
        self.scan_at_ns = now_ns if self.pending else None

"""DeliveryState (the pure part of consumer delivery) against a simple model, with hypothesis.

Random interleavings of new deliveries, acks, naks, terms, progress, time passing and
redeliveries must keep: pending ⊆ delivered, an acked or terminated message is never handed
out again, the ack floor sits just below the oldest pending message (or at the cursor when
nothing is pending), every overdue message is redelivered unless max_deliver is used up, and
a save/restore round trip keeps positions and the pending set. Plus ack subject/payload parsing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.delivery_state import (
    AckKind,
    DeliveryState,
    ack_reply,
    parse_ack,
    parse_ack_subject,
    parse_go_duration_ns,
)

WAIT_NS = 10
OPS = st.lists(
    st.tuples(st.sampled_from(["new", "ack", "nak", "term", "wpi", "tick", "redeliver"]), st.integers(0, 30)),
    max_size=60,
)


def check_invariants(s: DeliveryState, delivered: set[int], finished: set[int]) -> None:
    assert set(s.pending) <= delivered
    assert not (set(s.pending) & finished)
    assert all(seq <= s.cursor for seq in s.pending)
    if s.pending:
        assert s.ack_floor_stream < min(s.pending)
    else:
        assert s.ack_floor_stream == s.cursor


@settings(max_examples=150, deadline=None)
@given(OPS, st.integers(-1, 3))
def test_random_histories_keep_invariants(ops: list[tuple[str, int]], max_deliver: int) -> None:
    s = DeliveryState(ack_wait_ns=WAIT_NS, max_deliver=max_deliver if max_deliver else -1)
    now = 0
    delivered: set[int] = set()
    finished: set[int] = set()
    deliveries = 0
    for op, arg in ops:
        if op == "new":
            seq = s.cursor + 1 + arg % 3
            s.deliver(seq, now)
            delivered.add(seq)
            deliveries += 1
        elif op in ("ack", "term") and delivered:
            seq = sorted(delivered)[arg % len(delivered)]
            was_pending = seq in s.pending
            done = s.ack(seq) if op == "ack" else ([seq] if s.term(seq) else [])
            assert (seq in done) == was_pending
            finished.update(done)
        elif op == "nak" and delivered:
            s.nak(sorted(delivered)[arg % len(delivered)], 0, now)
        elif op == "wpi" and delivered:
            s.progress(sorted(delivered)[arg % len(delivered)], now)
        elif op == "tick":
            now += arg
            dropped, _ = s.expire(now)
            finished.update(dropped)
        elif op == "redeliver":
            for seq in s.take_due(1 + arg % 4):
                assert seq not in finished
                _, count = s.deliver(seq, now)
                assert count >= 2 and (s.max_deliver < 0 or count <= s.max_deliver)
                deliveries += 1
        check_invariants(s, delivered, finished)
    assert s.consumer_seq == deliveries


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), unique=True, max_size=20))
def test_every_overdue_message_comes_back(seqs: list[int]) -> None:
    s = DeliveryState(ack_wait_ns=WAIT_NS)
    for seq in sorted(seqs):
        s.deliver(seq, now_ns=0)
    s.expire(WAIT_NS)
    assert s.take_due(100) == sorted(seqs)


@settings(max_examples=50, deadline=None)
@given(OPS)
def test_save_restore_round_trip(ops: list[tuple[str, int]]) -> None:
    s = DeliveryState(ack_wait_ns=WAIT_NS)
    for op, arg in ops:
        if op == "new":
            s.deliver(s.cursor + 1, 0)
        elif op == "ack" and s.pending:
            s.ack(sorted(s.pending)[arg % len(s.pending)])
    copy = DeliveryState(ack_wait_ns=WAIT_NS)
    copy.restore(s.to_json(), now_ns=100)
    assert (copy.cursor, copy.consumer_seq, set(copy.pending)) == (s.cursor, s.consumer_seq, set(s.pending))
    assert (copy.ack_floor_stream, copy.ack_floor_consumer) == (s.ack_floor_stream, s.ack_floor_consumer)
    assert all(p.deadline_ns == s.pending[seq].deadline_ns for seq, p in copy.pending.items())


def test_restore_keeps_saved_deadlines_capped_at_a_fresh_ack_wait() -> None:
    """A new leader redelivers when the old one would have (not a whole ack_wait after the
    failover), a skewed clock cannot postpone it, and state saved without deadlines gets one."""
    s = DeliveryState(ack_wait_ns=WAIT_NS)
    s.deliver(1, 0)
    s.deliver(2, 5 * WAIT_NS)
    saved = s.to_json()
    copy = DeliveryState(ack_wait_ns=WAIT_NS)
    copy.restore(saved, now_ns=WAIT_NS // 2)
    assert copy.pending[1].deadline_ns == WAIT_NS  # the saved deadline
    assert copy.pending[2].deadline_ns == WAIT_NS // 2 + WAIT_NS  # capped: fresh ack_wait
    assert copy.expire(WAIT_NS)[0] == [] and copy.take_due(10) == [1]
    saved["pending"] = [entry[:3] for entry in saved["pending"]]  # the older format
    old = DeliveryState(ack_wait_ns=WAIT_NS)
    old.restore(saved, now_ns=7)
    assert {p.deadline_ns for p in old.pending.values()} == {7 + WAIT_NS}


def test_ack_all_acks_everything_below() -> None:
    s = DeliveryState(ack_wait_ns=WAIT_NS, ack_all=True)
    for seq in range(1, 6):
        s.deliver(seq, 0)
    assert s.ack(3) == [1, 2, 3]
    assert sorted(s.pending) == [4, 5] and s.ack_floor_stream == 3


def test_ack_subjects_and_payloads() -> None:
    subject = ack_reply("S", "c", 2, 10, 7, 123, 4)
    assert subject == "$JS.ACK.S.c.2.10.7.123.4"
    target = parse_ack_subject(subject)
    assert target is not None and (target.stream, target.consumer, target.stream_seq, target.consumer_seq) == ("S", "c", 10, 7)
    assert parse_ack_subject("$JS.ACK._.hash.S.c.2.10.7.123.4.rnd") is not None
    for bad in ("$JS.ACK.S.c.x.10.7.123.4", "$JS.ACK.S.c", "$JS.ACK.S.c.1.2.3.4.5.6"):
        assert parse_ack_subject(bad) is None
    assert parse_ack(b"").kind is AckKind.ACK and parse_ack(b"+ACK").kind is AckKind.ACK
    assert parse_ack(b'-NAK {"delay": 5000}').delay_ns == 5000
    assert parse_ack(b"-NAK 2s").delay_ns == 2_000_000_000
    assert parse_ack(b"+WPI").kind is AckKind.PROGRESS and parse_ack(b"+TERM why").kind is AckKind.TERM
    nxt = parse_ack(b"+NXT 5")
    assert nxt is not None and nxt.kind is AckKind.NEXT and nxt.body == b"5"
    assert parse_ack(b"+WHAT") is None
    assert parse_go_duration_ns("1m30s") == 90_000_000_000 and parse_go_duration_ns("5x") is None


def test_nak_after_the_last_allowed_delivery_drops_the_message() -> None:
    """Regression (found by the model test): ops new, nak, redeliver with max_deliver=1."""
    s = DeliveryState(ack_wait_ns=WAIT_NS, max_deliver=1)
    s.deliver(1, 0)
    s.nak(1, 0, 0)
    assert s.take_due(5) == [] and not s.pending and s.ack_floor_stream == 1



class ScanState(DeliveryState):
    """The reference: the oldest pending message and ack-all by scanning all of pending."""

    def _oldest(self) -> int | None:
        return min(self.pending) if self.pending else None

    def ack(self, sseq: int) -> list[int]:
        done = sorted(s for s in self.pending if s <= sseq) if self.ack_all else [s for s in [sseq] if s in self.pending]
        for s in done:
            del self.pending[s]
        if done:
            self._advance_floor()
        return done


def _apply(s: DeliveryState, op: str, arg: int, now: int) -> DeliveryState:
    if op == "new":
        s.deliver(s.cursor + 1 + arg % 3, now)
    elif op == "ack" and s.cursor:
        s.ack(1 + arg % s.cursor)
    elif op == "term" and s.cursor:
        s.term(1 + arg % s.cursor)
    elif op == "tick":
        s.expire(now)
    elif op == "redeliver":
        for seq in s.take_due(1 + arg % 4):
            s.deliver(seq, now)
    elif op == "nak" and arg % 7 == 0:  # a save/restore round trip
        copy = type(s)(ack_wait_ns=WAIT_NS, max_deliver=2, ack_all=s.ack_all)
        copy.restore(s.to_json(), now)
        return copy
    elif op == "nak":
        s.nak(1 + arg % max(s.cursor, 1), 0, now)
    elif op == "wpi" and arg % 11 == 0:  # forget everything, as ConsumerRuntime.reset does
        s.pending.clear()
        s.due.clear()
        s.ack_floor_stream = s.cursor
    return s


@settings(max_examples=200, deadline=None)
@given(OPS, st.booleans())
def test_floor_and_ack_all_match_a_scan_of_pending(ops: list[tuple[str, int]], ack_all: bool) -> None:
    """The heap behind the ack floor and ack-all gives what a scan of pending gives, also
    across redeliveries, naks, terms, expiry drops, restores and an outside `pending.clear()`."""
    fast = DeliveryState(ack_wait_ns=WAIT_NS, max_deliver=2, ack_all=ack_all)
    ref = ScanState(ack_wait_ns=WAIT_NS, max_deliver=2, ack_all=ack_all)
    now = 0
    for op, arg in ops:
        if op == "tick":
            now += arg
        if op == "ack" and fast.cursor:
            assert fast.ack(1 + arg % fast.cursor) == ref.ack(1 + arg % ref.cursor)
        else:
            fast, ref = _apply(fast, op, arg, now), _apply(ref, op, arg, now)
        assert fast.to_json() == ref.to_json()
        assert (fast.ack_floor_stream, fast.ack_floor_consumer) == (ref.ack_floor_stream, ref.ack_floor_consumer)

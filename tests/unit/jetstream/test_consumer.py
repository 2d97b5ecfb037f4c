"""The consumer state machine with an injected clock: deliver policies, acks, redelivery."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.consumer import (
    Ack,
    AckKind,
    AckMsg,
    AckReply,
    ConsumerStateMachine,
    Deliver,
    MaxDeliveriesReached,
    Terminated,
    ack_subject,
    apply_consumer,
    parse_ack_payload,
    parse_ack_subject,
)
from jetstream.consumer_config import ConsumerConfig
from jetstream.store import MemoryStore, MessageStore

SEC = 1_000_000_000
ACK = AckMsg(AckKind.ACK)


def fill(store: MessageStore, subjects: list[str]) -> None:
    last = store.state().last_seq
    for i, subject in enumerate(subjects, start=last + 1):
        store.store(i, subject, None, f"m{i}".encode(), i * SEC)


def consumer(store: MessageStore, **cfg: Any) -> ConsumerStateMachine:
    cfg.setdefault("durable_name", "C")
    cfg.setdefault("ack_policy", "explicit")
    return ConsumerStateMachine("S", cfg["durable_name"], ConsumerConfig.from_json(cfg), store)


def drain(c: ConsumerStateMachine, now_ns: int, limit: int = 100) -> list[int]:
    out = []
    for _ in range(limit):
        d = c.next_delivery(now_ns)
        if d is None:
            break
        out.append(d.msg.seq)
    return out


# -- ack subject and payload -------------------------------------------------------------------
def test_ack_subject_round_trip() -> None:
    subject = ack_subject("ORDERS", "dur", 2, 17, 33, 1_700_000_000_123456789, 4)
    assert subject == "$JS.ACK.ORDERS.dur.2.17.33.1700000000123456789.4"
    assert len(subject.split(".")) == 9
    assert parse_ack_subject(subject) == AckReply("ORDERS", "dur", 2, 17, 33, 1_700_000_000_123456789, 4)


def test_ack_subject_v2_and_garbage() -> None:
    v2 = "$JS.ACK._.ACCHASH.ORDERS.dur.1.5.6.99.0.rand"
    assert parse_ack_subject(v2) == AckReply("ORDERS", "dur", 1, 5, 6, 99, 0)
    assert parse_ack_subject("$JS.ACK.S.C.1.2.3") is None
    assert parse_ack_subject("$JS.ACK.S.C.1.x.3.4.5") is None
    assert parse_ack_subject("foo.bar") is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", AckMsg(AckKind.ACK)),
        (b"+ACK", AckMsg(AckKind.ACK)),
        (b"-NAK", AckMsg(AckKind.NAK)),
        (b'-NAK {"delay": 5000000000}', AckMsg(AckKind.NAK, delay_ns=5 * SEC)),
        (b"-NAK 2s", AckMsg(AckKind.NAK, delay_ns=2 * SEC)),
        (b"+WPI", AckMsg(AckKind.PROGRESS)),
        (b"+TERM bad data", AckMsg(AckKind.TERM, detail="bad data")),
        (b"+NXT", AckMsg(AckKind.NEXT)),
        (b"what", None),
        (b"-NAK {bad", None),
    ],
)
def test_ack_payloads(payload: bytes, expected: AckMsg | None) -> None:
    assert parse_ack_payload(payload) == expected


# -- deliver policies ---------------------------------------------------------------------------
def test_deliver_all_in_order_with_filter(store: MessageStore) -> None:
    fill(store, ["a.1", "b.1", "a.2", "b.2"])
    c = consumer(store, filter_subject="a.*", ack_policy="none")
    deliveries = [c.next_delivery(0) for _ in range(3)]
    assert [d.msg.seq for d in deliveries if d] == [1, 3]
    assert deliveries[0].reply == ack_subject("S", "C", 1, 1, 1, 1 * SEC, 1)  # type: ignore[union-attr]
    assert deliveries[1].pending == 0  # type: ignore[union-attr]
    assert deliveries[2] is None


def test_multiple_filters(store: MessageStore) -> None:
    fill(store, ["a", "b", "c", "a"])
    c = consumer(store, filter_subjects=["a", "c"], ack_policy="none")
    assert drain(c, 0) == [1, 3, 4]


@pytest.mark.parametrize(
    ("policy", "extra", "expected"),
    [
        ("all", {}, [1, 2, 3, 4, 5]),
        ("last", {}, [5]),
        ("new", {}, []),
        ("by_start_sequence", {"opt_start_seq": 3}, [3, 4, 5]),
        ("by_start_time", {"opt_start_time": "1970-01-01T00:00:04Z"}, [4, 5]),
        ("last_per_subject", {}, [3, 4, 5]),
    ],
)
def test_deliver_policies(store: MessageStore, policy: str, extra: dict, expected: list[int]) -> None:  # type: ignore[type-arg]
    fill(store, ["x.a", "x.b", "x.c", "x.a", "x.b"])
    c = consumer(store, deliver_policy=policy, ack_policy="none", **extra)
    assert drain(c, 0) == expected
    fill(store, ["x.c"])
    assert drain(c, 0) == [6]


def test_last_per_subject_pending_counts(store: MessageStore) -> None:
    fill(store, ["k.a", "k.b", "k.a"])
    c = consumer(store, deliver_policy="last_per_subject", filter_subject="k.>", ack_policy="none")
    assert c.num_pending() == 2
    first = c.next_delivery(0)
    assert (first.msg.seq, first.pending) == (2, 1)  # type: ignore[union-attr]
    second = c.next_delivery(0)
    assert (second.msg.seq, second.pending) == (3, 0)  # type: ignore[union-attr]


# -- acks and floors ----------------------------------------------------------------------------
def test_explicit_acks_move_floor_only_when_contiguous(store: MessageStore) -> None:
    fill(store, ["a"] * 4)
    c = consumer(store)
    assert drain(c, 0) == [1, 2, 3, 4]
    assert c.counts().num_ack_pending == 4
    assert c.ack(2, ACK, 0).acked == (2,)
    assert (c.floor_cseq, c.floor_sseq) == (0, 0)
    c.ack(1, ACK, 0)
    assert (c.floor_cseq, c.floor_sseq) == (2, 2)
    c.ack(4, ACK, 0)
    c.ack(3, ACK, 0)
    counts = c.counts()
    assert (counts.ack_floor_consumer_seq, counts.ack_floor_stream_seq, counts.num_ack_pending) == (4, 4, 0)
    assert c.ack(3, ACK, 0).applied is False  # duplicate ack


def test_ack_all_covers_everything_below(store: MessageStore) -> None:
    fill(store, ["a"] * 5)
    c = consumer(store, ack_policy="all")
    drain(c, 0)
    assert c.ack(3, ACK, 0).acked == (1, 2, 3)
    assert c.counts().num_ack_pending == 2
    assert c.counts().ack_floor_stream_seq == 3


def test_ack_none_is_done_on_delivery(store: MessageStore) -> None:
    fill(store, ["a"] * 2)
    c = consumer(store, ack_policy="none")
    drain(c, 0)
    counts = c.counts()
    assert (counts.num_ack_pending, counts.ack_floor_stream_seq, counts.delivered_stream_seq) == (0, 2, 2)


def test_redelivery_after_ack_wait_with_injected_clock(store: MessageStore) -> None:
    fill(store, ["a", "a"])
    c = consumer(store, ack_wait=10 * SEC)
    assert drain(c, 0) == [1, 2]
    c.ack(2, ACK, 5 * SEC)
    assert c.next_delivery(10 * SEC - 1) is None
    assert c.next_deadline_ns() == 10 * SEC
    again = c.next_delivery(10 * SEC)
    assert again is not None
    assert (again.msg.seq, again.delivery_count, again.consumer_seq) == (1, 2, 3)
    assert parse_ack_subject(again.reply) == AckReply("S", "C", 2, 1, 3, 1 * SEC, 0)
    counts = c.counts()
    assert (counts.num_redelivered, counts.delivered_consumer_seq, counts.delivered_stream_seq) == (1, 3, 2)
    c.ack(1, ACK, 11 * SEC)
    assert c.counts().ack_floor_stream_seq == 2


def test_nak_with_and_without_delay_and_progress(store: MessageStore) -> None:
    fill(store, ["a", "a"])
    c = consumer(store, ack_wait=30 * SEC)
    drain(c, 0)
    c.ack(1, AckMsg(AckKind.NAK), 1 * SEC)
    assert c.next_delivery(1 * SEC).msg.seq == 1  # type: ignore[union-attr]
    c.ack(2, AckMsg(AckKind.NAK, delay_ns=5 * SEC), 1 * SEC)
    assert c.next_delivery(5 * SEC) is None
    assert c.next_delivery(6 * SEC).msg.seq == 2  # type: ignore[union-attr]
    c.ack(2, AckMsg(AckKind.PROGRESS), 30 * SEC)  # deadline pushed to 60 s
    assert [d for d in [c.next_delivery(36 * SEC)] if d and d.msg.seq == 2] == []
    assert c.next_delivery(60 * SEC).msg.seq == 2  # type: ignore[union-attr]


def test_term_stops_redelivery(store: MessageStore) -> None:
    fill(store, ["a"])
    c = consumer(store, ack_wait=SEC)
    drain(c, 0)
    assert c.ack(1, AckMsg(AckKind.TERM, detail="poison"), 0).acked == (1,)
    assert c.next_delivery(10 * SEC) is None
    assert c.drain_events() == [Terminated(1, "poison")]


def test_max_deliver_then_dropped(store: MessageStore) -> None:
    fill(store, ["a"])
    c = consumer(store, ack_wait=SEC, max_deliver=3)
    deliveries = [c.next_delivery(t * SEC) for t in range(6)]
    assert [d.delivery_count for d in deliveries if d] == [1, 2, 3]
    assert c.drain_events() == [MaxDeliveriesReached(1, 3)]
    assert c.counts().num_ack_pending == 0
    assert c.counts().ack_floor_stream_seq == 1


def test_backoff_schedules_redeliveries(store: MessageStore) -> None:
    fill(store, ["a"])
    c = consumer(store, backoff=[1 * SEC, 5 * SEC], max_deliver=5)
    assert c.config.ack_wait_ns == SEC
    c.next_delivery(0)
    assert c.next_deadline_ns() == 1 * SEC
    c.next_delivery(1 * SEC)  # second delivery: waits backoff[1]
    assert c.next_deadline_ns() == 6 * SEC
    c.next_delivery(6 * SEC)  # third: stays on the last backoff value
    assert c.next_deadline_ns() == 11 * SEC


def test_max_ack_pending_blocks_new_but_not_redeliveries(store: MessageStore) -> None:
    fill(store, ["a"] * 5)
    c = consumer(store, max_ack_pending=2, ack_wait=SEC)
    assert drain(c, 0) == [1, 2]
    assert c.next_delivery(SEC).msg.seq == 1  # type: ignore[union-attr]
    c.ack(1, ACK, SEC)
    assert drain(c, SEC) == [2, 3]  # 2 was due too, then one free slot


def test_deleted_pending_message_is_not_redelivered(store: MessageStore) -> None:
    fill(store, ["a", "a"])
    c = consumer(store, ack_wait=SEC)
    drain(c, 0)
    store.remove(1)
    assert drain(c, 2 * SEC) == [2]
    assert c.counts().num_ack_pending == 1


def test_num_pending_tracks_new_messages(store: MessageStore) -> None:
    fill(store, ["a", "b", "a"])
    c = consumer(store, filter_subject="a")
    assert c.num_pending() == 2
    c.next_delivery(0)
    assert c.num_pending() == 1
    fill(store, ["a"])
    assert c.counts().num_pending == 2


def test_retention_needs(store: MessageStore) -> None:
    fill(store, ["a", "b", "a"])
    c = consumer(store, filter_subject="a")
    assert c.needs(1, "a") and not c.needs(2, "b")
    c.next_delivery(0)
    assert c.needs(1, "a")  # delivered, unacked
    c.ack(1, ACK, 0)
    assert not c.needs(1, "a") and c.needs(3, "a")


def test_state_round_trip_through_store(store: MessageStore) -> None:
    fill(store, ["a"] * 3)
    c = consumer(store, ack_wait=SEC)
    drain(c, 0)
    c.ack(2, ACK, 0)
    c.save()
    restored = ConsumerStateMachine.load("S", "C", c.config, store)
    assert restored.counts() == c.counts()
    assert drain(restored, SEC) == [1, 3]


def test_replicated_commands_are_deterministic() -> None:
    def run() -> list[Any]:
        s = MemoryStore()
        fill(s, ["a"] * 3)
        c = consumer(s, ack_wait=SEC)
        cmds = [Deliver(0), Deliver(0), Ack(1, ACK, 0), Deliver(2 * SEC), Deliver(2 * SEC)]
        return [apply_consumer(c, cmd) for cmd in cmds]

    assert run() == run()


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["deliver", "ack", "nak", "term", "tick"]), st.integers(1, 8)),
                    max_size=40))
def test_invariants_under_random_acks(ops: list[tuple[str, int]]) -> None:
    store = MemoryStore()
    fill(store, ["a", "b"] * 4)
    c = consumer(store, ack_wait=2 * SEC, max_deliver=4, max_ack_pending=3)
    now = 0
    for op, n in ops:
        if op == "deliver":
            c.next_delivery(now)
        elif op == "tick":
            now += n * SEC
        else:
            kind = {"ack": AckKind.ACK, "nak": AckKind.NAK, "term": AckKind.TERM}[op]
            c.ack(n, AckMsg(kind), now)
        counts = c.counts()
        assert counts.num_ack_pending <= 3
        assert counts.ack_floor_stream_seq <= counts.delivered_stream_seq
        assert counts.ack_floor_consumer_seq <= counts.delivered_consumer_seq
        assert all(seq > counts.ack_floor_stream_seq for seq in c.pending)
        assert all(p.deliveries <= 4 for p in c.pending.values())
        assert counts.num_pending == store.num_pending(counts.delivered_stream_seq)


def test_interest_and_workqueue_removal_after_acks(store: MessageStore) -> None:
    from jetstream.config import Retention
    from jetstream.consumer import removable_after_acks

    fill(store, ["a", "b"])
    c1 = consumer(store, durable_name="C1")
    c2 = consumer(store, durable_name="C2", filter_subject="a")
    drain(c1, 0)
    drain(c2, 0)
    acked = c1.ack(1, ACK, 0).acked + c1.ack(2, ACK, 0).acked
    assert removable_after_acks(acked, [c1, c2], store, Retention.INTEREST) == (2,)  # C2 still needs 1
    acked = c2.ack(1, ACK, 0).acked
    assert removable_after_acks(acked, [c1, c2], store, Retention.INTEREST) == (1,)
    assert removable_after_acks(acked, [c1, c2], store, Retention.WORKQUEUE) == (1,)
    assert removable_after_acks(acked, [c1, c2], store, Retention.LIMITS) == ()
